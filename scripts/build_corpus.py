#!/usr/bin/env python
"""Build the embedded offline English corpus ``gapt_bench/data/offline_corpus.parquet``.

The corpus is a small, public-domain stand-in for FineWeb that ships with the package, so the
``fineweb_lm`` task runs on machines that cannot reach the Hugging Face hub.

Sources (Debian packages, both public domain):

* ``bible-kjv``: the King James Bible, read through the ``bible`` command; one document per chapter.
* ``jargon-text``: the Jargon File 4.4.7, ``/usr/share/doc/jargon-text/jargon.txt.gz``; prose paragraphs are
  unwrapped (verse and code keep their line breaks) and packed greedily into documents of about 2 KB; tables of
  contents, the glossary index and box-drawn tables are dropped.

FOLDOC (GFDL) and the fortune files (quotations of mixed origin) are left out on purpose.

The documents are ordered by the SHA-256 of their ``id`` (a fixed, source-mixing order, like a crawl), and
written as a zstd parquet file with the columns ``text`` (FineWeb's text column), ``id`` and ``source``.

Usage (as root, or with the two packages already installed)::

    apt-get update && apt-get install -y bible-kjv jargon-text
    python scripts/build_corpus.py            # writes the parquet and offline_corpus.md
    python scripts/build_corpus.py --check    # rebuilds in memory and compares with the shipped file
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
OUT_DIR = REPO / "gapt_bench" / "data"
PARQUET = OUT_DIR / "offline_corpus.parquet"
CARD = OUT_DIR / "offline_corpus.md"

JARGON_GZ = Path("/usr/share/doc/jargon-text/jargon.txt.gz")
BIBLE_RANGE = "gen1:1-rev22:21"
KJV_CHAPTERS = 1189  # chapters in the 66 books of the Protestant canon
JARGON_DOC_BYTES = 2000
ZSTD_LEVEL = 19
ROW_GROUP_SIZE = 1024

BOX_DRAWING = re.compile("[\u2500-\u257f]")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------------- Bible
def read_bible_raw() -> str:
    exe = shutil.which("bible")
    if exe is None:
        sys.exit("the `bible` command is missing: apt-get install -y bible-kjv")
    # The whole canon in one range; a minimal environment keeps the output independent of the caller.
    out = subprocess.run([exe, BIBLE_RANGE], check=True, capture_output=True, env={"PATH": "/usr/bin:/bin"})
    return out.stdout.decode("utf-8")


def bible_documents(raw: str) -> list[dict]:
    """Split the ``bible`` output into chapters; unwrap each verse onto one line.

    The output is ``<blank>\\n<Book N>\\n<blank>\\n  1 verse text...`` with verses wrapped at 80 columns and
    continuation lines starting at column 0. A chapter header is a line with blank lines on both sides.
    """
    lines = raw.split("\n")
    docs: list[dict] = []
    title = None
    verses: list[str] = []

    def flush():
        if title is not None:
            book, chap = title.rsplit(" ", 1)
            body = "\n".join(verses)
            docs.append(
                {"id": f"kjv/{book.replace(' ', '_')}/{int(chap)}", "source": "bible-kjv", "text": f"{title}\n\n{body}"}
            )

    for i, line in enumerate(lines):
        if not line.strip():
            continue
        prev_blank = i == 0 or not lines[i - 1].strip()
        next_blank = i + 1 >= len(lines) or not lines[i + 1].strip()
        if prev_blank and next_blank and re.fullmatch(r"\S.* \d+", line):
            flush()
            title, verses = line.strip(), []
            continue
        m = re.match(r"^\s+(\d+) (.*)$", line)
        if m:  # a new verse
            verses.append(f"{m.group(1)} {m.group(2).strip()}")
        else:  # continuation of the previous verse
            if not verses:
                raise SystemExit(f"unexpected line before the first verse: {line!r}")
            verses[-1] += " " + line.strip()
    flush()
    if len(docs) != KJV_CHAPTERS:
        raise SystemExit(f"expected {KJV_CHAPTERS} Bible chapters, parsed {len(docs)}")
    return docs


# -------------------------------------------------------------------------------------------- Jargon
def read_jargon_raw() -> bytes:
    if not JARGON_GZ.exists():
        sys.exit(f"{JARGON_GZ} is missing: apt-get install -y jargon-text")
    return JARGON_GZ.read_bytes()


def jargon_paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs, dedented and unwrapped, with navigation material dropped."""
    blocks = [b for b in re.split(r"\n\s*\n", text) if b.strip()]
    paras: list[tuple[str, int]] = []  # (paragraph text, number of source lines)
    for block in blocks:
        raw_lines = [ln.rstrip() for ln in block.split("\n") if ln.strip()]
        lines = [ln.strip() for ln in raw_lines]
        if BOX_DRAWING.search(block):  # the glyph test table and other box-drawn tables
            continue
        if len(lines) >= 40 and sum(map(len, lines)) / len(lines) < 35:  # the glossary index without blank lines
            continue
        if lines == ["Table of Contents"]:
            continue
        # Verse, code and ASCII art are preformatted: the text file marks them with no-break spaces or with
        # indentation beyond the 3-space margin. Keep their line breaks; unwrap ordinary prose.
        preformatted = "\xa0" in block or any(not ln.startswith("   ") or ln.startswith("    ") for ln in raw_lines[1:])
        if preformatted:
            margin = min(len(ln) - len(ln.lstrip(" ")) for ln in raw_lines)
            para = "\n".join(ln[margin:].replace("\xa0", " ").rstrip() for ln in raw_lines)
        else:
            para = " ".join(lines).replace("\xa0", " ")
        paras.append((para, len(lines)))

    # Tables of contents and the glossary index are runs of short one-line paragraphs ("cruft", "crumb", ...).
    # A lexicon headword (":cruft: n.") is a one-line paragraph too, but it is followed by its definition.
    def short(p: tuple[str, int]) -> bool:
        return p[1] == 1 and len(p[0]) < 60 and not p[0].startswith(":")

    keep = [True] * len(paras)
    i = 0
    while i < len(paras):
        j = i
        while j < len(paras) and short(paras[j]):
            j += 1
        if j - i >= 3:
            for k in range(i, j):
                keep[k] = False
        i = max(j, i + 1)
    return [p for (p, _), k in zip(paras, keep) if k]


