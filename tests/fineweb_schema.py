"""Rows in FineWeb's parquet schema, for tests of the local-file loading path."""
import hashlib

import pyarrow as pa


def fineweb_table(texts: list[str]) -> pa.Table:
    """text, id, dump, url, date, file_path, language, language_score, token_count: as FineWeb's shards."""
    n = len(texts)
    return pa.table({
        "text": texts,
        "id": [f"<urn:uuid:{hashlib.md5(t.encode()).hexdigest()}>" for t in texts],
        "dump": ["CC-MAIN-2024-10"] * n,
        "url": [f"https://example.org/page/{i}" for i in range(n)],
        "date": ["2024-02-21T00:00:00Z"] * n,
        "file_path": ["s3://commoncrawl/crawl-data/CC-MAIN-2024-10/segments/x.warc.gz"] * n,
        "language": ["en"] * n,
        "language_score": pa.array([0.95] * n, pa.float64()),
        "token_count": pa.array([len(t) // 4 for t in texts], pa.int64()),
    })
