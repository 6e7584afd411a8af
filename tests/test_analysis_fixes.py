"""Analysis fixes from the review: regression-check matching, sd of the MDE, extraction convergence, shared display names."""

from __future__ import annotations

import numpy as np
import pytest
from factories import make_record

from gapt_bench.results import stats
from gapt_bench.results.analysis import (
    analyse_capacity,
    analyse_memorization,
    build_report,
    paper_table,
    regression,
    render,
)


def _runs(method: str = "baseline", reg_weight: float = 1.0, shift: float = 0.0) -> list[dict]:
    return [
        make_record(method=method, seed=s, reg_weight=reg_weight, metrics={"val_ce": 3.3 + shift + 0.01 * s})
        for s in range(3)
    ]


def _verdicts(res: dict) -> dict[tuple[str, str], str]:
    return {(r["method"], r["metric"], r["setup"]): r["verdict"] for r in res["rows"]}


def test_regression_a_new_configuration_beside_matching_ones_is_new_not_incompatible():
    base = _runs()
    cand = _runs() + _runs(reg_weight=0.5)  # the matched configuration plus one more of the same method
    res = regression(base, cand)
    assert res["exit_code"] == 0
    assert sorted(r["verdict"] for r in res["rows"] if r["metric"] == "*") == ["NEW"]
    assert any(r["verdict"] == "PASS" and r["metric"] == "val_ce" for r in res["rows"])


def test_regression_incompatible_diffs_against_the_unmatched_baseline_group_and_keeps_missing_ones():
    # baseline: weights 1.0, 0.5, 0.25; candidate: 1.0 (matches), 0.75 (changed); which baseline group it stands
    # against must be an unmatched one (never the matched 1.0), and the other unmatched one is still MISSING
    base = _runs() + _runs(reg_weight=0.5) + _runs(reg_weight=0.25)
    cand = _runs() + _runs(reg_weight=0.75)
    res = regression(base, cand)
    status = [r for r in res["rows"] if r["metric"] == "*"]
    assert res["exit_code"] == 2
    incompatible = [r for r in status if r["verdict"] == "INCOMPATIBLE"]
    assert len(incompatible) == 1 and "weight=0.5 → weight=0.75" in incompatible[0]["note"]
    missing = [r for r in status if r["verdict"] == "MISSING"]
    assert len(missing) == 1 and missing[0]["config_hash"] == base[-1]["config_hash"]


# -- text memorization: extraction -----------------------------------------------------------------------------


def _mem_runs(train_at_largest: dict, test_at_largest: dict) -> list[dict]:
    """One model, N in (100, 200, 400), 3 seeds; extraction falls from 0.5; the largest N's rates per seed given."""
    recs = []
    for j, n in enumerate((100, 200, 400)):
        for seed in range(3):
            last = j == 2
            metrics = {
                "test_ce": 3.0 + 0.1 * j + 0.01 * seed,
                "train_ce": 1.0,
                "mem_u_bits": 100.0 + seed,
                "mem_u_nonmember_bits_per_seq": 0.1,
                "mi_f1": 0.9 - 0.1 * j,
                "mi_auc": 0.9,
                "extract_train_p32": train_at_largest[seed] if last else 0.5,
                "extract_test_p32": test_at_largest[seed] if last else 0.0,
            }
            sizing = {"n_sequences": n, "n_params": 10_000, "capacity_ratio": 0.5 * (j + 1), "d_over_p": n / 1e4}
            recs.append(
                make_record(
                    task="text_memorization",
                    seed=seed,
                    metrics=metrics,
                    n_params=10_000,
                    data={"n_sequences": n},
                    summary={"sizing": sizing},
                )
            )
    return recs


def _extraction_of(recs: list[dict]) -> tuple[dict, dict, dict]:
    """(the memorization result, its one model's 32-token extraction, the paper's extraction_gap row)."""
    mem = analyse_memorization(recs)
    row = next(r for r in paper_table(recs)["rows"] if r["metric"] == "extraction_gap")
    return mem, mem["groups"][0]["models"][0]["extraction"]["32"], row


def test_extraction_converges_only_when_the_whole_interval_lies_in_the_band():
    # gaps 0.05, -0.04, 0.0: the CI holds 0 and |mean| < 0.01, but it spans ±0.1: the data show nothing
    mem, ex, row = _extraction_of(_mem_runs({0: 0.15, 1: 0.06, 2: 0.1}, {0: 0.1, 1: 0.1, 2: 0.1}))
    assert ex["gap_at_largest_n"]["ci_low"] < -0.01 and abs(ex["gap_at_largest_n"]["mean"]) < 0.01
    assert not ex["converges_to_test"] and row["verdict"] == "inconclusive"  # report and paper: the same rule
    assert ex["convergence"] == "inconclusive"
    md = render(mem, "md")
    assert "convergence inconclusive" in md and "lies within 0 ± 0.01" in md
    # gaps within ±0.002: converges, in both
    _, ex, row = _extraction_of(_mem_runs({0: 0.101, 1: 0.1, 2: 0.099}, {0: 0.1, 1: 0.1, 2: 0.1}))
    assert ex["convergence"] == "converges" and ex["converges_to_test"] and row["verdict"] == "replicates"