def jargon_documents(raw_gz: bytes) -> list[dict]:
    text = gzip.decompress(raw_gz).decode("utf-8")
    docs: list[dict] = []
    cur: list[str] = []
    size = 0
    for para in jargon_paragraphs(text):
        cur.append(para)
        size += len(para.encode("utf-8")) + 2
        if size >= JARGON_DOC_BYTES:
            docs.append("\n\n".join(cur))
            cur, size = [], 0
    if cur:
        docs.append("\n\n".join(cur))
    return [{"id": f"jargon/{i:04d}", "source": "jargon-text", "text": d} for i, d in enumerate(docs)]


# --------------------------------------------------------------------------------------------- build
def build_table() -> tuple[pa.Table, dict]:
    bible_raw = read_bible_raw()
    jargon_raw = read_jargon_raw()
    docs = bible_documents(bible_raw) + jargon_documents(jargon_raw)
    ids = [d["id"] for d in docs]
    if len(set(ids)) != len(ids):
        raise SystemExit("duplicate document ids")
    docs.sort(key=lambda d: _sha256(d["id"].encode()))
    table = pa.table(
        {
            "text": pa.array([d["text"] for d in docs], pa.large_string()),
            "id": pa.array([d["id"] for d in docs], pa.string()),
            "source": pa.array([d["source"] for d in docs], pa.string()),
        }
    )
    facts = {
        "bible_raw_sha256": _sha256(bible_raw.encode("utf-8")),
        "jargon_gz_sha256": _sha256(jargon_raw),
        "per_source": {},
    }
    for src in ("bible-kjv", "jargon-text"):
        texts = [d["text"] for d in docs if d["source"] == src]
        facts["per_source"][src] = (len(texts), sum(len(t.encode("utf-8")) for t in texts))
    return table, facts


