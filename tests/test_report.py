"""gapt_bench.results.analysis and gapt_bench.results.plots on constructed records."""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from factories import make_record

from gapt_bench.results import plots, stats
from gapt_bench.results.analysis import (
    ReportError,
    build_report,
    claim_verdict,
    compare,
    fmt_mean_ci,
    is_layer_metric,
    leaderboard,
    paper_table,
    regression,
    render,
)


def lm_records(seeds=range(5), gapt_shift: float = -0.15, noise: float = 0.01) -> list[dict]:
    """baseline / gapt / periodic on fineweb_lm with per-seed shared noise (a paired design)."""
    rng = np.random.default_rng(0)
    out = []
    for s in seeds:
        e = rng.normal(0, noise)
        for method, shift, mbe in (("baseline", 0.0, 4.0), ("gapt", gapt_shift, 2.0), ("periodic", -0.01, 3.9)):
            m = {
                "val_ce": 3.3 + shift + e + rng.normal(0, noise / 3),
                "val_mbe": mbe + rng.normal(0, 0.05),
                "val_mbe_centered": 4.5 + rng.normal(0, 0.05),
                **{f"val_mbe_layer_{i}": mbe + 0.1 * i + rng.normal(0, 0.05) for i in range(3)},
            }
            out.append(make_record(method=method, seed=s, metrics=m))
    return out


def forgetting_records() -> list[dict]:
    out = []
    rng = np.random.default_rng(1)
    for layout in ("grouped", "shuffled"):
        for s in range(4):
            for method, sep in (("baseline", 1.0), ("gapt", 1.9 if layout == "grouped" else 1.05)):
                out.append(
                    make_record(
                        "forgetting_separation",
                        method,
                        s,
                        {"separation": sep + rng.normal(0, 0.05)},
                        data={"batch_layout": layout},
                    )
                )
    return out


