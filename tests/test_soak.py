"""Soak: two sweeps of one plan at once into one folder, killed and resumed at random points, end with exactly one
record per run and the metrics of an uninterrupted sweep."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gapt_bench.store import read_records


def _start(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CI": "1"}
    return subprocess.Popen([sys.executable, "-m", "gapt_bench", "run", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _kill(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # the whole session: a SIGKILLed parent's workers would also get no say
    except ProcessLookupError:
        pass
    proc.wait()


def soak(plan: list[str], out: Path, rounds: int, seed: int, max_wait: float) -> None:
    """`rounds` times: start two `--resume` sweeps of `plan`, then SIGKILL or SIGTERM each at a random moment."""
    rng = random.Random(seed)
    args = [*plan, "--out", str(out), "--resume", "--checkpoint-every", "20", "--no-report"]
    for _ in range(rounds):
        procs = [_start(args), _start(args)]
        time.sleep(rng.uniform(0.5, max_wait))
        for p in procs:
            _kill(p, rng.choice([signal.SIGKILL, signal.SIGTERM]))
    final = [_start(args), _start(args)]
    for p in final:
        assert p.wait(timeout=3600) == 0, p.stderr.read()


def check_against_reference(plan: list[str], out: Path, ref: Path) -> None:
    ref_proc = _start([*plan, "--out", str(ref), "--no-report"])
    assert ref_proc.wait(timeout=3600) == 0, ref_proc.stderr.read()
    lines = (out / "runs.jsonl").read_text().splitlines()
    got, want = read_records(out), read_records(ref)
    assert len(lines) == len(got) == len(want)  # one line per run: nothing trained twice
    key = lambda r: (r["task"], r["method"], r["config_hash"], r["seed"])  # noqa: E731
    assert {key(r): r["metrics"] for r in got} == {key(r): r["metrics"] for r in want}


TINY = ["--tasks", "synthetic_capacity,fineweb_lm", "--preset", "tiny", "--methods", "baseline,gapt",
        "--seeds", "0-1", "--workers", "1", "--set", "train.tokens=131072"]


@pytest.mark.slow
def test_soak_tiny_sweeps(tmp_path):
    soak(TINY, tmp_path / "soak", rounds=3, seed=0, max_wait=4.0)
    check_against_reference(TINY, tmp_path / "soak", tmp_path / "ref")


@pytest.mark.slow
def test_soak_quick_suite(tmp_path):
    """The README's quick suite (every task, baseline and gapt, 3 seeds), soaked; about half an hour on 2 cores."""
    plan = ["--workers", "1"]
    soak(plan, tmp_path / "soak", rounds=4, seed=1, max_wait=120.0)
    check_against_reference(plan, tmp_path / "soak", tmp_path / "ref")
