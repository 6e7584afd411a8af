"""The verdict tier (`--preset cpu-verdict`, committed as baselines/cpu-verdict.jsonl): its plan resolves for every
task with the methods and seeds the preset names, and one seed of each task runs at reduced steps. The tier itself
is a committed artefact, not a CI job (hours of CPU)."""

from __future__ import annotations

import pytest

from gapt_bench.cli import main
from gapt_bench.launch.plan import make_plan
from gapt_bench.results.store import read_records

# (methods, seeds, grid points) the tier promises per task: what docs and the task READMEs state
TIER = {
    "arithmetic_ood": ({"baseline", "gapt", "mbe", "periodic"}, 10, 1),
    "fineweb_lm": ({"baseline", "gapt", "mbe", "periodic"}, 10, 1),
    "forgetting_separation": ({"baseline", "gapt", "mbe", "periodic"}, 10, 2),
    "synthetic_capacity": ({"baseline"}, 5, 6),
    "text_memorization": ({"baseline"}, 5, 8),
}
# Overrides that shrink one run of each task to seconds (grid axes pinned, so the grid collapses to one point).
REDUCED = {
    "arithmetic_ood": [
        "train.tokens=8192",
        "train.warmup_steps=2",
        "data.n_train=2000",
        "data.n_id=64",
        "data.n_ood=64",
    ],
    "fineweb_lm": ["train.tokens=8192", "train.warmup_steps=2", "data.val_tokens=4096"],
    "forgetting_separation": ["data.steps_first=20", "data.steps_second=20", "data.batch_layout=grouped"],
    "synthetic_capacity": [
        "data.capacity_ratio=1.25",
        "train.precision=fp32",
        "train.tokens=20480",
        "train.warmup_steps=2",
        "train.eval_every=0",
    ],
    "text_memorization": [
        "data.capacity_ratio=1",
        "train.tokens=40960",
        "train.warmup_steps=2",
        "data.ref_tokens=16384",
    ],
}


@pytest.mark.parametrize("task", sorted(TIER))
def test_the_tier_plan_resolves_with_its_methods_seeds_and_grid(task):
    methods, seeds, points = TIER[task]
    plan = make_plan([task], None, None, "cpu-verdict")
    assert {c.method for c in plan} == methods
    assert len({c.seed for c in plan}) == seeds and len(plan) == len(methods) * seeds * points
    assert all(c.preset == "cpu-verdict" for c in plan)


@pytest.mark.parametrize("task", sorted(TIER))
def test_one_seed_of_the_tier_runs_at_reduced_steps(task, tmp_path, offline_env):
    argv = ["run", "--tasks", task, "--preset", "cpu-verdict", "--methods", "baseline", "--seeds", "0"]
    argv += [x for o in REDUCED[task] for x in ("--set", o)]
    assert main([*argv, "--out", str(tmp_path / "out"), "--quiet", "--no-report"]) == 0
    (rec,) = read_records(tmp_path / "out")
    assert rec["status"] == "ok" and rec["preset"] == "cpu-verdict"
    if task == "arithmetic_ood":
        assert rec["config"]["model"]["family"] == "llama"  # the tier's rotary family