def capacity_records() -> list[dict]:
    out = []
    for n_layer, n_embd, p in ((1, 32, 10_000), (2, 32, 20_000)):
        for s in range(3):
            for data_bits in (1e4, 5e4, 2e5):
                mem = min(data_bits * 0.95, 3.8 * p) * (1 + 0.01 * s)
                out.append(
                    make_record(
                        "synthetic_capacity",
                        "baseline",
                        s,
                        {
                            "mem_bits": mem,
                            "data_bits": data_bits,
                            "bits_per_param": mem / p,
                            "heldout_ok": 1.0,
                            "heldout_bits_per_token": 6.0,
                        },
                        data={"n_sequences": int(data_bits // 100)},
                        model={"n_layer": n_layer, "n_embd": n_embd},
                        n_params=p,
                    )
                )
    return out


# ---------------------------------------------------------------------------------------------------------------


def test_groups_and_comparisons_complete():
    recs = [r for r in lm_records() if not (r["method"] == "gapt" and r["seed"] == 4)]
    recs.append(make_record(method="gapt", seed=4, status="diverged"))
    rep = build_report(recs)
    g_keys = {
        "task",
        "method",
        "metric",
        "n",
        "mean",
        "std",
        "ci_low",
        "ci_high",
        "values",
        "task_version",
        "config_hash",
        "preset",
        "n_diverged",
        "n_failed",
        "direction",
    }
    c_keys = {
        "task",
        "metric",
        "method",
        "reference",
        "n",
        "delta",
        "rel_delta",
        "ci_low",
        "ci_high",
        "test",
        "p",
        "p_holm",
        "effect_size",
        "verdict",
        "direction",
        "mwu_p",
        "mwu_p_min",
    }
    assert all(g_keys <= set(g) for g in rep["groups"])
    assert all(c_keys <= set(c) for c in rep["comparisons"])
    ce = next(c for c in rep["comparisons"] if c["method"] == "gapt" and c["metric"] == "val_ce")
    # the diverged gapt seed breaks the paired design for gapt -> Welch, and is counted
    assert ce["test"] == "welch_t" and ce["verdict"] == "better" and ce["rel_delta"] < 0
    gapt_ce = next(g for g in rep["groups"] if g["method"] == "gapt" and g["metric"] == "val_ce")
    assert gapt_ce["n"] == 4 and gapt_ce["n_diverged"] == 1 and "1 diverged" in fmt_mean_ci(gapt_ce)
    per = next(c for c in rep["comparisons"] if c["method"] == "periodic" and c["metric"] == "val_ce")
    assert per["test"] == "paired_t"
    # Holm over the task's family of headline comparisons (per-layer metrics form their own family)
    head = [c for c in rep["comparisons"] if not is_layer_metric(c["metric"])]
    layer = [c for c in rep["comparisons"] if is_layer_metric(c["metric"])]
    assert len(head) == 6 and len(layer) == 6
    assert [c["p_holm"] for c in head] == pytest.approx(stats.holm([c["p"] for c in head]))
    assert [c["p_holm"] for c in layer] == pytest.approx(stats.holm([c["p"] for c in layer]))
    json.dumps(rep)  # JSON-ready


def test_a_tasks_report_verdicts_do_not_depend_on_other_tasks_in_the_folder():
    # one Holm family per task: adding the forgetting runs to the folder leaves fineweb's adjusted p unchanged
    alone = build_report(lm_records(gapt_shift=-0.16))
    both = build_report(lm_records(gapt_shift=-0.16) + forgetting_records())

    def lm(rep):
        return {
            (c["method"], c["metric"]): (c["p_holm_report"], c["holm_family_size"], c["verdict"])
            for c in rep["comparisons"]
            if c["task"] == "fineweb_lm"
        }

    assert any(c["task"] != "fineweb_lm" and c["p"] is not None for c in both["comparisons"])
    assert lm(alone) == lm(both) and any(v[0] is not None for v in lm(both).values())
    fam = both["families"]["report"]
    assert fam["per_task"]["fineweb_lm"] == alone["families"]["report"]["size"] < fam["size"]
    assert set(fam["per_task"]) == {"fineweb_lm", "forgetting_separation"}
    md = render(both, "md")
    assert f"Holm over this task's {fam['per_task']['fineweb_lm']} headline comparisons" in md
    assert f"forgetting_separation: {fam['per_task']['forgetting_separation']}" in render(
        paper_table(lm_records(gapt_shift=-0.16) + forgetting_records()), "md"
    )


def test_controls_sit_beside_effects():
    rep = build_report(lm_records() + forgetting_records())
    lm = [(c["metric"], c["method"]) for c in rep["comparisons"] if c["task"] == "fineweb_lm"]
    metrics = [m for m, _ in lm if not is_layer_metric(m)]
    assert metrics.index("val_mbe_centered") == metrics.index("val_mbe") + 2  # after gapt and periodic rows
    assert lm[:2] == [("val_ce", "gapt"), ("val_ce", "periodic")]
    fs = [(c["method"], c["setup"], c["verdict"]) for c in rep["comparisons"] if c["task"] == "forgetting_separation"]
    assert [s for _, s, _ in fs] == ["batch_layout=grouped", "batch_layout=shuffled"]
    assert fs[0][2] == "better"


def test_markdown_and_rich_render_everything():
    rep = build_report(lm_records() + forgetting_records() + capacity_records())
    md = render(rep, "md")
    for token in (
        "### fineweb_lm",
        "### forgetting_separation",
        "### synthetic_capacity",
        "val_mbe_centered",
        "periodic",
        "batch_layout=shuffled",
        "p (Holm)",
        "↓",
        "↑",
        "(n=5)",
        "per-layer metrics hidden",
    ):
        assert token in md, token
    assert "val_mbe_layer_1" in render(rep, "md", include_layers=True)
    from rich.console import Console

    console = Console(record=True, width=200)
    render(rep, "rich", console=console)
    text = console.export_text()
    assert "fineweb_lm" in text and "better" in text and "val_mbe_centered" in text
    assert json.loads(render(rep, "json"))["comparisons"]


def test_report_without_records_raises():
    with pytest.raises(ReportError):
        build_report([])


def test_paper_table_rows_and_verdicts():
    paper = paper_table(lm_records(gapt_shift=-0.16) + forgetting_records() + capacity_records())
    rows = paper["rows"]
    by = {(r["metric"], r["role"], r["setup"]): r for r in rows}
    ce = by[("val_ce", "claim", "")]
    assert ce["verdict"] == "replicates" and ce["n"] == 5 and "quick" in ce["preset"] and ce["n_params"] == 120_000
    assert by[("val_mbe", "claim", "")]["verdict"] == "replicates"
    assert ("val_mbe_centered", "control: centred MBE", "") in by and ("val_ce", "control: periodic", "") in by
    assert by[("ood_answer_ce", "claim", "")]["verdict"] == "no runs"
    sep = [r for r in rows if r["metric"] == "separation" and r["role"] == "claim"]
    assert [r["setup"] for r in sep] == ["batch_layout=grouped", "batch_layout=shuffled"]
    # +5% against a claimed +97%, significant: real and smaller (inside the equivalence margin too, but not "no effect")
    assert sep[0]["verdict"] == "replicates" and sep[1]["verdict"] == "smaller effect"
    cap = {r["setup"]: r for r in rows if r["task"] == "synthetic_capacity"}
    assert cap["bf16"]["verdict"] == "no runs"
    # capacity per model = max over N of mem_bits / P, averaged over seeds, then over the two models
    assert cap["fp32"]["measured"] == pytest.approx(3.8 * 1.01, rel=1e-6) and cap["fp32"]["verdict"] == "replicates"
    md = render(paper, "md")
    assert "replicates" in md and "no runs" in md and "| -4.8% |" in md
    from rich.console import Console

    console = Console(record=True, width=220)
    render(paper, "rich", console=console)
    assert "claim" in console.export_text()


def test_claim_verdict_rule():
    assert claim_verdict(-0.5, -0.45, -0.6, -0.3, 0.01)[0] == "replicates"
    assert claim_verdict(-0.5, -0.1, -0.15, -0.05, 0.01)[0] == "smaller effect"  # real but smaller
    assert claim_verdict(-0.5, 0.1, 0.05, 0.15, 0.01)[0] == "opposite effect"
    # no effect: the 90% interval inside +-margin * |claim| (0.25 here) and no significant effect
    assert claim_verdict(-0.5, 0.01, -0.1, 0.12, 0.8, lo90=-0.08, hi90=0.1)[0] == "no effect"
    # ... a significant effect inside the margin is real: a smaller effect, not "no effect" (docs/statistics.md)
    assert claim_verdict(-0.5, -0.1, -0.15, -0.05, 0.01, lo90=-0.14, hi90=-0.06)[0] == "smaller effect"
    assert claim_verdict(-0.5, 0.01, -0.3, 0.12, 0.8, lo90=-0.26, hi90=0.1)[0] == "smaller or none"  # not within
    assert claim_verdict(-0.5, 0.01, -0.3, 0.12, 0.8)[0] == "smaller or none"  # no 90% interval given
    assert claim_verdict(-0.5, 0.01, -0.1, 0.12, 0.8, lo90=-0.08, hi90=0.1, margin=0.1)[0] == "smaller or none"
    assert claim_verdict(-0.5, -0.2, -0.7, 0.3, 0.4)[0] == "inconclusive"  # wide
    assert claim_verdict(0.97, 0.9, 0.8, 1.0, 0.001)[0] == "replicates"
    assert claim_verdict(-0.5, None, None, None, None)[0] == "inconclusive"


def test_leaderboard_win_rate():
    board = leaderboard(lm_records() + forgetting_records())
    rows = board["rows"]
    top = rows[0]
    assert top["method"] == "gapt" and top["rank"] == 1
    assert 0.0 <= rows[-1]["win_rate"] <= top["win_rate"] <= 1.0
    assert any("(n=5)" in v for v in top["evidence"].values())
    assert top["tasks"]["fineweb_lm"]["rank"] == 1
    md = render(board, "md")
    assert "mean win rate" in md and "fineweb_lm" in md


def gate_rows(*args, **kwargs) -> tuple[list[dict], int]:
    res = regression(*args, **kwargs)
    return res["rows"], res["exit_code"]


def _shift(records: list[dict], metric: str, factor: float) -> list[dict]:
    out = copy.deepcopy(records)
    for r in out:
        if metric in r["metrics"]:
            r["metrics"][metric] *= factor
    return out


def test_gate_same_records_pass():
    base = lm_records()
    rows, code = gate_rows(base, base)
    assert code == 0 and {r["verdict"] for r in rows} == {"PASS"}
    _, strict_code = gate_rows(base, base, strict=True)
    assert strict_code == 0


def test_gate_regression_exit_1():
    base = lm_records()
    cand = _shift(base, "val_ce", 1.10)  # 10% worse CE in every run, tolerance 5%
    rows, code = gate_rows(base, cand, tolerance=0.05)
    assert code == 1
    reg = [r for r in rows if r["verdict"] == "REGRESSION"]
    assert {r["metric"] for r in reg} == {"val_ce"} and all(r["p_worse_holm"] < 0.05 for r in reg)
    md = render(regression(base, cand, tolerance=0.05), "md")
    assert "REGRESSION" in md and "exit 1" in md


def test_gate_improved_warn_and_inconclusive():
    base = lm_records()
    rows, code = gate_rows(base, _shift(base, "val_ce", 0.9))
    assert code == 0 and "IMPROVED" in {r["verdict"] for r in rows}
    # two seeds only: past tolerance but too few seeds -> INCONCLUSIVE, exit 3 under --strict
    few = [r for r in base if r["seed"] < 2]
    rows, code = gate_rows(few, _shift(few, "val_ce", 1.2), min_n=3)
    assert code == 0 and "INCONCLUSIVE" in {r["verdict"] for r in rows}
    assert gate_rows(few, _shift(few, "val_ce", 1.2), min_n=3, strict=True)[1] == 3
    # noisy small shift past tolerance but not significant -> WARN (~)
    rng = np.random.default_rng(5)
    noisy = copy.deepcopy(base)
    for r in noisy:
        r["metrics"]["val_ce"] *= 1.06 + rng.normal(0, 0.2)
    rows, _ = gate_rows(base, noisy, tolerance=0.01)
    ce = [r for r in rows if r["metric"] == "val_ce"]
    assert all(r["verdict"] in ("WARN", "PASS", "IMPROVED") for r in ce) and any(r["verdict"] == "WARN" for r in ce)


def test_gate_incompatible_exit_2():
    base = lm_records()
    cand = copy.deepcopy(base)
    for r in cand:
        r["task_version"] = "2"
    rows, code = gate_rows(base, cand)
    assert code == 2 and {r["verdict"] for r in rows} == {"INCOMPATIBLE"}
    assert "task_version 1 vs 2" in rows[0]["note"]
    changed = [make_record(method=r["method"], seed=r["seed"], metrics=r["metrics"], reg_weight=0.5) for r in base]
    rows, code = gate_rows(base, changed)
    assert code == 2 and any("weight" in r["note"] for r in rows if r["verdict"] == "INCOMPATIBLE")
    schema = copy.deepcopy(base)
    for r in schema:
        r["schema_version"] = 3  # a schema whose metrics may mean something else
    assert gate_rows(base, schema)[1] == 2
    for r in schema:  # schema 2 only added `kind`: a training record's metrics mean what they meant in 1
        r["schema_version"], r["kind"] = 2, "training"
    assert gate_rows(base, schema)[1] == 0


def test_compare_two_result_sets():
    base = lm_records()
    rows = compare(base, _shift(base, "val_ce", 0.9))["rows"]
    ce = [r for r in rows if r["metric"] == "val_ce"]
    assert ce and all(r["verdict"] == "better" and r["delta"] < 0 for r in ce)


# ---------------------------------------------------------------------------------------------------------------
# Plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _curve_rows(n: int = 60, phases: bool = True, align: bool = False) -> list[dict]:
    rows = []
    for i in range(n):
        step = i * 10
        row = {
            "step": step,
            "tokens": step * 2048,
            "ce": 4.0 * math.exp(-i / 20) + 3.0,
            "lr": 1e-3,
            "phase": ((2 if (i // 15) % 2 else 1) if phases else None),
            "mbe": 3 - i / n,
        }
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
    assert _is_png(
        plots.plot_training_curve(
            [{"step": i, "ce": 3.0 - i / 10, "phase": None} for i in range(5)], tmp_path / "c2.png"
        )
    )
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


# ---------------------------------------------------------------------------------------------------------------
# Verdicts that do not mislead (each of these fails on the pre-analysis report.py)


def md_rows(md: str, title: str) -> list[dict]:
    """The rows of the markdown table under the first heading containing `title`, as {header: cell}; a footnote's
    number ("[1]") reads as the footnote under the table."""
    lines = md[md.index(title) :].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| "))
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append([c.strip() for c in line.strip("|").split(" | ")])
    footnotes = {}
    for line in lines[start + len(table) :]:
        if line.startswith("### "):
            break
        m = re.match(r"(\[\d+\]) (.*)", line)
        if m:
            footnotes[m.group(1)] = m.group(2).strip()
    head, body = table[0], table[2:]
    return [dict(zip(head, [footnotes.get(c, c) for c in row])) for row in body]


def collapse_records(seeds=range(5)) -> list[dict]:
    """A method that collapses MBE (and its centred control) while raising CE, against the baseline."""
    rng = np.random.default_rng(3)
    out = []
    for s in seeds:
        e = rng.normal(0, 0.01)
        for method, ce, mbe in (("baseline", 3.3, 4.0), ("collapse", 3.5, 0.5)):
            m = {
                "val_ce": ce + e + rng.normal(0, 0.005),
                "val_mbe": mbe + rng.normal(0, 0.05),
                "val_mbe_centered": mbe + 0.5 + rng.normal(0, 0.05),
                **{f"val_mbe_layer_{i}": mbe + rng.normal(0, 0.05) for i in range(3)},
            }
            out.append(make_record(method=method, seed=s, metrics=m))
    return out


def test_leaderboard_ranks_on_primary_metrics_only():
    board = leaderboard(collapse_records())
    rows = {r["method"]: r for r in board["rows"]}
    assert rows["baseline"]["rank"] == 1 and rows["collapse"]["rank"] == 2
    assert rows["collapse"]["win_rate"] == 0.0 and rows["baseline"]["win_rate"] == 1.0
    assert [c["metric"] for c in board["columns"]] == ["val_ce"]  # MBE is no column
    cell = board["columns"][0]["cells"]["collapse"]
    assert cell["vs_reference"] == "worse" and cell["ci_low"] < cell["mean"] < cell["ci_high"]
    assert "✗" in rows["collapse"]["evidence"]["fineweb_lm/val_ce"]
    diag = {(d["metric"], d["per_layer"]) for d in board["diagnostics"]}
    assert ("val_mbe", False) in diag and ("val_mbe_layer_0", True) in diag and ("val_ce", False) not in diag
    md = render(board, "md")
    assert "Diagnostics, not scored" in md and "val_mbe_centered" in md and "val_mbe_layer_0" not in md
    assert "val_mbe_layer_0" in render(board, "md", include_layers=True)


def test_leaderboard_counts_only_significant_wins_and_skips_undeclared_records():
    recs = collapse_records()
    base = {r["seed"]: r["metrics"]["val_ce"] for r in recs if r["method"] == "baseline"}
    for r in recs:  # differences that average to zero: no significant win, half a point each
        if r["method"] == "collapse":
            r["metrics"]["val_ce"] = base[r["seed"]] + (0.004, -0.003, 0.002, -0.004, 0.001)[r["seed"]]
    tie = {r["method"]: r for r in leaderboard(recs)["rows"]}
    assert tie["baseline"]["win_rate"] == tie["collapse"]["win_rate"] == 0.5
    assert tie["baseline"]["rank"] == tie["collapse"]["rank"] == 1
    old = copy.deepcopy(collapse_records())
    for r in old:
        del r["primary_metrics"]
    board = leaderboard(old + capacity_records())
    assert board["rows"] == [] and board["columns"] == []
    assert any("fineweb_lm" in n and "no primary_metrics" in n for n in board["notes"])
    assert any("synthetic_capacity" in n and "not scored" in n for n in board["notes"])
    assert any(d["task"] == "fineweb_lm" and d["metric"] == "val_ce" for d in board["diagnostics"])
    assert "no primary_metrics" in render(board, "md")


def test_mde_and_seeds_needed_beside_each_comparison():
    recs = lm_records()
    rep = build_report(recs)
    ce = next(c for c in rep["comparisons"] if c["method"] == "gapt" and c["metric"] == "val_ce")
    a = {r["seed"]: r["metrics"]["val_ce"] for r in recs if r["method"] == "gapt"}
    b = {r["seed"]: r["metrics"]["val_ce"] for r in recs if r["method"] == "baseline"}
    d = np.array([a[s] - b[s] for s in sorted(a)])
    sd = float(d.std(ddof=1))
    assert ce["sd_delta"] == pytest.approx(sd)
    assert ce["mde"] == pytest.approx(stats.mde(sd, 5, alpha=0.05, power=0.8, paired=True))
    assert ce["seeds_needed"] == stats.seeds_needed(float(d.mean()), sd, alpha=0.05, power=0.8, paired=True)
    row = next(
        r for r in md_rows(render(rep, "md"), "### fineweb_lm") if r["metric"] == "val_ce" and r["method"] == "gapt"
    )
    assert row["MDE (rel)"] == f"{ce['mde']:.3g} ({ce['mde_rel'] * 100:.1f}%)"
    assert row["seeds needed"] == str(ce["seeds_needed"])
    assert json.loads(render(rep, "json"))["comparisons"][0]["mde"] is not None

    paper = paper_table(recs)
    claim = next(r for r in paper["rows"] if r["metric"] == "val_ce" and r["role"] == "claim")
    claimed_abs = abs(-0.048 * float(np.mean(list(b.values()))))
    assert claim["claimed_delta_abs"] == pytest.approx(claimed_abs)
    assert claim["seeds_needed_claim"] == stats.seeds_needed(claimed_abs, sd, alpha=0.05, power=0.8, paired=True)
    assert claim["mde_rel"] == pytest.approx(ce["mde_rel"])
    prow = next(r for r in md_rows(render(paper, "md"), "Seed papers") if r["claimed"] == "-4.8%")
    assert prow["seeds for claim"] == str(claim["seeds_needed_claim"]) and prow["MDE"] == f"{ce['mde_rel'] * 100:.1f}%"
    assert json.loads(render(paper, "json"))["rows"][0]["seeds_needed_claim"] == claim["seeds_needed_claim"]


def mbe_collapse_records() -> list[dict]:
    """gapt drops MBE from 1.2 to about 0.14 with a wide spread (the quick suite's shape): a linear relative CI
    would reach below -100%."""
    out = []
    for s, (base, g) in enumerate(((1.10, 0.02), (1.20, 0.05), (1.26, 0.36))):
        for method, v in (("baseline", base), ("gapt", g)):
            out.append(make_record(method=method, seed=s, metrics={"val_mbe": v, "val_ce": 3.0 + 0.01 * s}))
    return out


def test_relative_ci_never_below_minus_100_percent():
    recs = mbe_collapse_records()
    rep = build_report(recs)
    c = next(c for c in rep["comparisons"] if c["metric"] == "val_mbe")
    assert c["ci_low"] / c["mean_b"] < -1  # the linear interval would cross -100%
    assert c["rel_ci_method"] == stats.REL_CI_PAIRED and -1 <= c["rel_ci_low"] < c["rel_delta"] < c["rel_ci_high"]
    md = render(rep, "md")
    row = next(r for r in md_rows(md, "### fineweb_lm") if r["metric"] == "val_mbe")
    low = float(row["95% CI (rel)"].strip("[]").split(",")[0].rstrip("%"))
    assert -100 <= low and "95% CI (rel): paired" in md
    paper = paper_table(recs)
    claim = next(r for r in paper["rows"] if r["metric"] == "val_mbe" and r["role"] == "claim")
    assert claim["ci_low"] >= -1 and claim["ci_method"] == stats.REL_CI_PAIRED
    assert "paired: the paired test's delta CI" in render(paper, "md")
    # the paired interval agrees with the paired test: significant and excluding 0, it reaches -50%
    assert claim["ci_high"] < 0 and claim["verdict"] == "replicates"


def test_claim_verdict_with_an_asymmetric_interval():
    # quick-suite MBE: significant paired test, log-ratio CI [-99%, +69%] holds no effect
    assert claim_verdict(-0.5, -0.879, -0.991, 0.686, 0.012) == (
        "inconclusive",
        "test significant, but the relative CI holds no effect (the ratio is poorly pinned)",
    )
    assert claim_verdict(-0.5, -0.45, -0.52, -0.30, 0.01)[0] == "replicates"  # asymmetric, reaches the claim
    assert claim_verdict(0.97, 0.6, 0.2, 1.1, 0.01)[0] == "replicates"  # stretched upper end reaches +97%
    assert claim_verdict(-0.5, -0.3, -0.45, -0.1, 0.01)[0] == "smaller effect"  # stops short of the claim


def test_both_holm_families_shown_under_the_same_names_on_both_pages():
    recs = lm_records(gapt_shift=-0.16) + forgetting_records()
    rep = build_report(recs)
    paper = paper_table(recs)
    c = next(c for c in rep["comparisons"] if c["method"] == "gapt" and c["metric"] == "val_mbe")
    p = next(r for r in paper["rows"] if r["metric"] == "val_mbe" and r["role"] == "claim")
    assert (c["p_holm_report"], c["p_holm_claims"]) == (p["p_holm_report"], p["p_holm_claims"])
    assert c["p_holm_claims"] != c["p_holm_report"]  # two families of different sizes, both named
    assert c["holm_family_size"] == rep["families"]["report"]["per_task"]["fineweb_lm"] != c["claims_family_size"]
    assert rep["families"]["claims"]["size"] == paper["families"]["claims"]["size"] == 7
    row_r = next(
        r for r in md_rows(render(rep, "md"), "### fineweb_lm") if r["metric"] == "val_mbe" and r["method"] == "gapt"
    )
    row_p = next(r for r in md_rows(render(paper, "md"), "Seed papers") if r["claimed"] == "-50.0%")
    for name in ("p (Holm) report", "p (Holm) claims"):
        assert row_r[name] == row_p[name] != "—", name
    assert row_r["p (Holm) claims"] == f"{c['p_holm_claims']:.2g}"
    assert "verdicts use p (Holm) report" in render(rep, "md") and "verdicts use p (Holm) claims" in render(paper, "md")


def duty_records(periodic_duty: float) -> list[dict]:
    out = []
    rng = np.random.default_rng(7)
    for s in range(4):
        e = rng.normal(0, 0.01)
        for method, shift in (("baseline", 0.0), ("gapt", -0.1), ("periodic", -0.02)):
            summary = {}
            if method == "gapt":
                summary = {"duty_compress": 0.5 + 0.01 * s, "mean_phase_memorize": 40.0, "mean_phase_compress": 41.0}
            elif method == "periodic":
                summary = {
                    "duty_compress": periodic_duty,
                    "mean_phase_memorize": 60.0,
                    "mean_phase_compress": 20.0,
                    "matched_to": f"fineweb_lm-gapt-{s}",
                }
            rec = make_record(
                method=method, seed=s, metrics={"val_ce": 3.3 + shift + e + rng.normal(0, 0.003)}, summary=summary
            )
            if method == "gapt":
                rec["run_id"] = f"fineweb_lm-gapt-{s}"
            out.append(rec)
    return out


def test_duty_cycles_beside_method_and_control():
    rep = build_report(duty_records(0.25))
    (pair,) = rep["control_pairs"]
    assert pair["method"] == "gapt" and pair["control"] == "periodic" and pair["n_matched"] == 4
    assert pair["method_duty"] == pytest.approx(0.515) and pair["control_duty"] == pytest.approx(0.25)
    assert pair["mismatch"] is True
    rows = {r["method"]: r for r in md_rows(render(rep, "md"), "### fineweb_lm")}
    assert "⚠ duty mismatch: gapt 0.52 / periodic 0.25" in rows["periodic"]["note"]
    assert "duty mismatch" in rows["gapt"]["note"]
    control = next(r for r in paper_table(duty_records(0.25))["rows"] if r["role"] == "control: periodic")
    assert "⚠ duty mismatch: gapt 0.52 / periodic 0.25" in control["note"]
    matched = build_report(duty_records(0.52))
    assert matched["control_pairs"][0]["mismatch"] is False
    note = next(r for r in md_rows(render(matched, "md"), "### fineweb_lm") if r["method"] == "periodic")["note"]
    assert note == "duty gapt 0.52 / periodic 0.52"


def test_gate_names_different_machines():
    base = lm_records()
    cand = copy.deepcopy(base)
    for r in base:
        r["env"] = {"machine_class": "cpu:Intel(R) Xeon(R) [avx2,avx512f,fma]"}
    for r in cand:
        r["env"] = {"machine_class": "cuda:NVIDIA H200"}
    line = (
        "baseline machine: cpu:Intel(R) Xeon(R) [avx2,avx512f,fma]; candidate machine: cuda:NVIDIA H200: "
        "results are compared statistically, not bit for bit"
    )
    res = regression(base, cand)
    assert res["notes"] == [line] and res["exit_code"] == 0
    assert line in render(res, "md") and line in json.loads(render(res, "json"))["notes"]
    from rich.console import Console

    console = Console(record=True, width=400)
    render(res, "rich", console=console)
    assert line in console.export_text()
    unknown = regression(lm_records(), cand)
    assert unknown["machines"]["baseline"] == ["unknown"] and "baseline machine: unknown;" in unknown["notes"][0]
    assert regression(base, base)["notes"] == []


def test_cli_compare_is_two_sided_and_regression_is_one_sided(tmp_path, capsys):
    from gapt_bench import cli

    base = lm_records()
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps(r) + "\n" for r in base))
    b.write_text("".join(json.dumps(r) + "\n" for r in _shift(base, "val_ce", 1.1)))
    assert cli.main(["compare", str(a), str(b), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["kind"] == "compare"
    assert {r["verdict"] for r in out["rows"] if r["metric"] == "val_ce"} == {"worse"}
    assert cli.main(["regression", "--baseline", str(a), "--candidate", str(b), "--format", "json"]) == 1
    assert json.loads(capsys.readouterr().out)["kind"] == "regression"


def test_paper_rows_name_preset_deviations_and_gate_variant():
    recs = lm_records()
    for r in recs:
        if r["method"] == "gapt":
            r["summary"]["preset_about"] = {
                "variant": "author-code gate (absolute thresholds)",
                "deviations": ["batch 32 instead of 512", "1% of the paper's tokens"],
            }
        elif r["method"] == "baseline":
            r["summary"]["preset_about"] = {"variant": "plain CE", "deviations": ["1% of the paper's tokens"]}
    rows = paper_table(recs)["rows"]
    claim = next(r for r in rows if r["metric"] == "val_ce" and r["role"] == "claim")
    assert claim["note"].endswith(
        "gate variant: author-code gate (absolute thresholds); deviations: batch 32 "
        "instead of 512; 1% of the paper's tokens"
    )
    assert claim["note"].count("1% of the paper's tokens") == 1 and "plain CE" not in claim["note"]
    md = render(paper_table(recs), "md")
    assert "deviations: batch 32 instead of 512" in md


def test_controls_come_from_the_records():
    recs = lm_records()
    rep = build_report(recs)
    assert rep["controls"] == {"gapt": ["periodic", "mbe"]}
    old = copy.deepcopy(recs)
    for r in old:
        r.pop("controls")
    assert not any(r["role"] == "control: periodic" for r in paper_table(old)["rows"])
    assert build_report(old)["controls"] == {}
    for r in recs:  # a method declaring a new control gets its row under the claim
        if r["method"] == "gapt":
            r["controls"] = ["periodic", "mbe", "other"]
        if r["method"] == "periodic":
            recs.append(
                {
                    **copy.deepcopy(r),
                    "method": "other",
                    "run_id": r["run_id"] + "-o",
                    "config_hash": r["config_hash"] + "o",
                    "controls": [],
                }
            )
    roles = [r["role"] for r in paper_table(recs)["rows"] if r["metric"] == "val_ce"]
    assert roles == ["claim", "control: periodic", "control: other"]


def test_capacity_plot_marks_budget_stops_and_compares_like_with_like(tmp_path):
    recs = capacity_records()
    for r in recs:
        r["config"]["train"]["seq_len"] = 32
        if r["metrics"]["data_bits"] == 1e4:
            r["stop_reason"], r["metrics"]["converged"] = "converged", 1.0
    series = plots.capacity_series(recs)
    assert [p["budget"] for p in series[((1, 32), "baseline")]] == [0, 3, 3]
    fig = plots.capacity_figure(recs)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert plots.BUDGET_LABEL in labels
    assert any("3.64·(S−1)/S = 3.53" in lbl for lbl in labels)  # the paper's slope in the plot's strict convention
    hollow = [line for line in ax.get_lines() if line.get_markerfacecolor() == "white"]
    assert sum(len(line.get_xdata()) for line in hollow) == 4  # 2 models x 2 budget points (the legend key is empty)
    assert _is_png(plots.plot_capacity(recs, tmp_path / "cap.png"))


def _control_records(periodic_shift: float, gapt_duty: float = 0.3) -> list[dict]:
    """baseline / gapt (-0.15 nats) / periodic (given shift) on fineweb_lm, paired noise, realised duty cycles."""
    rng = np.random.default_rng(3)
    out = []
    for s in range(6):
        e = rng.normal(0, 0.01)
        for method, shift in (("baseline", 0.0), ("gapt", -0.15), ("periodic", periodic_shift)):
            rec = make_record(method=method, seed=s, metrics={"val_ce": 3.3 + shift + e + rng.normal(0, 0.003)})
            if method != "baseline":
                rec["summary"] = {"duty_compress": gapt_duty, "gate_switches": 12}
            out.append(rec)
    return out


def test_a_control_row_says_whether_the_control_explains_the_effect():
    def periodic_row(shift):
        rows = paper_table(_control_records(shift))["rows"]
        return next(r for r in rows if r["metric"] == "val_ce" and r["role"] == "control: periodic")

    same = periodic_row(-0.15)  # the schedule alone does what the gate does
    assert "the control explains the effect" in same["versus_control"]
    weaker = periodic_row(-0.02)  # the gate's decisions add to the schedule
    assert "the method beats its control" in weaker["versus_control"]
    assert weaker["versus_control"].startswith("gapt vs periodic: -3.")  # the gap, paired by seed


def test_a_claim_row_names_the_realised_schedule_and_flags_a_gate_that_barely_compresses():
    claim = next(r for r in paper_table(_control_records(-0.1, gapt_duty=0.008))["rows"] if r["role"] == "claim")
    assert claim["duty_compress"] == pytest.approx(0.008) and claim["phase_switches"] == 12
    assert "⚠ gapt compressed 0.8% of micro-batches, 12 phase switches (under 5%" in claim["note"]
    ok = next(r for r in paper_table(_control_records(-0.1, gapt_duty=0.3))["rows"] if r["role"] == "claim")
    assert "gapt compressed 30.0% of micro-batches" in ok["note"] and "⚠" not in ok["note"]
