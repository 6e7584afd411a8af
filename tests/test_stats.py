"""gapt_bench.results.stats against scipy, R's p.adjust and simulation."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as st

from gapt_bench.results import stats


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
    assert stats.describe([])["mean"] is None
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


@pytest.mark.parametrize(
    "a,b,paired",
    [
        ([1.0], [2.0], False),  # n < 2
        ([1.0, 1.0, 1.0], [2.0, 2.0, 2.0], False),  # zero variance in both arms
        ([1.1, 2.2, 3.3], [1.0, 2.1, 3.2], True),  # constant difference (up to float rounding)
        ([1.0], [2.0], True),
    ],
)
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


# --- power: minimum detectable effect, seeds needed -------------------------------------------------------------


@pytest.mark.parametrize(
    "n,alpha,power",
    [
        (2, 0.05, 0.8),
        (3, 0.05, 0.8),
        (3, 0.1, 0.5),
        (5, 0.05, 0.8),
        (5, 0.01, 0.9),
        (10, 0.05, 0.8),
        (10, 0.1, 0.5),
    ],
)
def test_mde_matches_statsmodels(n, alpha, power):
    from statsmodels.stats.power import TTestIndPower, TTestPower

    sd = 0.37  # mde is absolute: divided by sd it is statsmodels' effect size in sd units
    ref = TTestPower().solve_power(effect_size=None, nobs=n, alpha=alpha, power=power)
    assert stats.mde(sd, n, alpha, power, paired=True) / sd == pytest.approx(ref, abs=1e-4)
    ref_ind = TTestIndPower().solve_power(effect_size=None, nobs1=n, alpha=alpha, power=power)
    assert stats.mde(sd, n, alpha, power, paired=False) / sd == pytest.approx(ref_ind, abs=1e-4)
    # and the power at the mde is the requested power
    assert stats.power_of(stats.mde(sd, n, alpha, power), sd, n, alpha) == pytest.approx(power, abs=1e-9)


def test_mde_unequal_arms_matches_statsmodels():
    from statsmodels.stats.power import TTestIndPower

    ref = TTestIndPower().solve_power(effect_size=None, nobs1=3, ratio=5 / 3, alpha=0.05, power=0.8)
    assert stats.mde(1.0, 3, paired=False, n_b=5) == pytest.approx(ref, abs=1e-4)


def test_mde_degenerate():
    assert stats.mde(1.0, 1) is None and stats.mde(1.0, 1, paired=False) is None
    assert stats.mde(1.0, 5, paired=False, n_b=1) is None
    for sd in (None, 0.0, float("nan"), float("inf"), -1.0):
        assert stats.mde(sd, 5) is None  # sd == 0: the t statistic is undefined, so None rather than 0.0
    with pytest.raises(ValueError):
        stats.mde(1.0, 5, alpha=0.05, power=0.04)


def test_mde_shrinks_with_seeds_and_exceeds_normal_approximation():
    m = [stats.mde(1.0, n) for n in (2, 3, 5, 10, 30)]
    assert all(x > y for x, y in itertools.pairwise(m))
    z = (st.norm.ppf(0.975) + st.norm.ppf(0.8)) / math.sqrt(3)
    assert stats.mde(1.0, 3) > 1.5 * z  # the normal approximation is far too optimistic at 3 seeds


@pytest.mark.parametrize(
    "effect,paired",
    [
        (0.02, True),
        (0.05, True),
        (0.05, False),
        (0.2, True),
        (0.2, False),
        (0.5, True),
        (0.5, False),
        (1.0, True),
        (1.0, False),
        (3.0, True),
        (5.0, True),
        (5.0, False),
    ],
)
def test_seeds_needed_matches_statsmodels(effect, paired):
    from statsmodels.stats.power import TTestIndPower, TTestPower

    sd = 2.0
    if paired:
        ref = TTestPower().solve_power(effect_size=effect, nobs=None, alpha=0.05, power=0.8)
    else:
        ref = TTestIndPower().solve_power(effect_size=effect, nobs1=None, alpha=0.05, power=0.8)
    assert stats.seeds_needed(effect * sd, sd, paired=paired, max_n=100_000) == max(2, math.ceil(ref))
    assert stats.seeds_needed(-effect * sd, sd, paired=paired, max_n=100_000) == max(2, math.ceil(ref))


def test_seeds_needed_n2_edge_against_statsmodels_power():
    from statsmodels.stats.power import TTestPower

    def sm_power(d, n):
        # statsmodels' two-sided power is NaN here (scipy's nct lower tail at df 1-2 and large nc); the lower tail
        # P(T < -crit) <= Phi(-d sqrt(n)) < 1e-25 at these d, so the one-sided upper tail at alpha/2 is the power
        return TTestPower().power(d, n, 0.025, alternative="larger")

    edge = stats.mde(1.0, 2)  # ~11.55 sd: the smallest effect 2 pairs detect with power 0.8
    for d in (edge * 1.01, 50.0):  # at or above the edge: 2 pairs suffice
        assert stats.seeds_needed(d, 1.0) == 2 and sm_power(d, 2) >= 0.8
    d = edge * 0.99
    assert sm_power(d, 2) < 0.8 <= sm_power(d, 3)
    assert stats.seeds_needed(d, 1.0) == 3
    assert stats.power_of(d, 1.0, 2) == pytest.approx(sm_power(d, 2), abs=1e-12)


def test_seeds_needed_none_cases():
    assert stats.seeds_needed(0.0, 1.0) is None and stats.seeds_needed(None, 1.0) is None
    assert stats.seeds_needed(1.0, None) is None and stats.seeds_needed(1.0, float("nan")) is None
    assert stats.seeds_needed(1.0, 0.0) is None
    assert stats.seeds_needed(0.001, 1.0) is None  # needs ~7.8 million pairs > max_n
    assert stats.seeds_needed(0.001, 1.0, max_n=10_000_000) > 7_000_000


@pytest.mark.parametrize("n,n_b,alpha", [(2, 2, 0.05), (3, 3, 0.05), (3, 7, 0.01), (5, 5, 0.1), (10, 4, 0.05)])
@pytest.mark.parametrize("d", [0.0, 0.3, 1.0, 2.5, 4.0])  # statsmodels is NaN at larger d for small df
def test_power_of_matches_statsmodels(n, n_b, alpha, d):
    from statsmodels.stats.power import TTestIndPower, TTestPower

    sd = 0.5
    ref = TTestPower().power(d, n, alpha)
    assert stats.power_of(d * sd, sd, n, alpha, paired=True) == pytest.approx(ref, abs=1e-12)
    ref_ind = TTestIndPower().power(d, n, alpha, ratio=n_b / n)
    assert stats.power_of(-d * sd, sd, n, alpha, paired=False, n_b=n_b) == pytest.approx(ref_ind, abs=1e-12)


def test_power_of_large_effect_at_df1_is_finite():
    # scipy's nct.cdf(-crit, 1, nc) is NaN for some nc around 8-40; the power must still be a number
    p = [stats.power_of(d, 1.0, 2) for d in np.linspace(5, 30, 26)]
    assert all(math.isfinite(x) for x in p) and all(x <= y for x, y in itertools.pairwise(p))
    assert stats.power_of(1.0, 1.0, 1) is None and stats.power_of(None, 1.0, 5) is None


def test_compare_reports_mde_and_seeds_needed():
    b = np.array([3.30, 3.25, 3.40, 3.28, 3.35])
    a = b - np.array([0.05, 0.04, 0.06, 0.05, 0.045])
    r = stats.compare(a, b, paired=True, higher_is_better=False)
    sd_d = (a - b).std(ddof=1)
    assert r["mde"] == pytest.approx(stats.mde(sd_d, 5))
    assert r["mde_rel"] == pytest.approx(r["mde"] / b.mean())
    assert r["seeds_needed"] == stats.seeds_needed(r["delta"], sd_d)
    assert r["power_note"] == "paired t, alpha 0.05, power 0.8"

    a2, b2 = [3.10, 3.15, 3.12, 3.20, 3.11], [3.30, 3.26, 3.35, 3.28]
    r2 = stats.compare(a2, b2, paired=False, higher_is_better=False, alpha=0.01)
    pooled = math.sqrt((4 * np.var(a2, ddof=1) + 3 * np.var(b2, ddof=1)) / 7)
    assert r2["mde"] == pytest.approx(stats.mde(pooled, 5, 0.01, paired=False, n_b=4))
    assert r2["seeds_needed"] == stats.seeds_needed(r2["delta"], pooled, 0.01, paired=False)
    assert r2["power_note"] == "two-sample t (pooled sd), alpha 0.01, power 0.8"

    deg = stats.compare([1.0, 1.0, 1.0], [2.0, 2.0, 2.0], paired=False, higher_is_better=False)
    assert deg["mde"] is None and deg["mde_rel"] is None and deg["seeds_needed"] is None
    assert deg["rel_ci_low"] is None and deg["rel_ci_method"] is None


def test_compare_keeps_existing_keys_in_order():
    r = stats.compare([1.0, 2.0, 3.0], [2.0, 3.0, 5.0], paired=True, higher_is_better=True)
    old = [
        "n",
        "n_a",
        "n_b",
        "mean_a",
        "mean_b",
        "delta",
        "rel_delta",
        "ci_low",
        "ci_high",
        "rel_ci_low",
        "rel_ci_high",
        "test",
        "t",
        "df",
        "p",
        "p_greater",
        "p_less",
        "effect_size",
        "effect_size_kind",
        "mwu_p",
        "mwu_p_min",
        "mwu_note",
        "degenerate",
        "verdict_hint",
    ]
    assert list(r)[: len(old)] == old
    assert set(r) - set(old) == {
        "rel_ci_method",
        "rel_ci90_low",
        "rel_ci90_high",
        "mde",
        "mde_rel",
        "seeds_needed",
        "power_note",
        "sd_delta",
    }


# --- relative CI: the paired test's interval when seeds pair, the log ratio of means otherwise --------------------


def _log_ratio_ci(a, b, paired, confidence=0.95):
    """Independent numpy transcription of the delta-method interval for mean(a)/mean(b) - 1."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    ma, mb = a.mean(), b.mean()
    ca, cb = np.var(a, ddof=1) / (len(a) * ma**2), np.var(b, ddof=1) / (len(b) * mb**2)
    if paired:
        cov = np.sum((a - ma) * (b - mb)) / (len(a) - 1)
        var, df = ca + cb - 2 * cov / (len(a) * ma * mb), len(a) - 1
    else:
        var = ca + cb
        df = var**2 / (ca**2 / (len(a) - 1) + cb**2 / (len(b) - 1))
    q = st.t.ppf(0.5 + confidence / 2, df)
    return np.exp(np.log(ma / mb) - q * np.sqrt(var)) - 1, np.exp(np.log(ma / mb) + q * np.sqrt(var)) - 1


