"""The committed reference results (baselines/cpu-quick.jsonl) and the regression check on them."""

import copy
import json
from pathlib import Path

import pytest

from gapt_bench import cli
from gapt_bench.results.store import read_records

BASELINE = Path(__file__).resolve().parent.parent / "baselines" / "cpu-quick.jsonl"


def test_the_committed_baseline_exists():
    """The gate's reference ships with the repository: its absence is a failure, not a skip."""
    assert BASELINE.is_file(), f"{BASELINE} is missing: regenerate it (README: Regenerate the committed results)"


def write(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_baseline_covers_every_task_with_several_seeds():
    recs = read_records(BASELINE)
    tasks = {r["task"] for r in recs}
    assert {"arithmetic_ood", "forgetting_separation", "synthetic_capacity", "fineweb_lm", "text_memorization"} <= tasks
    for task in tasks:
        for method in ("baseline", "gapt"):
            seeds = {r["seed"] for r in recs if r["task"] == task and r["method"] == method}
            assert len(seeds) >= 3, (task, method)


def test_regression_check_passes_the_baseline_against_itself():
    assert cli.main(["regression", "--baseline", str(BASELINE), "--candidate", str(BASELINE), "--format", "json"]) == 0


def test_gate_exits_1_on_a_constructed_regression(tmp_path):
    recs = read_records(BASELINE)
    worse = copy.deepcopy(recs)
    for r in worse:
        if r["task"] == "forgetting_separation" and r["method"] == "gapt":
            r["metrics"]["separation"] *= 0.5  # higher is better: halve it in every seed
    cand = write(tmp_path / "cand.jsonl", worse)
    assert cli.main(["regression", "--baseline", str(BASELINE), "--candidate", str(cand), "--format", "json"]) == 1


def test_gate_exits_2_on_incompatible_task_version(tmp_path):
    recs = copy.deepcopy(read_records(BASELINE))
    for r in recs:
        r["task_version"] = r["task_version"] + "-changed"
    cand = write(tmp_path / "cand.jsonl", recs)
    assert cli.main(["regression", "--baseline", str(BASELINE), "--candidate", str(cand), "--format", "json"]) == 2


@pytest.mark.slow
def test_fresh_forgetting_runs_pass_the_gate(tmp_path):
    """Re-run the cheapest task of the quick suite now and gate it against the committed reference."""
    out = tmp_path / "fresh"
    assert (
        cli.main(
            [
                "run",
                "--tasks",
                "forgetting_separation",
                "--methods",
                "baseline,gapt",
                "--seeds",
                "0-2",
                "--preset",
                "quick",
                "--workers",
                "1",
                "--no-report",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    ref = write(tmp_path / "ref.jsonl", [r for r in read_records(BASELINE) if r["task"] == "forgetting_separation"])
    assert cli.main(["regression", "--baseline", str(ref), "--candidate", str(out), "--format", "json"]) == 0
