"""gapt_bench.report and gapt_bench.plots on constructed records."""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest

from gapt_bench import plots, report
from factories import make_record

def lm_records(seeds=range(5), gapt_shift: float = -0.15, noise: float = 0.01) -> list[dict]:
    """baseline / gapt / periodic on fineweb_lm with per-seed shared noise (a paired design)."""
    rng = np.random.default_rng(0)
    out = []
    for s in seeds:
        e = rng.normal(0, noise)
        for method, shift, mbe in (("baseline", 0.0, 4.0), ("gapt", gapt_shift, 2.0), ("periodic", -0.01, 3.9)):
            m = {"val_ce": 3.3 + shift + e + rng.normal(0, noise / 3), "val_mbe": mbe + rng.normal(0, 0.05),
                 "val_mbe_centered": 4.5 + rng.normal(0, 0.05),
                 **{f"val_mbe_layer_{i}": mbe + 0.1 * i + rng.normal(0, 0.05) for i in range(3)}}
            out.append(make_record(method=method, seed=s, metrics=m))
    return out


def forgetting_records() -> list[dict]:
    out = []
    rng = np.random.default_rng(1)
    for layout in ("grouped", "shuffled"):
        for s in range(4):
            for method, sep in (("baseline", 1.0), ("gapt", 1.9 if layout == "grouped" else 1.05)):
                out.append(make_record("forgetting_separation", method, s, {"separation": sep + rng.normal(0, 0.05)},
                                       data={"batch_layout": layout}))
    return out