def test_rel_ci_collapse_stays_above_minus_100_percent():
    ref, method = [1.0, 1.2, 1.35], [0.02, 0.35, 0.06]  # matrix-based entropy >= 0, method collapses
    r = stats.compare(method, ref, paired=True, higher_is_better=True)
    assert r["ci_low"] / abs(r["mean_b"]) < -1  # the paired test's interval, scaled, passes -100%: clipped
    assert r["rel_ci_method"] == stats.REL_CI_PAIRED
    assert r["rel_ci_low"] == -1 and r["rel_ci_high"] == pytest.approx(r["ci_high"] / np.mean(ref))
    assert r["rel_ci_low"] <= r["rel_delta"] <= r["rel_ci_high"]
    assert r["rel_delta"] == pytest.approx(np.mean(method) / np.mean(ref) - 1)
    u = stats.compare(method, ref, paired=False, higher_is_better=True)  # unpaired: the log ratio of means
    assert u["rel_ci_method"] == stats.REL_CI_LOG and u["rel_ci_low"] > -1


def test_rel_ci_of_a_paired_metric_near_zero_agrees_with_the_paired_test():
    """The issue's quick-suite MBE: 1.14/1.28/1.14 -> 0.056/0.330/0.043, paired p = 0.002. The log ratio of the
    means put -50% and 0 both inside its interval; the paired interval excludes 0 as the test does."""
    r = stats.compare([0.056, 0.330, 0.043], [1.14, 1.28, 1.14], paired=True, higher_is_better=False)
    assert r["p"] == pytest.approx(0.00202, abs=1e-5)
    assert r["rel_ci_method"] == stats.REL_CI_PAIRED and r["rel_ci_high"] < 0
    assert (r["rel_ci_low"], r["rel_ci_high"]) == pytest.approx((-1.0, -0.7091), abs=1e-4)
    assert r["rel_ci90_low"] < r["rel_delta"] < r["rel_ci90_high"] < r["rel_ci_high"]


