"""Command-line behaviour around partial work: a half-submitted sweep, tracking that cannot happen, exports and
sites that fail midway, outputs checked before anything is printed, results folders passed twice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gapt_bench import cli

TINY = ["--tasks", "synthetic_capacity", "--preset", "tiny"]
QUIET = ["--no-report", "--no-progress"]


def _our_lines(err: str) -> list[str]:
    """gapt-bench's own stderr lines (submitit passes sbatch's stderr through, as it does on a real cluster)."""
    return [ln for ln in err.splitlines() if not ln.startswith("sbatch: ")]


def test_a_refused_second_array_names_the_queued_one_and_exits_1(fake_slurm, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("REFUSE_FROM", "4102")  # wave 1 (4101) is queued, the matched controls' array is refused
    out = tmp_path / "r"
    plan = [*TINY, "--methods", "gapt,periodic", "--seeds", "0-1"]
    assert cli.main(["run", *plan, "--out", str(out), "--launcher", "submitit", *QUIET]) == 1
    err = _our_lines(capsys.readouterr().err)
    assert len(err) == 1 and "Invalid qos specification" in err[0], err
    err = err[0]
    assert "job array(s) 4101 already queued" in err and "bad input" not in err
    assert f"`gapt-bench status {out} --tasks synthetic_capacity --methods gapt,periodic --seeds 0-1" in err
    assert (out / "submitit" / "jobs.jsonl").read_text().count("\n") == 2  # wave 1's two jobs are on record


def test_a_refused_first_array_is_still_bad_input(fake_slurm, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("REFUSE_FROM", "4101")
    out = tmp_path / "r"
    assert (
        cli.main(
            ["run", *TINY, "--methods", "gapt", "--seeds", "0", "--out", str(out), "--launcher", "submitit", *QUIET]
        )
        == 2
    )
    err = _our_lines(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith("gapt-bench: error: sbatch refused the array: "), err


def test_track_on_slurm_without_wait_is_refused_before_submitting(fake_slurm, tmp_path, capsys):
    pytest.importorskip("tensorboard")
    out = tmp_path / "r"
    argv = [
        "run",
        *TINY,
        "--methods",
        "gapt",
        "--seeds",
        "0",
        "--out",
        str(out),
        "--launcher",
        "submitit",
        "--track",
        f"tensorboard:{tmp_path / 'tb'}",
        *QUIET,
    ]
    assert cli.main(argv) == 2
    err = _our_lines(capsys.readouterr().err)
    assert len(err) == 1 and "add --wait" in err[0] and f"gapt-bench export {out} --tensorboard" in err[0], err
    assert not out.exists() and not (fake_slurm / "count").exists()  # nothing written, nothing submitted


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    from test_site import make_results

    return make_results(tmp_path_factory.mktemp("cli_fixes") / "results")


def test_report_checks_the_plots_folder_before_printing(results, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert cli.main(["report", str(results), "--format", "md", "--plots", str(blocker / "plots")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "cannot write" in captured.err and captured.err.count("\n") == 1


def test_a_results_folder_given_twice_counts_each_run_once(results, capsys):
    assert cli.main(["leaderboard", str(results), "--format", "json"]) == 0
    once = json.loads(capsys.readouterr().out)
    assert cli.main(["leaderboard", str(results), str(results / "runs.jsonl"), "--format", "json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == once  # same n, same statistics
    n = len((results / "runs.jsonl").read_text().splitlines())
    assert (
        captured.err == f"gapt-bench: {n} duplicate record(s) dropped (a run_id in more than one of the "
        "results given); each run counts once\n"
    )