def capacity_records() -> list[dict]:
    out = []
    for (n_layer, n_embd, p) in ((1, 32, 10_000), (2, 32, 20_000)):
        for s in range(3):
            for data_bits in (1e4, 5e4, 2e5):
                mem = min(data_bits * 0.95, 3.8 * p) * (1 + 0.01 * s)
                out.append(make_record("synthetic_capacity", "baseline", s,
                                       {"mem_bits": mem, "data_bits": data_bits, "bits_per_param": mem / p,
                                        "heldout_ok": 1.0, "heldout_bits_per_token": 6.0},
                                       data={"n_sequences": int(data_bits // 100)}, model={"n_layer": n_layer, "n_embd": n_embd},
                                       n_params=p))
    return out


# ---------------------------------------------------------------------------------------------------------------


def test_groups_and_comparisons_complete():
    recs = [r for r in lm_records() if not (r["method"] == "gapt" and r["seed"] == 4)]
    recs.append(make_record(method="gapt", seed=4, status="diverged"))
    rep = report.build_report(recs)
    g_keys = {"task", "method", "metric", "n", "mean", "std", "ci_low", "ci_high", "values", "task_version",
              "config_hash", "preset", "n_diverged", "n_failed", "direction"}
    c_keys = {"task", "metric", "method", "reference", "n", "delta", "rel_delta", "ci_low", "ci_high", "test", "p",
              "p_holm", "effect_size", "verdict", "direction", "mwu_p", "mwu_p_min"}
    assert all(g_keys <= set(g) for g in rep["groups"])
    assert all(c_keys <= set(c) for c in rep["comparisons"])
    ce = next(c for c in rep["comparisons"] if c["method"] == "gapt" and c["metric"] == "val_ce")
    # the diverged gapt seed breaks the paired design for gapt -> Welch, and is counted
    assert ce["test"] == "welch_t" and ce["verdict"] == "better" and ce["rel_delta"] < 0
    gapt_ce = next(g for g in rep["groups"] if g["method"] == "gapt" and g["metric"] == "val_ce")
    assert gapt_ce["n"] == 4 and gapt_ce["n_diverged"] == 1 and "1 diverged" in report.fmt_mean_ci(gapt_ce)
    per = next(c for c in rep["comparisons"] if c["method"] == "periodic" and c["metric"] == "val_ce")
    assert per["test"] == "paired_t"
    # Holm over the report's family of headline comparisons (per-layer metrics form their own family)
    from gapt_bench import stats
    head = [c for c in rep["comparisons"] if not report.is_layer_metric(c["metric"])]
    layer = [c for c in rep["comparisons"] if report.is_layer_metric(c["metric"])]
    assert len(head) == 6 and len(layer) == 6
    assert [c["p_holm"] for c in head] == pytest.approx(stats.holm([c["p"] for c in head]))
    assert [c["p_holm"] for c in layer] == pytest.approx(stats.holm([c["p"] for c in layer]))
    json.dumps(rep)  # JSON-ready


def test_controls_sit_beside_effects():
    rep = report.build_report(lm_records() + forgetting_records())
    lm = [(c["metric"], c["method"]) for c in rep["comparisons"] if c["task"] == "fineweb_lm"]
    metrics = [m for m, _ in lm if not report.is_layer_metric(m)]
    assert metrics.index("val_mbe_centered") == metrics.index("val_mbe") + 2  # after gapt and periodic rows
    assert lm[:2] == [("val_ce", "gapt"), ("val_ce", "periodic")]
    fs = [(c["method"], c["setup"], c["verdict"]) for c in rep["comparisons"] if c["task"] == "forgetting_separation"]
    assert [s for _, s, _ in fs] == ["batch_layout=grouped", "batch_layout=shuffled"]
    assert fs[0][2] == "better"


def test_markdown_and_rich_render_everything():
    rep = report.build_report(lm_records() + forgetting_records() + capacity_records())
    md = report.render_markdown(rep)
    for token in ("### fineweb_lm", "### forgetting_separation", "### synthetic_capacity", "val_mbe_centered",
                  "periodic", "batch_layout=shuffled", "p (Holm)", "↓", "↑", "(n=5)", "per-layer metrics hidden"):
        assert token in md, token
    assert "val_mbe_layer_1" in report.render_markdown(rep, include_layers=True)
    from rich.console import Console

    console = Console(record=True, width=200)
    report.render_rich(rep, console)
    text = console.export_text()
    assert "fineweb_lm" in text and "better" in text and "val_mbe_centered" in text
    assert json.loads(report.render_json(rep))["comparisons"]


def test_report_without_records_raises():
    with pytest.raises(report.ReportError):
        report.build_report([])


def test_paper_table_rows_and_verdicts():
    rows = report.paper_table(lm_records(gapt_shift=-0.16) + forgetting_records() + capacity_records())
    by = {(r["metric"], r["role"], r["setup"]): r for r in rows}
    ce = by[("val_ce", "claim", "")]
    assert ce["verdict"] == "replicates" and ce["n"] == 5 and "quick" in ce["preset"] and ce["n_params"] == 120_000
    assert by[("val_mbe", "claim", "")]["verdict"] == "replicates"
    assert ("val_mbe_centered", "control: centred MBE", "") in by and ("val_ce", "control: periodic", "") in by
    assert by[("ood_answer_ce", "claim", "")]["verdict"] == "no runs"
    sep = [r for r in rows if r["metric"] == "separation" and r["role"] == "claim"]
    assert [r["setup"] for r in sep] == ["batch_layout=grouped", "batch_layout=shuffled"]
    assert sep[0]["verdict"] == "replicates" and sep[1]["verdict"] == "does not"
    cap = {r["setup"]: r for r in rows if r["task"] == "synthetic_capacity"}
    assert cap["bf16"]["verdict"] == "no runs"
    # capacity per model = max over N of mem_bits / P, averaged over seeds, then over the two models
    assert cap["fp32"]["measured"] == pytest.approx(3.8 * 1.01, rel=1e-6) and cap["fp32"]["verdict"] == "replicates"
    md = report.render_paper_markdown(rows)
    assert "replicates" in md and "no runs" in md and "| -4.8% |" in md
    from rich.console import Console

    console = Console(record=True, width=220)
    report.render_paper_rich(rows, console)
    assert "claim" in console.export_text()


def test_claim_verdict_rule():
    assert report.claim_verdict(-0.5, -0.45, -0.6, -0.3, 0.01)[0] == "replicates"
    assert report.claim_verdict(-0.5, -0.1, -0.15, -0.05, 0.01)[0] == "does not"    # real but smaller
    assert report.claim_verdict(-0.5, 0.1, 0.05, 0.15, 0.01)[0] == "does not"       # opposite
    assert report.claim_verdict(-0.5, -0.2, -0.7, 0.3, 0.4)[0] == "inconclusive"    # wide
    assert report.claim_verdict(0.97, 0.9, 0.8, 1.0, 0.001)[0] == "replicates"
    assert report.claim_verdict(-0.5, None, None, None, None)[0] == "inconclusive"


def test_leaderboard_win_rate():
    rows = report.leaderboard(lm_records() + forgetting_records())
    top = rows[0]
    assert top["method"] == "gapt" and top["rank"] == 1
    assert 0.0 <= rows[-1]["win_rate"] <= top["win_rate"] <= 1.0
    assert any("(n=5)" in v for v in top["evidence"].values())
    assert top["tasks"]["fineweb_lm"]["rank"] == 1
    md = report.render_leaderboard_markdown(rows)
    assert "mean win rate" in md and "fineweb_lm" in md


def _shift(records: list[dict], metric: str, factor: float) -> list[dict]:
    out = copy.deepcopy(records)
    for r in out:
        if metric in r["metrics"]:
            r["metrics"][metric] *= factor
    return out


def test_gate_same_records_pass():
    base = lm_records()
    rows, code = report.gate(base, base)
    assert code == 0 and {r["verdict"] for r in rows} == {"PASS"}
    _, strict_code = report.gate(base, base, strict=True)
    assert strict_code == 0


def test_gate_regression_exit_1():
    base = lm_records()
    cand = _shift(base, "val_ce", 1.10)  # 10% worse CE in every run, tolerance 5%
    rows, code = report.gate(base, cand, tolerance=0.05)
    assert code == 1
    reg = [r for r in rows if r["verdict"] == "REGRESSION"]
    assert {r["metric"] for r in reg} == {"val_ce"} and all(r["p_worse_holm"] < 0.05 for r in reg)
    md = report.render_gate_markdown(rows, code)
    assert "REGRESSION" in md and "exit 1" in md


def test_gate_improved_warn_and_inconclusive():
    base = lm_records()
    rows, code = report.gate(base, _shift(base, "val_ce", 0.9))
    assert code == 0 and "IMPROVED" in {r["verdict"] for r in rows}
    # two seeds only: past tolerance but too few seeds -> INCONCLUSIVE, exit 3 under --strict
    few = [r for r in base if r["seed"] < 2]
    rows, code = report.gate(few, _shift(few, "val_ce", 1.2), min_n=3)
    assert code == 0 and "INCONCLUSIVE" in {r["verdict"] for r in rows}
    assert report.gate(few, _shift(few, "val_ce", 1.2), min_n=3, strict=True)[1] == 3
    # noisy small shift past tolerance but not significant -> WARN (~)
    rng = np.random.default_rng(5)
    noisy = copy.deepcopy(base)
    for r in noisy:
        r["metrics"]["val_ce"] *= 1.06 + rng.normal(0, 0.2)
    rows, _ = report.gate(base, noisy, tolerance=0.01)
    ce = [r for r in rows if r["metric"] == "val_ce"]
    assert all(r["verdict"] in ("WARN", "PASS", "IMPROVED") for r in ce) and any(r["verdict"] == "WARN" for r in ce)


def test_gate_incompatible_exit_2():
    base = lm_records()
    cand = copy.deepcopy(base)
    for r in cand:
        r["task_version"] = "2"
    rows, code = report.gate(base, cand)
    assert code == 2 and {r["verdict"] for r in rows} == {"INCOMPATIBLE"}
    assert "task_version 1 vs 2" in rows[0]["note"]
    changed = [make_record(method=r["method"], seed=r["seed"], metrics=r["metrics"], reg_weight=0.5) for r in base]
    rows, code = report.gate(base, changed)
    assert code == 2 and any("weight" in r["note"] for r in rows if r["verdict"] == "INCOMPATIBLE")
    schema = copy.deepcopy(base)
    for r in schema:
        r["schema_version"] = 2
    assert report.gate(base, schema)[1] == 2


def test_compare_two_result_sets():
    base = lm_records()
    rows = report.compare(base, _shift(base, "val_ce", 0.9))
    ce = [r for r in rows if r["metric"] == "val_ce"]
    assert ce and all(r["verdict"] == "better" and r["delta"] < 0 for r in ce)


# ---------------------------------------------------------------------------------------------------------------
# Plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _curve_rows(n: int = 60, phases: bool = True, align: bool = False) -> list[dict]:
    rows = []
    for i in range(n):
        step = i * 10
        row = {"step": step, "tokens": step * 2048, "ce": 4.0 * math.exp(-i / 20) + 3.0, "lr": 1e-3,
               "phase": ((2 if (i // 15) % 2 else 1) if phases else None), "mbe": 3 - i / n}
        row.update({f"mbe_layer_{j}": 3 - i / n + 0.2 * j for j in range(4)})
        if align:
            row["align_cos"] = math.sin(i / 7) * 0.5
        rows.append(row)
    return rows


def _is_png(p: Path) -> bool:
    return p.is_file() and p.read_bytes()[:8] == PNG_MAGIC and p.stat().st_size > 1000


def test_plot_writers(tmp_path: Path):
    assert plots.phase_spans(_curve_rows(6)) == []  # first 15 rows are phase 1
    spans = plots.phase_spans(_curve_rows(40))
    assert spans[0] == (150, 300)
    assert _is_png(plots.plot_training_curve(_curve_rows(), tmp_path / "c.png", "t"))
    assert _is_png(plots.plot_training_curve([{"step": i, "ce": 3.0 - i / 10, "phase": None} for i in range(5)],
                                             tmp_path / "c2.png"))
    assert _is_png(plots.plot_layer_mbe(lm_records(), tmp_path / "l.png"))
    assert _is_png(plots.plot_capacity(capacity_records(), tmp_path / "cap.png"))
    assert _is_png(plots.plot_alignment({"gapt": _curve_rows(align=True)}, tmp_path / "a.png"))


def test_plot_all_from_results_folder(tmp_path: Path):
    results = tmp_path / "results"
    recs = [r for r in lm_records() if r["seed"] < 2] + capacity_records()
    (results / "runs").mkdir(parents=True)
    (results / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs) + '{"torn": ')
    for r in recs:
        if r["task"] == "fineweb_lm":
            d = results / "runs" / r["run_id"]
            d.mkdir()
            rows = _curve_rows(phases=r["method"] == "gapt", align=r["method"] != "baseline")
            d.joinpath("curve.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
    paths = plots.plot_all(results, tmp_path / "plots")
    names = {p.name for p in paths}
    assert sum(n.startswith("curve_fineweb_lm") for n in names) == 3
    assert any(n.startswith("alignment_") for n in names)
    assert any(n.startswith("layers_val_mbe") for n in names)
    assert "capacity_plateau.png" in names
    assert all(_is_png(p) for p in paths)
