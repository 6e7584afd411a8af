import os

# Tests run on CPU with one thread and no network, whatever the machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def tiny_capacity_args():
    """CLI overrides that make a synthetic_capacity run take about a second."""
    return ["--tasks", "synthetic_capacity", "--preset", "tiny"]


@pytest.fixture
def offline_env(tmp_path, monkeypatch):
    """No hub, and private dataset/token caches per test (so cache reuse and misses are observable)."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_datasets"))
    monkeypatch.setenv("GAPT_BENCH_CACHE", str(tmp_path / "gapt_cache"))


@pytest.fixture
def no_hub_streaming(monkeypatch):
    """Fail the test if anything reaches `datasets.load_dataset` (where a hub source would spend ~23 s retrying):
    "fails fast" checked by behaviour, not by a wall clock."""
    import datasets

    def refuse(*args, **kwargs):
        raise AssertionError(f"datasets.load_dataset called: {args!r}")

    monkeypatch.setattr(datasets, "load_dataset", refuse)


@pytest.fixture(autouse=True)
def isolated_registries():
    """Plug-ins a test includes or registers in this process are forgotten after it."""
    from gapt_bench.launch import plugins

    plugins.discover()
    saved = {name: (dict(reg._entries), list(reg.errors)) for name, reg in plugins.REGISTRIES.items()}
    includes = list(plugins._INCLUDED)
    yield
    for name, reg in plugins.REGISTRIES.items():
        reg._entries, reg.errors = dict(saved[name][0]), list(saved[name][1])
    plugins._INCLUDED[:] = includes


FINEWEB_DOCS = 160  # about 0.5 MB of offline-corpus chapters


def fineweb_table(texts: list[str]) -> pa.Table:
    """text, id, dump, url, date, file_path, language, language_score, token_count: as FineWeb's shards."""
    n = len(texts)
    return pa.table(
        {
            "text": texts,
            "id": [f"<urn:uuid:{hashlib.md5(t.encode()).hexdigest()}>" for t in texts],
            "dump": ["CC-MAIN-2024-10"] * n,
            "url": [f"https://example.org/page/{i}" for i in range(n)],
            "date": ["2024-02-21T00:00:00Z"] * n,
            "file_path": ["s3://commoncrawl/crawl-data/CC-MAIN-2024-10/segments/x.warc.gz"] * n,
            "language": ["en"] * n,
            "language_score": pa.array([0.95] * n, pa.float64()),
            "token_count": pa.array([len(t) // 4 for t in texts], pa.int64()),
        }
    )


@pytest.fixture(scope="session")
def fineweb_texts() -> list[str]:
    from gapt_bench.data import load_texts

    return [d.text for d in load_texts("offline", limit=FINEWEB_DOCS)]


@pytest.fixture(scope="session")
def fineweb_parquet(tmp_path_factory, fineweb_texts) -> Path:
    """The one local-FineWeb fixture: a parquet file in FineWeb's schema, its text from the bundled corpus."""
    path = tmp_path_factory.mktemp("fineweb") / "000_00000.parquet"
    pq.write_table(fineweb_table(fineweb_texts), path)
    return path


# A stand-in sbatch: numbers its jobs from 4101, keeps each job script, and refuses every array from the
# `REFUSE_FROM`-th job id on (unset: none).
FAKE_SBATCH = """#!/bin/bash
n=$(cat "$FAKE_SLURM/count" 2>/dev/null || echo 4100); n=$((n+1)); echo $n > "$FAKE_SLURM/count"
if [ "$n" -ge "${REFUSE_FROM:-99999}" ]; then
  echo "sbatch: error: Batch job submission failed: Invalid qos specification" >&2; exit 1
fi
cp "$1" "$FAKE_SLURM/sbatch_$n.sh"
echo "Submitted batch job $n"
"""


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch) -> Path:
    """sbatch, srun and squeue on the PATH (so submitit picks Slurm); returns the folder the stand-in counts jobs and
    keeps their scripts in (tmp_path), where a file `queue` is what squeue prints (none: an empty queue)."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sbatch").write_text(FAKE_SBATCH)
    (fake / "srun").write_text("#!/bin/bash\nexit 1\n")
    (fake / "squeue").write_text('#!/bin/bash\ncat "$FAKE_SLURM/queue" 2>/dev/null\n')  # the queue: lines "id STATE"
    for f in fake.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM", str(tmp_path))
    return tmp_path
