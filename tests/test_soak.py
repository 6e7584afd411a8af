"""Soak: two sweeps of one plan at once into one folder, killed and resumed at random points, end with exactly one
record per run and the metrics of an uninterrupted sweep. The soaked sweeps and the uninterrupted one each have
their own cache (GAPT_BENCH_CACHE under tmp_path): a cached artefact built wrongly under kills (a text_memorization
reference, a token file) cannot be shared with the reference sweep, and nothing is written to ~/.cache."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gapt_bench.results.store import read_records


def _start(args: list[str], cache: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CI": "1", "GAPT_BENCH_CACHE": str(cache)}
    return subprocess.Popen(
        [sys.executable, "-m", "gapt_bench", "run", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _kill(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # the whole session: a SIGKILLed parent's workers would also get no say
    except ProcessLookupError:
        pass
    proc.wait()


def soak(plan: list[str], out: Path, cache: Path, rounds: int, seed: int, max_wait: float) -> None:
    """`rounds` times: start two `--resume` sweeps of `plan` (sharing `cache`), then SIGKILL or SIGTERM each at a
    random moment."""
    rng = random.Random(seed)
    args = [*plan, "--out", str(out), "--resume", "--checkpoint-every", "20", "--no-report"]
    for _ in range(rounds):
        procs = [_start(args, cache), _start(args, cache)]
        time.sleep(rng.uniform(0.5, max_wait))
        for p in procs:
            _kill(p, rng.choice([signal.SIGKILL, signal.SIGTERM]))
    final = [_start(args, cache), _start(args, cache)]
    for p in final:
        assert p.wait(timeout=3600) == 0, p.stderr.read()


def check_against_reference(plan: list[str], out: Path, ref: Path, ref_cache: Path) -> None:
    ref_proc = _start([*plan, "--out", str(ref), "--no-report"], ref_cache)
    assert ref_proc.wait(timeout=3600) == 0, ref_proc.stderr.read()
    lines = (out / "runs.jsonl").read_text().splitlines()
    got, want = read_records(out), read_records(ref)
    assert len(lines) == len(got) == len(want)  # one line per run: nothing trained twice

    def key(r):
        return (r["task"], r["method"], r["config_hash"], r["seed"])

    assert {key(r): r["metrics"] for r in got} == {key(r): r["metrics"] for r in want}


TINY = [
    "--tasks",
    "synthetic_capacity,fineweb_lm",
    "--preset",
    "tiny",
    "--methods",
    "baseline,gapt",
    "--seeds",
    "0-1",
    "--workers",
    "1",
    "--set",
    "train.tokens=131072",
]


@pytest.mark.slow
def test_soak_tiny_sweeps(tmp_path):
    soak(TINY, tmp_path / "soak", tmp_path / "soak_cache", rounds=3, seed=0, max_wait=4.0)
    check_against_reference(TINY, tmp_path / "soak", tmp_path / "ref", tmp_path / "ref_cache")


@pytest.mark.slow
def test_soak_quick_suite(tmp_path):
    """The README's quick suite (every task, baseline and gapt, 3 seeds), soaked: it runs the whole quick suite
    at least twice (the killed and resumed sweeps, then the uninterrupted reference), each with a cold cache."""
    plan = ["--workers", "1"]
    soak(plan, tmp_path / "soak", tmp_path / "soak_cache", rounds=4, seed=1, max_wait=120.0)
    check_against_reference(plan, tmp_path / "soak", tmp_path / "ref", tmp_path / "ref_cache")
