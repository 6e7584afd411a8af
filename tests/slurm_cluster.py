"""A real one-node Slurm cluster for the `slurm` tests (`pytest -m slurm`), brought up once per session by
scripts/slurm-up and taken down at the end (exactly the daemons it started).

A cluster that SLURM_CONF already names and that answers (`scripts/slurm-up` run before, as CI does) is used as it
is and left running. Where Slurm is missing and cannot be installed (not root, no apt-get: slurm-up exits 2) the
tests are skipped with slurm-up's one line; any other failure to start is an error."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SLURM_UP = ROOT / "scripts" / "slurm-up"
PARTITION = "debug"
# The node offers 4 CPUs whatever the machine has (slurm-up --cpus; Slurm takes the configured count): the test
# jobs are one thread each and mostly asleep, so a time-limit job can run beside a two-task DDP job.
CPUS = 4


def _node_state(conf: str) -> str:
    try:
        done = subprocess.run(
            ["sinfo", "-h", "-p", PARTITION, "-o", "%t"],
            env={**os.environ, "SLURM_CONF": conf},
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


@pytest.fixture(scope="session", name="slurm_cluster")
def slurm_cluster_fixture():
    """The SLURM_CONF (a path) of a running one-node cluster with the partition `debug`."""
    conf = os.environ.get("SLURM_CONF")
    if conf and _node_state(conf).startswith(("idle", "mix", "alloc")):
        yield conf
        return
    # its own folder, not pytest's (which another pytest session of this user may clean up while the daemons run)
    folder = Path(tempfile.mkdtemp(prefix="gapt-bench-slurm-"))
    up = subprocess.run(
        [str(SLURM_UP), "--dir", str(folder), "--cpus", str(CPUS), "--partition", PARTITION],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if up.returncode == 2:
        pytest.skip(up.stderr.strip().splitlines()[-1] if up.stderr.strip() else "Slurm cannot be installed here")
    if up.returncode != 0 or "SLURM_CONF=" not in up.stdout:
        subprocess.run([str(SLURM_UP), "down", "--dir", str(folder)], capture_output=True, timeout=120)
        pytest.fail(f"scripts/slurm-up failed (exit {up.returncode}):\n{up.stderr[-2000:]}", pytrace=False)
    conf = up.stdout.strip().splitlines()[-1].split("SLURM_CONF=", 1)[1]
    try:
        yield conf
    finally:
        down = subprocess.run(
            [str(SLURM_UP), "down", "--dir", str(folder)], capture_output=True, text=True, timeout=120
        )
        if down.returncode == 0:
            shutil.rmtree(folder, ignore_errors=True)
