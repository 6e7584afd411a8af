"""The launcher where Slurm keeps no accounting (what tests/test_slurm.py found on a real one-node cluster): job
states from squeue when sacct does not answer, so `--wait` ends for a job that left no result and says so once
instead of warning on every poll; and the stop signal's delay (`--signal-delay-s`) for short time limits."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from submitit.slurm.slurm import SlurmJob

from gapt_bench import cli
from gapt_bench.launch import cluster, options, queue

TINY = ["--tasks", "synthetic_capacity", "--preset", "tiny"]

FAKE_SACCT = """#!/bin/bash
echo "Slurm accounting storage is disabled" >&2; exit 1
"""


@pytest.fixture
def no_accounting(fake_slurm) -> Path:
    """fake_slurm plus an sacct that fails as it does on a cluster without accounting."""
    sacct = fake_slurm / "bin" / "sacct"
    sacct.write_text(FAKE_SACCT)
    sacct.chmod(0o755)
    return fake_slurm


def test_without_accounting_job_states_come_from_squeue_said_once(no_accounting, tmp_path, caplog):
    folder = tmp_path / "submitit"
    folder.mkdir()
    (no_accounting / "queue").write_text("4101_0 RUNNING\n4101_1 PENDING\n")
    jobs = [SlurmJob(folder, "4101_0"), SlurmJob(folder, "4101_1")]
    said: list[str] = []
    queue._use_squeue_states(jobs, 0.05, said.append)
    assert said == ["job states come from squeue (Slurm accounting storage is disabled)"]
    with caplog.at_level(logging.WARNING):
        assert not jobs[0].done(force_check=True) and not jobs[1].done(force_check=True)
        # 4101_0 left the queue without a result (cancelled, killed); 4101_1 requeued: both squeue states
        (no_accounting / "queue").write_text("4101_1 REQUEUED\n")
        time.sleep(0.01)  # submitit ignores a forced look within 1 ms of the last one
        assert jobs[0].done(force_check=True) and not jobs[1].done(force_check=True)
        (no_accounting / "queue").write_text("4101_1 CANCELLED\n")
        time.sleep(0.01)
        assert jobs[1].done(force_check=True)
    assert not [r for r in caplog.records if "sacct" in r.getMessage()]  # no warning per poll
    outcome = cluster.job_outcome(jobs[0], cluster.SubmittedJob(None, "4101_0", folder / "o", folder / "e", 1))
    assert outcome.error and "job 4101_0" in outcome.message and "ended without a result" in outcome.message


def test_with_accounting_submitit_keeps_its_sacct_watcher(fake_slurm, tmp_path):
    sacct = fake_slurm / "bin" / "sacct"
    sacct.write_text("#!/bin/bash\nexit 0\n")
    sacct.chmod(0o755)
    job = SlurmJob(tmp_path, "4101_0")
    said: list[str] = []
    queue._use_squeue_states([job], 1.0, said.append)
    assert said == [] and job.watcher is SlurmJob.watcher


def test_the_follow_up_hint_needs_no_accounting(tmp_path):
    """After a submission without --wait: squeue, the log and `gapt-bench status`, not sacct (which says nothing
    on a cluster without accounting)."""
    job = cluster.SubmittedJob(
        SimpleNamespace(task="t", method="m", seed=0), "4101_0", tmp_path / "o", tmp_path / "e", 1
    )
    sub = cluster.Submission("submitit", "slurm", tmp_path, tmp_path, jobs=[job], array_ids=["4101"])
    text = "\n".join(sub.describe("gapt-bench status OUT --tasks t"))
    assert "follow: squeue -j 4101" in text and "progress: gapt-bench status OUT" in text
    assert "sacct" not in text


def _sbatch_flags(text: str) -> dict:
    lines = [ln.strip()[len("#SBATCH --") :] for ln in text.splitlines() if ln.strip().startswith("#SBATCH --")]
    return dict(ln.split("=", 1) for ln in lines if "=" in ln)


def test_signal_delay_reaches_sbatch_and_must_fit_the_time_limit(tmp_path, capsys):
    base = [
        "run",
        *TINY,
        "--methods",
        "baseline",
        "--seeds",
        "0",
        "--out",
        str(tmp_path / "o"),
        "--launcher",
        "submitit",
        "--dry-run",
    ]
    assert cli.main([*base, "--timeout-min", "2", "--signal-delay-s", "30"]) == 0
    flags = _sbatch_flags(capsys.readouterr().out)
    assert flags["signal"] == "USR2@30" and flags["time"] == "2"
    # submitit's default (90 s) leaves a one-minute job no time; a delay past the limit is refused too
    for extra, message in (
        (["--timeout-min", "1"], "default stop signal delay (90 s)"),
        (["--timeout-min", "1", "--signal-delay-s", "60"], "--signal-delay-s 60"),
    ):
        assert cli.main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err and "shorter --signal-delay-s" in err, err
    _, opts = options.resolve_launcher("submitit", None, {"signal_delay_s": 45})
    assert opts.signal_delay_s == 45 and cluster.slurm_parameters(opts)["slurm_signal_delay_s"] == 45
    assert not (tmp_path / "o").exists()


def test_the_default_delay_check_is_slurms_only():
    """submitit's local executor signals 30 s before its timeout: a one-minute local job is fine."""
    _, opts = options.resolve_launcher("submitit-local", None, {"timeout_min": 1})
    assert opts.timeout_min == 1 and opts.signal_delay_s is None
