"""forgetting_separation: metrics, batch layout, determinism and the full protocol through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gapt_bench.config import ConfigError
from gapt_bench.launch.plan import make_plan
from gapt_bench.tasks.forgetting_separation.task import (
    GROUP_A,
    GROUP_B,
    ForgettingSeparation,
    build_batch,
    make_problem,
    separation,
    specialization,
)

FAST = ["data.steps_first=60", "data.steps_second=60", "gapt.patience_m=5", "gapt.patience_c=5", "gapt.smoothing=0.0"]
METRICS = {
    "separation",
    "separation_pre",
    "l1_a",
    "l1_b",
    "l1_a_pre",
    "l1_b_pre",
    "forgetting",
    "alleviation_pct",
    "specialization",
    "mbe",
    "mbe_centered",
    "mbe_mixed",
}


def test_separation_is_zero_for_identical_groups_and_grows_apart():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(64, 20, generator=g)
    assert separation(h, h) == 0.0
    assert separation(h, h.clone()) == 0.0
    values = [separation(h, h + shift) for shift in (0.1, 0.5, 1.0, 3.0)]
    assert values == sorted(values) and values[0] > 0
    # the ratio is in units of the within-group spread: scaling everything leaves it unchanged
    assert separation(2 * h, 2 * (h + 1.0)) == pytest.approx(separation(h, h + 1.0))
    # two tight clusters far apart: huge; the value matches the formula
    a, b = torch.zeros(8, 3), torch.ones(8, 3)
    a[0, 0], b[0, 0] = 0.1, 1.1
    within = 0.5 * 2 * float(((a - a.mean(0)) ** 2).sum(1).mean())
    assert separation(a, b) == pytest.approx(float((a.mean(0) - b.mean(0)).norm()) / within**0.5)


def test_specialization_counts_selective_units():
    ha = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    hb = torch.tensor([[0.0, 1.0, 1.0, 0.0], [0.0, 1.0, 1.0, 0.0]])
    # unit 0 only A, unit 2 only B (selectivity 1), unit 1 shared (0), unit 3 silent (0)
    assert specialization(ha, hb) == 0.5


def test_batch_layout_decides_patch_composition():
    patch = 8
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    _, lab = build_batch((GROUP_A, GROUP_B), 32, "grouped", 500, g1)
    assert lab.tolist() == [GROUP_A] * 16 + [GROUP_B] * 16
    pure = [len(set(p.tolist())) == 1 for p in lab.reshape(-1, patch)]
    assert all(pure)
    mixed_patches = 0
    for _ in range(20):
        _, lab = build_batch((GROUP_A, GROUP_B), 32, "shuffled", 500, g2)
        assert (lab == GROUP_A).sum() == 16  # still half of each group
        mixed_patches += sum(len(set(p.tolist())) == 2 for p in lab.reshape(-1, patch))
    assert mixed_patches > 40  # most shuffled patches hold both groups
    idx, lab = build_batch((GROUP_A,), 32, "grouped", 500, torch.Generator().manual_seed(0))
    assert (lab == GROUP_A).all() and len(set(idx.tolist())) == 32  # no repeats within a batch


def test_problem_is_mirrored_and_deterministic():
    cfg = make_plan(["forgetting_separation"], ["baseline"], [0], "quick", [])[0]
    p1, p2 = make_problem(cfg.data, 5), make_problem(cfg.data, 5)
    assert torch.equal(p1.x[0], p2.x[0]) and torch.equal(p1.y_val[1], p2.y_val[1])
    xa, xb = p1.x
    assert xa[:, :5].mean() == pytest.approx(1.0, abs=0.05) and xa[:, 5:].mean() == pytest.approx(0.0, abs=0.05)
    assert xb[:, 5:].mean() == pytest.approx(1.0, abs=0.05) and xb[:, :5].mean() == pytest.approx(0.0, abs=0.05)
    assert xa.shape == (500, 10) and p1.y[0].shape == (500, 10) and p1.x_val[1].shape == (100, 10)
    assert not torch.equal(make_problem(cfg.data, 6).y[0], p1.y[0])


def test_quick_preset_runs_both_layouts_and_checks_batch():
    plan = make_plan(["forgetting_separation"], ["baseline", "gapt"], [0], "quick", [])
    assert sorted({c.data.batch_layout for c in plan}) == ["grouped", "shuffled"] and len(plan) == 4
    with pytest.raises(ConfigError, match="multiple of two MBE patches"):
        make_plan(["forgetting_separation"], ["baseline"], [0], "quick", ["data.batch_size=24"])
    make_plan(
        ["forgetting_separation"],
        ["baseline"],
        [0],
        "quick",
        ["data.batch_size=24", "data.protocol=A->B", "data.finetune_patch_size=8"],
    )
    with pytest.raises(ConfigError, match="finetune_patch_size=32"):
        make_plan(["forgetting_separation"], ["baseline"], [0], "quick", ["data.batch_size=48"])


def test_full_protocol_lands_all_metrics(tmp_path):
    from gapt_bench.cli import main

    rc = main(
        [
            "run",
            "--tasks",
            "forgetting_separation",
            "--methods",
            "baseline,gapt,mbe",
            "--seeds",
            "0",
            "--out",
            str(tmp_path),
            "--workers",
            "1",
            "--no-progress",
            "--no-report",
            *[x for o in FAST for x in ("--set", o)],
        ]
    )
    assert rc == 0
    recs = [json.loads(line) for line in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert len(recs) == 6  # 3 methods x 2 layouts
    by = {(r["method"], r["config"]["data"]["batch_layout"]): r for r in recs}
    for r in recs:
        assert r["status"] == "ok", r["error"]
        assert METRICS <= set(r["metrics"]) and all(np.isfinite(v) for v in r["metrics"].values())
        assert r["tokens"] == 120 * 32 and r["steps"] == 120
        curve = [json.loads(x) for x in (tmp_path / "runs" / r["run_id"] / "curve.jsonl").read_text().splitlines()]
        assert curve[-1]["step"] == 120 and {"step", "loss", "ce", "phase", "stage", "mbe"} <= set(curve[-1])
        assert next(c["stage"] for c in curve) == 1 and curve[-1]["stage"] == 2
    for layout in ("grouped", "shuffled"):
        base, gapt = by[("baseline", layout)], by[("gapt", layout)]
        assert base["metrics"]["alleviation_pct"] == 0.0
        # the in-run reference is the baseline arm itself: same seed, init and batches
        assert gapt["summary"]["ref_l1_forgotten_post"] == pytest.approx(base["metrics"]["l1_b"], rel=1e-6)
        assert gapt["summary"]["ref_separation"] == pytest.approx(base["metrics"]["separation"], rel=1e-6)
        assert gapt["summary"]["gate_switches"] >= 1
        assert by[("mbe", layout)]["metrics"]["l1_a"] != base["metrics"]["l1_a"]


def test_a_then_b_protocol_forgets_a(tmp_path):
    cfg = make_plan(
        ["forgetting_separation"],
        ["baseline"],
        [0],
        "quick",
        ["data.protocol=A->B", "data.steps_first=150", "data.steps_second=150"],
    )[0]
    from gapt_bench.methods.baseline import Baseline
    from gapt_bench.training.runtime import RunContext

    res = ForgettingSeparation(cfg).run(Baseline, RunContext(run_dir=tmp_path))
    m = res.metrics
    assert m["l1_b_pre"] > m["l1_b"]  # B is learned in the second phase
    assert m["forgetting"] == pytest.approx(m["l1_a"] - m["l1_a_pre"])


def _arm(method: str, seed: int = 0, *overrides: str):
    from gapt_bench.methods import METHODS
    from gapt_bench.training.runtime import RunContext

    cfg = make_plan(["forgetting_separation"], [method], [seed], "quick", [*FAST, *overrides])[0]
    return ForgettingSeparation(cfg), METHODS.get(method), RunContext


def test_shared_pretraining_starts_every_arm_from_one_model(tmp_path):
    """The default protocol: the first stage is plain L1 and identical for every arm; only fine-tuning differs."""
    results = {}
    for method in ("baseline", "gapt", "mbe"):
        task, cls, ctx = _arm(method)
        results[method] = task.run(cls, ctx(run_dir=tmp_path)).metrics
    pre = {k: v for k, v in results["baseline"].items() if k.endswith("_pre")}
    for method in ("gapt", "mbe"):
        assert {k: results[method][k] for k in pre} == pre  # bit-identical pretraining
        assert results[method]["retained_l1"] != results["baseline"]["retained_l1"]
    # alleviation against the shared model: (L1f_base - L1f_method) / (L1f_base - L1f_shared)
    b, m = results["baseline"], results["mbe"]
    assert m["alleviation_pct"] == pytest.approx((b["l1_b"] - m["l1_b"]) / (b["l1_b"] - b["l1_b_pre"]) * 100)


def test_per_method_pretraining_keeps_round_one_protocol(tmp_path):
    task, cls, ctx = _arm("mbe", 0, "data.pretrain=per_method")
    per_method = task.run(cls, ctx(run_dir=tmp_path)).metrics
    task, cls, ctx = _arm("baseline", 0, "data.pretrain=per_method")
    base = task.run(cls, ctx(run_dir=tmp_path)).metrics
    assert per_method["l1_b_pre"] != base["l1_b_pre"]  # the method already acted while pretraining