@pytest.mark.parametrize("paired", [True, False])
def test_rel_ci_log_ratio_close_to_linear_for_small_effects(paired):
    rng = np.random.default_rng(7)
    b = 3.3 + rng.normal(0, 0.03, 5)
    a = (b if paired else 3.3 + rng.normal(0, 0.03, 5)) - 0.01 + rng.normal(0, 0.01, 5)
    r = stats.compare(a, b, paired=paired, higher_is_better=False)
    lin_low, lin_high = r["ci_low"] / r["mean_b"], r["ci_high"] / r["mean_b"]
    width = lin_high - lin_low
    assert r["rel_ci_method"] == (stats.REL_CI_PAIRED if paired else stats.REL_CI_LOG)
    assert abs(r["rel_ci_low"] - lin_low) < 0.03 * width and abs(r["rel_ci_high"] - lin_high) < 0.03 * width
    assert _log_ratio_ci(a, b, paired) == pytest.approx((lin_low, lin_high), abs=0.03 * width)


def test_rel_ci_non_positive_value_falls_back_to_linear():
    a, b = [-0.1, 0.2, 0.3, 0.25], [1.0, 1.1, 1.2, 1.05]
    r = stats.compare(a, b, paired=True, higher_is_better=True)
    assert r["rel_ci_method"] == stats.REL_CI_PAIRED  # paired: the test's interval, not clipped (a value < 0)
    assert (r["rel_ci_low"], r["rel_ci_high"]) == pytest.approx((r["ci_low"] / np.mean(b), r["ci_high"] / np.mean(b)))
    r = stats.compare(a, b, paired=False, higher_is_better=True)
    assert r["rel_ci_method"] == "linear: delta CI / |reference mean|"
    r0 = stats.compare([0.0, 0.5, 0.4], [1.0, 1.1, 1.3], paired=False, higher_is_better=True)
    assert r0["rel_ci_method"].startswith("linear")
    assert r0["rel_ci_low"] == pytest.approx(r0["ci_low"] / np.mean([1.0, 1.1, 1.3]))