def test_paper_extraction_gap_pairs_each_run_with_its_own_seed():
    # seed 0 lacks a training rate at the largest N: seeds 1 and 2 have gap 0 each; pairing the remaining training
    # values with the test values in list order would read 0.5 - 0.0 and 0.2 - 0.5
    _, ex, row = _extraction_of(_mem_runs({0: None, 1: 0.5, 2: 0.2}, {0: 0.0, 1: 0.5, 2: 0.2}))
    assert row["n"] == 2 and row["measured"] == 0.0
    assert ex["gap_by_seed"] == {"1": 0.0, "2": 0.0}


# -- the sd behind the MDE -------------------------------------------------------------------------------------


def test_compare_returns_the_sd_its_mde_used():
    a, b = [3.1, 3.4, 2.9, 3.3], [3.0, 3.1, 3.05, 3.2]
    for paired in (True, False):
        res = stats.compare(a, b, paired=paired, higher_is_better=False)
        n_b = None if paired else len(b)
        assert res["mde"] == pytest.approx(stats.mde(res["sd_delta"], len(a), paired=paired, n_b=n_b))
    d = np.subtract(a, b)
    assert stats.compare(a, b, paired=True, higher_is_better=False)["sd_delta"] == pytest.approx(d.std(ddof=1))


def test_degenerate_comparison_reports_no_sd():
    # the same difference for every seed up to float rounding (sd ~ 1e-16): the test is degenerate, and the sd
    # behind the MDE is None like the MDE itself, not the rounding noise
    recs = []
    for s, (base, gapt) in enumerate(((3.3, 3.2), (2.2, 2.1), (1.1, 1.0))):
        recs += [
            make_record(method="baseline", seed=s, metrics={"val_ce": base}),
            make_record(method="gapt", seed=s, metrics={"val_ce": gapt}),
        ]
    ce = next(c for c in build_report(recs)["comparisons"] if c["metric"] == "val_ce")
    assert ce["degenerate"] and ce["mde"] is None and ce["sd_delta"] is None


# -- the memorization tables print the constants the analysis applied ------------------------------------------


def test_memorization_tables_print_the_results_bands_and_law():
    mem = analyse_memorization(_mem_runs({0: 0.101, 1: 0.1, 2: 0.099}, {0: 0.1, 1: 0.1, 2: 0.1}))
    md = render(mem, "md")
    assert "F1 = ½[1 + 1.34·σ(−0.034·(977·|D|/P − 33.14))]" in md and "within 0 ± 0.01" in md
    mem["paper"].update(dd_factor=3.0, extraction_band=0.05)
    mem["paper"]["mi_law"].update(c1=1.5, c3=12.0)
    for m in mem["groups"][0]["models"]:
        m["double_descent"].update(located=True, within_factor=True)
    md = render(mem, "md")
    assert "within ×3 of 1" in md and "×2" not in md and "within 0 ± 0.05" in md
    assert "F1 = ½[1 + 1.5·σ(−0.034·(977·|D|/P + 12))]" in md


# -- one home for the display pieces the site shares -----------------------------------------------------------


def test_display_pieces_have_one_home_the_site_can_import():
    import importlib

    from gapt_bench.results import analysis
    from gapt_bench.results.analysis.tables import Table

    render_module = importlib.import_module(
        "gapt_bench.results.analysis.render"
    )  # the package's `render` is the function

    empty = Table("t", [("a", "A"), ("b", "B")], [])
    sparse = Table("t", [("a", "A"), ("b", "B")], [{"a": "1", "b": ""}])
    assert analysis.visible_columns(empty) == [("a", "A"), ("b", "B")]  # an empty table keeps its header
    assert analysis.visible_columns(sparse) == [("a", "A")]
    assert analysis.ARROWS == {"min": "↓", "max": "↑"}
    # every verdict the analyses print has a tone, and the rich colours follow the tones
    verdicts = {
        "better",
        "worse",
        "inconclusive",
        "replicates",
        "does not",
        "smaller effect",
        "smaller or none",
        "no effect",
        "opposite effect",
        "below the claim",
        "above the claim",
        "REGRESSION",
        "IMPROVED",
        "WARN",
        "INCONCLUSIVE",
        "INCOMPATIBLE",
        "no runs",
    }
    assert set(analysis.VERDICT_TONE) == verdicts
    style = render_module.VERDICT_STYLE
    assert style["better"] == style["replicates"] == "green" and style["REGRESSION"] == "bold red"
    assert style["INCOMPATIBLE"] == "bold magenta" and style["no runs"] == "dim" and "PASS" not in style


# -- capacity: the median best N -------------------------------------------------------------------------------


def test_best_n_median_is_the_median_over_seeds():
    # two seeds; seed 0 memorizes most at N=100, seed 1 at N=200: the median is 150, not the upper middle (200)
    recs = []
    for seed, best in ((0, 100), (1, 200)):
        for n in (100, 200):
            mem = 900.0 if n == best else 800.0
            recs.append(
                make_record(
                    "synthetic_capacity",
                    "baseline",
                    seed,
                    {
                        "mem_bits": mem,
                        "data_bits": 1000.0,
                        "bits_per_param": mem / 1e4,
                        "heldout_ok": 1.0,
                        "heldout_bits_per_token": 6.0,
                    },
                    data={"n_sequences": n},
                    n_params=10_000,
                )
            )
    model = analyse_capacity(recs)["groups"][0]["models"][0]
    assert model["best_n"] == [100, 200] and model["best_n_median"] == 150
    assert "best N (median over seeds)" in render(analyse_capacity(recs), "md")
