import os

# Tests run on CPU with one thread and no network, whatever the machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

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