def to_parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(
        table,
        buf,
        compression="zstd",
        compression_level=ZSTD_LEVEL,
        row_group_size=ROW_GROUP_SIZE,
        use_dictionary=["source"],
        write_statistics=False,
        store_schema=False,
    )
    return buf.getvalue()


def package_version(name: str) -> str:
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", name], check=True, capture_output=True)
        return out.stdout.decode().strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_card(data: bytes, facts: dict) -> None:
    n_docs = sum(n for n, _ in facts["per_source"].values())
    n_bytes = sum(b for _, b in facts["per_source"].values())
    rows = "\n".join(f"| `{src}` | {n:,} | {b:,} |" for src, (n, b) in facts["per_source"].items())
    card = f"""# offline_corpus.parquet

A small public-domain English corpus that ships inside `gapt_bench` as an offline stand-in for FineWeb
(the `fineweb_lm` task's `data.source=offline`). Built by `scripts/build_corpus.py`; do not edit by hand.

## Sources and licences

| source | Debian package (version) | licence | document unit |
|---|---|---|---|
| King James Bible (1611) | `bible-kjv` ({package_version("bible-kjv")}), text from `bible '{BIBLE_RANGE}'` | public domain (the package's copyright file: the translation's copyright has expired) | one chapter, verses unwrapped one per line |
| The Jargon File 4.4.7 | `jargon-text` ({package_version("jargon-text")}), `{JARGON_GZ}` | public domain (dedicated by its editor, Eric S. Raymond; see the package's copyright file) | about {JARGON_DOC_BYTES} bytes of paragraphs (prose unwrapped, verse and code kept as lines); tables of contents, the glossary index and box-drawn tables dropped |

Left out on purpose: FOLDOC (GFDL) and fortune files (quotations of mixed origin).

## Facts

| source | documents | UTF-8 bytes of text |
|---|---|---|
{rows}
| **total** | **{n_docs:,}** | **{n_bytes:,}** |

- File: `offline_corpus.parquet`, {len(data):,} bytes ({len(data) / 2**20:.2f} MiB), zstd level {ZSTD_LEVEL}.
- SHA-256: `{_sha256(data)}`
- Columns: `text` (FineWeb's text column), `id` (`kjv/<Book>/<chapter>` or `jargon/<nnnn>`), `source`.
- Row order: sorted by SHA-256 of `id`, which mixes the two sources like a crawl.
- Inputs: SHA-256 of the `bible` output `{facts["bible_raw_sha256"]}`; of `jargon.txt.gz`
  `{facts["jargon_gz_sha256"]}`. Built with pyarrow {pa.__version__} (the parquet bytes can differ with
  another pyarrow version; the text does not).

## Rebuild

```
apt-get update && apt-get install -y bible-kjv jargon-text
python scripts/build_corpus.py          # writes gapt_bench/data/offline_corpus.parquet and this file
python scripts/build_corpus.py --check  # rebuilds in memory and compares with the shipped file
```
"""
    CARD.write_text(card, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="compare a fresh build with the shipped file")
    args = ap.parse_args(argv)

    table, facts = build_table()
    data = to_parquet_bytes(table)
    if args.check:
        if not PARQUET.exists():
            print(f"{PARQUET} does not exist")
            return 1
        shipped = pq.read_table(PARQUET)
        same_text = shipped.column("text").to_pylist() == table.column("text").to_pylist()
        same_bytes = PARQUET.read_bytes() == data
        print(f"text identical: {same_text}; bytes identical: {same_bytes}")
        return 0 if same_text else 1
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    tmp = PARQUET.with_suffix(".parquet.tmp")
    tmp.write_bytes(data)
    tmp.replace(PARQUET)
    write_card(data, facts)
    n_docs = table.num_rows
    n_bytes = sum(b for _, b in facts["per_source"].values())
    print(f"wrote {PARQUET} ({len(data):,} bytes, {n_docs:,} documents, {n_bytes:,} bytes of text)")
    print(f"sha256 {_sha256(data)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
