"""The launcher where Slurm keeps no accounting (what tests/test_slurm.py found on a real one-node cluster): job
states from squeue when sacct does not answer, so `--wait` ends for a job that left no result and says so once
instead of warning on every poll; and the stop signal's delay (`--signal-delay-s`) for short time limits."""

from __future__ import annotations

from gapt_bench import cli
from gapt_bench.launch import cluster, options

TINY = ["--tasks", "synthetic_capacity", "--preset", "tiny"]


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
