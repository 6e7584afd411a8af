"""Analysis fixes from the review: gate matching, sd of the MDE, extraction convergence, shared display names."""
from __future__ import annotations

from factories import make_record

from gapt_bench.analysis import gate


def _runs(method: str = "baseline", reg_weight: float = 1.0, shift: float = 0.0) -> list[dict]:
    return [make_record(method=method, seed=s, reg_weight=reg_weight, metrics={"val_ce": 3.3 + shift + 0.01 * s})
            for s in range(3)]


def _verdicts(res: dict) -> dict[tuple[str, str], str]:
    return {(r["method"], r["metric"], r["setup"]): r["verdict"] for r in res["rows"]}


def test_gate_a_new_configuration_beside_matching_ones_is_new_not_incompatible():
    base = _runs()
    cand = _runs() + _runs(reg_weight=0.5)  # the matched configuration plus one more of the same method
    res = gate(base, cand)
    assert res["exit_code"] == 0
    assert sorted(r["verdict"] for r in res["rows"] if r["metric"] == "*") == ["NEW"]
    assert any(r["verdict"] == "PASS" and r["metric"] == "val_ce" for r in res["rows"])


def test_gate_incompatible_diffs_against_the_unmatched_baseline_group_and_keeps_missing_ones():
    # baseline: weights 1.0, 0.5, 0.25; candidate: 1.0 (matches), 0.75 (changed); which baseline group it stands
    # against must be an unmatched one (never the matched 1.0), and the other unmatched one is still MISSING
    base = _runs() + _runs(reg_weight=0.5) + _runs(reg_weight=0.25)
    cand = _runs() + _runs(reg_weight=0.75)
    res = gate(base, cand)
    status = [r for r in res["rows"] if r["metric"] == "*"]
    assert res["exit_code"] == 2
    incompatible = [r for r in status if r["verdict"] == "INCOMPATIBLE"]
    assert len(incompatible) == 1 and "weight=0.5 → weight=0.75" in incompatible[0]["note"]
    missing = [r for r in status if r["verdict"] == "MISSING"]
    assert len(missing) == 1 and missing[0]["config_hash"] == base[-1]["config_hash"]