@pytest.mark.parametrize(
    "a,b,paired",
    [
        ([0.02, 0.35, 0.06], [1.0, 1.2, 1.35], True),
        ([3.10, 3.15, 3.12, 3.20, 3.11], [3.30, 3.26, 3.35, 3.28], False),
        ([0.5, 0.9, 0.7, 1.4, 0.6, 0.8], [1.0, 1.3, 0.9, 1.6, 1.1, 1.2], True),
        ([0.5, 0.9, 0.7], [1.0, 1.3, 0.9, 1.6, 1.1, 1.2], False),
    ],
)
def test_rel_ci_log_ratio_matches_brute_force(a, b, paired):
    r = stats.compare(a, b, paired=paired, higher_is_better=True)
    if paired:  # the paired test's interval over |reference mean|, clipped at -100%
        want = (max(r["ci_low"] / np.mean(b), -1.0), max(r["ci_high"] / np.mean(b), -1.0))
    else:
        want = _log_ratio_ci(a, b, paired)
    assert (r["rel_ci_low"], r["rel_ci_high"]) == pytest.approx(want, rel=1e-10)
    assert r["rel_ci_low"] <= r["rel_delta"] <= r["rel_ci_high"]


def test_rel_ci_degenerate_is_none():
    for a, b, paired in [([1.0], [2.0], True), ([1.0], [2.0, 3.0], False), ([1.1, 2.2, 3.3], [1.0, 2.1, 3.2], True)]:
        r = stats.compare(a, b, paired=paired, higher_is_better=True)
        assert r["rel_ci_low"] is None and r["rel_ci_high"] is None and r["rel_ci_method"] is None


def test_median_interval_is_distribution_free_order_statistics():
    assert stats.median_interval(range(15)) == (7.0, 3.0, 11.0)  # k = 4: coverage 1 - 2 P(Bin(15, .5) <= 3) = 0.965
    assert stats.median_interval([5, 1, 4, 2, 6, 3]) == (3.5, 1.0, 6.0)  # n = 6: the extremes (coverage 0.969)
    assert stats.median_interval(range(5)) is None  # no order statistics cover the median at 95%
    rng = np.random.default_rng(0)  # coverage over draws from a skewed distribution
    hits = sum(lo <= 1.0 <= hi for _, lo, hi in (stats.median_interval(rng.lognormal(0, 1, 15)) for _ in range(2000)))
    assert 0.95 <= hits / 2000 <= 0.99


def test_bound_check_fails_only_when_the_whole_interval_is_beyond_the_bound():
    noisy = [0.88, 0.93, 0.95, 0.96, 0.97, 0.98, 0.99, 1.0, 1.01, 1.02, 1.04, 1.07, 1.1, 1.12, 1.14]
    assert stats.bound_check(noisy, 0.95, higher_is_better=True)["verdict"] == "pass"
    slow = [r * 0.8 for r in noisy]  # an injected 20% slowdown of the same rounds
    res = stats.bound_check(slow, 0.95, higher_is_better=True)
    assert res["verdict"] == "fail" and res["high"] < 0.95
    straddling = [r * 0.95 for r in noisy]
    assert stats.bound_check(straddling, 0.95, higher_is_better=True)["verdict"] == "inconclusive"
    assert stats.bound_check([1.3] * 15, 1.10, higher_is_better=False)["verdict"] == "fail"
    assert stats.bound_check([1.0, 1.2], 1.10, higher_is_better=False)["verdict"] == "inconclusive"
