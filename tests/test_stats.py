"""gapt_bench.stats against scipy, R's p.adjust and simulation."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from gapt_bench import stats


def test_describe_t_interval_and_std():
    x = [3.30, 3.28, 3.31, 3.27, 3.29]
    d = stats.describe(x)
    assert d["n"] == 5 and d["values"] == x and d["ci_method"] == "t"
    assert d["mean"] == pytest.approx(np.mean(x))
    assert d["std"] == pytest.approx(np.std(x, ddof=1))
    lo, hi = st.t.interval(0.95, 4, loc=np.mean(x), scale=st.sem(x))
    assert (d["ci_low"], d["ci_high"]) == pytest.approx((lo, hi))
    assert "boot_low" not in d


def test_describe_bootstrap_from_ten_and_reproducible():
    x = np.random.default_rng(1).normal(3.3, 0.02, 12)
    d1, d2 = stats.describe(x), stats.describe(x)
    assert d1["boot_low"] == d2["boot_low"] and d1["boot_high"] == d2["boot_high"]
    assert d1["boot_low"] < d1["mean"] < d1["boot_high"]


def test_describe_degenerate():
    assert stats.describe([]) ["mean"] is None
    one = stats.describe([1.5])
    assert one["n"] == 1 and one["std"] is None and one["ci_low"] is None
    # NaN/None are not replicates
    assert stats.describe([1.0, float("nan"), None, 2.0])["n"] == 2


def test_t_interval_coverage_near_95_percent():
    rng = np.random.default_rng(123)
    sims, n, mu = 2000, 5, 2.0
    data = rng.normal(mu, 1.5, size=(sims, n))
    hits = sum(lo <= mu <= hi for lo, hi in (stats.t_interval(row) for row in data))
    assert 0.935 <= hits / sims <= 0.965


def test_welch_matches_scipy():
    a = [3.10, 3.15, 3.12, 3.20, 3.11]
    b = [3.30, 3.26, 3.35, 3.28]
    r = stats.compare(a, b, paired=False, higher_is_better=False)
    ref = st.ttest_ind(a, b, equal_var=False)
    assert r["test"] == "welch_t" and r["p"] == pytest.approx(ref.pvalue, rel=1e-12)
    assert r["t"] == pytest.approx(ref.statistic)
    assert r["p_less"] == pytest.approx(st.ttest_ind(a, b, equal_var=False, alternative="less").pvalue)
    assert r["delta"] == pytest.approx(np.mean(a) - np.mean(b))
    assert r["rel_delta"] == pytest.approx(r["delta"] / np.mean(b))
    ci = ref.confidence_interval(0.95)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((ci.low, ci.high))
    assert r["verdict_hint"] == "better" and r["effect_size"] < 0


def test_paired_matches_scipy_and_pairs_matter():
    b = np.array([3.30, 3.25, 3.40, 3.28, 3.35])
    a = b - np.array([0.05, 0.04, 0.06, 0.05, 0.045])
    r = stats.compare(a, b, paired=True, higher_is_better=False)
    ref = st.ttest_rel(a, b)
    assert r["test"] == "paired_t" and r["n"] == 5
    assert r["p"] == pytest.approx(ref.pvalue, rel=1e-12)
    ci = ref.confidence_interval(0.95)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((ci.low, ci.high))
    d = a - b
    j = stats.hedges_correction(4)
    assert r["effect_size"] == pytest.approx(j * d.mean() / d.std(ddof=1))
    # the paired design has far more power here than Welch
    assert r["p"] < stats.compare(a, b, paired=False, higher_is_better=False)["p"]
    with pytest.raises(ValueError):
        stats.compare([1, 2, 3], [1, 2], paired=True, higher_is_better=True)


def test_hedges_g_welch_formula():
    a, b = [1.0, 2.0, 3.0, 4.0], [2.0, 3.0, 4.0, 6.0]
    r = stats.compare(a, b, paired=False, higher_is_better=True)
    sp = math.sqrt((3 * np.var(a, ddof=1) + 3 * np.var(b, ddof=1)) / 6)
    approx_j = 1 - 3 / (4 * 8 - 9)
    assert r["effect_size"] == pytest.approx(approx_j * (np.mean(a) - np.mean(b)) / sp, rel=2e-3)


def test_mann_whitney_p_min_and_note():
    r = stats.compare([1, 2, 3], [4, 5, 6], paired=False, higher_is_better=True)
    assert r["mwu_p_min"] == pytest.approx(0.1)
    assert r["mwu_p"] == pytest.approx(st.mannwhitneyu([1, 2, 3], [4, 5, 6]).pvalue)
    assert r["mwu_note"] == "rank test uninformative"
    r5 = stats.compare(range(5), range(5, 10), paired=False, higher_is_better=True)
    assert r5["mwu_p_min"] == pytest.approx(2 / 252) and r5["mwu_note"] is None


@pytest.mark.parametrize("a,b,paired", [
    ([1.0], [2.0], False),                      # n < 2
    ([1.0, 1.0, 1.0], [2.0, 2.0, 2.0], False),  # zero variance in both arms
    ([1.1, 2.2, 3.3], [1.0, 2.1, 3.2], True),   # constant difference (up to float rounding)
    ([1.0], [2.0], True),
])
def test_degenerate_is_inconclusive_never_p0(a, b, paired):
    r = stats.compare(a, b, paired=paired, higher_is_better=False)
    assert r["p"] is None and r["verdict_hint"] == "inconclusive" and r["degenerate"]
    assert r["ci_low"] is None and r["effect_size"] is None


def test_holm_matches_r():
    # R: p.adjust(c(0.01, 0.04, 0.03, 0.005), "holm") -> 0.03 0.06 0.06 0.02
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # None passes through and does not count towards m
    out = stats.holm([0.01, None, 0.04, 0.03, 0.005])
    assert out[1] is None and out[0] == pytest.approx(0.03) and out[2] == pytest.approx(0.06)
    assert stats.holm([]) == [] and stats.holm([None]) == [None]
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_verdict():
    assert stats.verdict(-0.1, 0.01, higher_is_better=False) == "better"
    assert stats.verdict(-0.1, 0.01, higher_is_better=True) == "worse"
    assert stats.verdict(0.1, 0.2, higher_is_better=True) == "no significant difference"
    assert stats.verdict(0.1, None, higher_is_better=True) == "inconclusive"
