"""Statistics over seeds: intervals, two-arm tests, effect sizes, Holm correction and verdicts.

The replicate is the seed (one training run), so samples are small (3-10). Everything here is therefore exact
small-sample machinery (t-intervals, Welch/paired t-tests, Hedges' g) plus two robustness extras: a bootstrap CI
once n >= 10, and a Mann-Whitney U test reported together with its minimum attainable p so that nobody reads
"p = 0.10" with 3 seeds against 3 as evidence of anything.

Every comparison also says what it could have seen: the minimum detectable effect (MDE) at its own n and observed
noise, and how many seeds it would take to detect the observed delta (exact noncentral-t power, two-sided test).
The relative CI of a comparison between strictly positive metrics is the CI of the ratio of means on the log scale
(delta method), so it never crosses -100%; otherwise it is the delta CI divided by |reference mean|.

Degenerate inputs (fewer than two values, or no variance to estimate a standard error from) give p = None and the
verdict "inconclusive", never p = 0. Pure numpy/scipy; no torch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np


class _OnFirstUse:
    """A module imported on first attribute access: scipy takes ~1.6 s to import, and `gapt-bench --help`, `ls`
    or a verb that never tests anything should not pay for it."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        import importlib

        return getattr(importlib.import_module(self._name), attr)


optimize = _OnFirstUse("scipy.optimize")
st = _OnFirstUse("scipy.stats")

CONFIDENCE = 0.95
BOOTSTRAP_MIN_N = 10
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
# Relative size below which a standard deviation counts as zero: differences like 1.1 - 1.0 vs 2.2 - 2.1 are
# "identical" up to float rounding, and a t-test on rounding noise would print p ~ 1e-15.
ZERO_SD_REL = 1e-12

POWER = 0.8  # conventional target power for the MDE / seeds-needed report
SEEDS_MAX_N = 10_000

VERDICTS = ("better", "worse", "no significant difference", "inconclusive")


def as_array(values: Iterable[Any]) -> np.ndarray:
    """Finite floats only: None/NaN/inf (a failed evaluation) are not replicates."""
    x = np.asarray([float(v) for v in values if v is not None], dtype=float)
    return x[np.isfinite(x)]


def _is_zero_sd(sd: float, *scales: float) -> bool:
    scale = max([abs(s) for s in scales] + [1e-300])
    return sd <= ZERO_SD_REL * scale


def t_interval(x: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float] | tuple[None, None]:
    """Student-t interval for the mean; (None, None) when n < 2."""
    n = len(x)
    if n < 2:
        return None, None
    half = float(st.t.ppf(0.5 + confidence / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    m = float(x.mean())
    return m - half, m + half


def bootstrap_interval(
    x: np.ndarray, confidence: float = CONFIDENCE, seed: int = BOOTSTRAP_SEED, method: str = "BCa"
) -> tuple[float, float]:
    """Bootstrap CI of the mean with a fixed generator, so a report is reproducible byte for byte."""
    if np.ptp(x) == 0:
        return float(x[0]), float(x[0])
    kwargs: dict[str, Any] = dict(n_resamples=BOOTSTRAP_RESAMPLES, confidence_level=confidence, method=method)
    try:
        res = st.bootstrap((x,), np.mean, rng=np.random.default_rng(seed), **kwargs)
    except TypeError:  # scipy < 1.15 names the generator random_state
        res = st.bootstrap((x,), np.mean, random_state=np.random.default_rng(seed), **kwargs)
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (math.isfinite(low) and math.isfinite(high)) and method != "percentile":
        return bootstrap_interval(x, confidence, seed, "percentile")
    return low, high


def median_interval(values: Iterable[Any], confidence: float = CONFIDENCE) -> tuple[float, float, float] | None:
    """(median, low, high): a distribution-free interval for the median from order statistics.

    The interval [x_(k), x_(n+1-k)] covers the median with probability 1 - 2 P(Binomial(n, 1/2) < k), whatever the
    distribution; k is the largest order with coverage >= `confidence` (so the coverage is at least that, exact
    where the binomial allows). For paired, interleaved timing rounds this is what the speed checks read: no
    normality assumed, robust to one noisy round. None when n is too small for the coverage (n < 6 at 95%).
    """
    x = np.sort(as_array(values))
    n = x.size
    k = 0
    for j in range(1, n // 2 + 1):
        if 1 - 2 * st.binom.cdf(j - 1, n, 0.5) >= confidence:
            k = j
    if k == 0:
        return None
    return float(np.median(x)), float(x[k - 1]), float(x[n - k])


def bound_check(
    values: Iterable[Any], bound: float, higher_is_better: bool, confidence: float = CONFIDENCE
) -> dict[str, Any]:
    """A measured ratio against a fixed bound, decided on the median's interval (`median_interval`).

    "fail" only when the whole interval lies on the wrong side of the bound (noise alone then fails with
    probability under (1 - confidence) / 2); "pass" when the whole interval is on the right side; "inconclusive"
    when it straddles the bound (not a failure: the rounds cannot tell). Too few rounds for an interval is
    "inconclusive" too.
    """
    found = median_interval(values, confidence)
    n = as_array(values).size
    if found is None:
        return {"median": None, "low": None, "high": None, "n": n, "verdict": "inconclusive"}
    med, low, high = found
    good_side = low >= bound if higher_is_better else high <= bound
    bad_side = high < bound if higher_is_better else low > bound
    verdict = "fail" if bad_side else "pass" if good_side else "inconclusive"
    return {"median": med, "low": low, "high": high, "n": n, "verdict": verdict}


def describe(values: Iterable[Any], confidence: float = CONFIDENCE) -> dict:
    """n, mean, sample std (ddof=1) and a t-interval; plus a BCa bootstrap CI (boot_low/boot_high) when n >= 10.

    The t-interval stays the primary CI (ci_method "t") so groups of different sizes are read the same way.
    """
    x = as_array(values)
    n = len(x)
    out: dict[str, Any] = {
        "n": n,
        "mean": float(x.mean()) if n else None,
        "std": None,
        "ci_low": None,
        "ci_high": None,
        "ci_method": None,
        "values": x.tolist(),
    }
    if n >= 2:
        out["std"] = float(x.std(ddof=1))
        out["ci_low"], out["ci_high"] = t_interval(x, confidence)
        out["ci_method"] = "t"
    if n >= BOOTSTRAP_MIN_N:
        out["boot_low"], out["boot_high"] = bootstrap_interval(x, confidence)
    return out


def hedges_correction(df: float) -> float | None:
    """Exact small-sample bias factor J(df) = Γ(df/2) / (sqrt(df/2) Γ((df-1)/2)); None when df < 2."""
    if df < 2:
        return None
    return math.exp(math.lgamma(df / 2) - math.lgamma((df - 1) / 2)) / math.sqrt(df / 2)


def min_rank_p(n: int, m: int) -> float:
    """Smallest two-sided Mann-Whitney p attainable with n vs m values: 2 / C(n+m, n) (3 vs 3 -> 0.10)."""
    if n < 1 or m < 1:
        return 1.0
    log_comb = math.lgamma(n + m + 1) - math.lgamma(n + 1) - math.lgamma(m + 1)  # no overflow at large n
    return min(1.0, 2.0 * math.exp(-log_comb))


def _valid_sd(sd: float | None) -> bool:
    """A usable noise level: finite and > 0. With sd == 0 the t statistic is undefined (compare() calls that case
    degenerate), so no power/MDE is reported for it rather than the limit value 0."""
    return sd is not None and math.isfinite(sd) and sd > 0


def _check_levels(alpha: float, power: float | None = None) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    if power is not None and not alpha < power < 1:
        raise ValueError(f"power must lie in (alpha, 1) = ({alpha}, 1), got {power}")


def _design(n: int, paired: bool, n_b: int | None) -> tuple[float, float] | None:
    """(df, effective n) of the t-test, or None when it has fewer than 2 replicates per arm.

    Paired: one-sample t on n differences, df = n - 1, noncentrality = d * sqrt(n).
    Unpaired: pooled two-sample t, df = n + n_b - 2, noncentrality = d * sqrt(n n_b / (n + n_b)).
    """
    if paired:
        return (float(n - 1), float(n)) if n >= 2 else None
    m = n if n_b is None else n_b
    if n < 2 or m < 2:
        return None
    return float(n + m - 2), n * m / (n + m)


def _power_std(d: float, df: float, n_eff: float, alpha: float) -> float:
    """Exact two-sided power at standardized effect d: P(|T| > t_{1-alpha/2, df}), T ~ nct(df, d sqrt(n_eff))."""
    crit = float(st.t.isf(alpha / 2, df))
    nc = abs(d) * math.sqrt(n_eff)
    upper = float(st.nct.sf(crit, df, nc))
    # Lower tail P(T < -crit) as P(T' > crit), T' ~ nct(df, -nc): scipy's nct.cdf(-crit, df, nc) returns NaN for
    # some large nc at small df. T < 0 needs Z + nc < 0, so Phi(-nc) bounds it (and stands in for a NaN).
    bound = float(st.norm.sf(nc))
    lower = float(st.nct.sf(crit, df, -nc))
    return upper + (min(lower, bound) if math.isfinite(lower) else bound)


def power_of(
    effect: float | None, sd: float | None, n: int, alpha: float = 0.05, paired: bool = True, n_b: int | None = None
) -> float | None:
    """Probability that a two-sided t-test at `alpha` detects a true absolute `effect` (exact noncentral t).

    paired=True: one-sample t on n per-seed differences whose sd is `sd`. paired=False: pooled two-sample t with
    n and n_b (default n) per arm and common sd `sd`. None when effect is None, sd is unusable (None, <= 0,
    non-finite) or there are fewer than 2 replicates (per arm). effect = 0 gives alpha.
    """
    _check_levels(alpha)
    design = _design(n, paired, n_b)
    if effect is None or not math.isfinite(effect) or not _valid_sd(sd) or design is None:
        return None
    return _power_std(effect / sd, *design, alpha)  # type: ignore[operator]


def mde(
    sd: float | None, n: int, alpha: float = 0.05, power: float = POWER, paired: bool = True, n_b: int | None = None
) -> float | None:
    """Minimum detectable absolute effect: the |effect| whose exact two-sided t-test power at `alpha` is `power`.

    Same designs as power_of. Solved with brentq in sd units, then scaled by sd, so it is exact rather than the
    normal approximation (z_{1-alpha/2} + z_power) sd / sqrt(n), which is far too optimistic at 3-5 seeds.
    None when n < 2 (per arm) or sd is None, non-finite or 0: with sd == 0 the test statistic is undefined, so
    "any effect is detectable" (the limit 0.0) would claim something no test here can deliver.
    """
    _check_levels(alpha, power)
    design = _design(n, paired, n_b)
    if design is None or not _valid_sd(sd):
        return None
    df, n_eff = design

    def gap(d: float) -> float:
        return _power_std(d, df, n_eff, alpha) - power

    hi = 1.0
    for _ in range(64):  # power -> 1 as d -> inf for any df >= 1, so a bracket is found long before 2^64 sd
        if gap(hi) >= 0:
            break
        hi *= 2.0
    else:
        return None
    d = optimize.brentq(gap, 0.0, hi, xtol=1e-12, rtol=1e-12, maxiter=500)
    return float(d) * float(sd)  # type: ignore[arg-type]


def seeds_needed(
    effect: float | None,
    sd: float | None,
    alpha: float = 0.05,
    power: float = POWER,
    paired: bool = True,
    max_n: int = SEEDS_MAX_N,
) -> int | None:
    """Smallest n >= 2 (pairs if paired, per arm otherwise, arms equal) at which power_of(|effect|) >= power.

    None when effect is None/0/non-finite, sd is None/non-finite/<= 0 (see mde), or when even max_n seeds do not
    reach the power (the effect is too small against the noise to be worth a number).
    """
    _check_levels(alpha, power)
    if effect is None or not math.isfinite(effect) or effect == 0 or not _valid_sd(sd):
        return None
    d = abs(effect) / sd  # type: ignore[operator]

    def enough(n: int) -> bool:
        return _power_std(d, *_design(n, paired, None), alpha) >= power  # type: ignore[misc]

    if not enough(max(2, max_n)):
        return None
    lo, hi = 1, 2  # invariant: enough(hi) holds, lo is below the answer (or below 2)
    while not enough(hi):  # power grows with n: exponential search, then bisection
        lo, hi = hi, min(2 * hi, max(2, max_n))
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if enough(mid):
            hi = mid
        else:
            lo = mid
    return hi


def _mann_whitney(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 1 or len(b) < 1:
        return None
    if np.ptp(np.concatenate([a, b])) == 0:
        return 1.0
    p = float(st.mannwhitneyu(a, b, alternative="two-sided").pvalue)
    return p if math.isfinite(p) else None


def _paired(a: np.ndarray, b: np.ndarray, confidence: float) -> dict:
    d = a - b
    n = len(d)
    out: dict[str, Any] = {
        "test": "paired_t",
        "n": n,
        "t": None,
        "df": None,
        "p": None,
        "ci_low": None,
        "ci_high": None,
        "effect_size": None,
        "degenerate": None,
    }
    if n < 2:
        out["degenerate"] = "fewer than 2 pairs"
        return out
    sd = float(d.std(ddof=1))
    if _is_zero_sd(sd, a.mean(), b.mean()):
        out["degenerate"] = "zero variance in the per-seed differences"
        return out
    df = n - 1
    se = sd / math.sqrt(n)
    half = float(st.t.ppf(0.5 + confidence / 2, df)) * se
    res = st.ttest_rel(a, b)
    j = hedges_correction(df)
    out.update(
        t=float(res.statistic),
        df=float(df),
        p=float(res.pvalue),
        ci_low=float(d.mean()) - half,
        ci_high=float(d.mean()) + half,
        effect_size=None if j is None else j * float(d.mean()) / sd,
    )
    return out


def _welch(a: np.ndarray, b: np.ndarray, confidence: float) -> dict:
    na, nb = len(a), len(b)
    out: dict[str, Any] = {
        "test": "welch_t",
        "n": min(na, nb),
        "t": None,
        "df": None,
        "p": None,
        "ci_low": None,
        "ci_high": None,
        "effect_size": None,
        "degenerate": None,
    }
    if na < 2 or nb < 2:
        out["degenerate"] = "fewer than 2 values in an arm"
        return out
    va, vb = float(a.var(ddof=1)), float(b.var(ddof=1))
    if _is_zero_sd(math.sqrt(va + vb), a.mean(), b.mean()):
        out["degenerate"] = "zero variance in both arms"
        return out
    se2 = va / na + vb / nb
    df = se2**2 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1))  # Welch-Satterthwaite
    half = float(st.t.ppf(0.5 + confidence / 2, df)) * math.sqrt(se2)
    delta = float(a.mean() - b.mean())
    res = st.ttest_ind(a, b, equal_var=False)
    pooled = math.sqrt(((na - 1) * va + (nb - 1) * vb) / (na + nb - 2))
    j = hedges_correction(na + nb - 2)
    out.update(
        t=float(res.statistic),
        df=float(df),
        p=float(res.pvalue),
        ci_low=delta - half,
        ci_high=delta + half,
        effect_size=None if (j is None or pooled == 0) else j * delta / pooled,
    )
    return out


REL_CI_PAIRED = "paired: the paired test's delta CI / |reference mean|"
REL_CI_LOG = "log ratio of means (delta method)"
REL_CI_LINEAR = "linear: delta CI / |reference mean|"
EQUIVALENCE_CONFIDENCE = 0.90  # two one-sided tests at alpha 0.05 = the 90% interval inside the margins


def _rel_ci_log_ratio(
    a: np.ndarray, b: np.ndarray, paired: bool, confidence: float
) -> tuple[float, float] | tuple[None, None]:
    """CI of mean(a)/mean(b) - 1 for strictly positive arms, built on log(mean_a/mean_b) by the delta method.

    Var(log ratio) = s_a^2/(n_a m_a^2) + s_b^2/(n_b m_b^2) [- 2 cov(a, b)/(n m_a m_b) when paired]; t quantile with
    n - 1 df (paired) or Welch-Satterthwaite df on the two log-scale components (unpaired). exp(.) - 1 keeps the
    interval above -100%, which a bounded metric (entropy >= 0) cannot cross. Unlike the linear interval it also
    carries the uncertainty of the reference mean. (None, None) when n < 2 or the log-scale variance is 0.
    """
    na, nb = len(a), len(b)
    if na < 2 or nb < 2:
        return None, None
    ma, mb = float(a.mean()), float(b.mean())
    va, vb = float(a.var(ddof=1)) / (na * ma * ma), float(b.var(ddof=1)) / (nb * mb * mb)
    log_ratio = math.log(ma / mb)
    if paired:
        cov = float(np.cov(a, b, ddof=1)[0, 1])
        var = va + vb - 2.0 * cov / (na * ma * mb)
        df = float(na - 1)
    else:
        var = va + vb
        df = var**2 / (va**2 / (na - 1) + vb**2 / (nb - 1)) if var > 0 else float("nan")
    if not var > (ZERO_SD_REL * max(1.0, abs(log_ratio))) ** 2:  # no noise to build an interval from
        return None, None
    half = float(st.t.ppf(0.5 + confidence / 2, df)) * math.sqrt(var)
    return math.expm1(log_ratio - half), math.expm1(log_ratio + half)


def compare(
    a: Sequence[float],
    b: Sequence[float],
    paired: bool,
    higher_is_better: bool,
    alpha: float = 0.05,
    confidence: float = CONFIDENCE,
    power: float = POWER,
) -> dict:
    """Method `a` against reference `b`: delta = mean(a) - mean(b), its CI, a t-test, Hedges' g and Mann-Whitney.

    - paired=True pairs a[i] with b[i] (the caller pairs by seed): paired t-test on the differences, CI is the
      t-interval of the differences, effect size is g_z = J(n-1) * mean(d) / sd(d) (Cohen's d_z with Hedges'
      small-sample correction; it measures the effect against seed-to-seed noise of the *difference*).
    - paired=False: Welch's t-test with Welch-Satterthwaite df; effect size is Hedges' g with the pooled sd.
    - p is two-sided and equals scipy's ttest_rel / ttest_ind(equal_var=False); p_greater / p_less are the
      one-sided p-values for mean(a) > mean(b) / mean(a) < mean(b) (used by the regression gate).
    - rel_delta = delta / |mean(b)| (None if mean(b) is 0). rel_ci_low/high: when every value of both arms is > 0,
      the CI of mean(a)/mean(b) - 1 on the log scale (delta method; always above -100%, includes the reference's
      own uncertainty); otherwise the delta CI divided by |mean(b)|, treating the reference mean as fixed.
      rel_ci_method names which one (None when there is no interval).
    - mde / mde_rel: the smallest |delta| (absolute / relative to |mean(b)|) this design detects with probability
      `power` at two-sided `alpha`, given its n and observed sd (of the per-seed differences if paired, pooled sd
      of a two-sample t otherwise, which approximates Welch). seeds_needed: seeds (pairs, or per arm) needed to
      detect the observed delta with that sd (None if delta is 0 or beyond SEEDS_MAX_N); power_note the settings;
      sd_delta that sd (None when the test is degenerate).
    - mwu_p is a robustness check only; mwu_note says "rank test uninformative" when its minimum attainable p
      (mwu_p_min = 2 / C(n+m, n)) exceeds alpha.
    """
    xa, xb = as_array(a), as_array(b)
    if paired and len(xa) != len(xb):
        raise ValueError(f"paired comparison needs equal lengths, got {len(xa)} and {len(xb)}")
    core = _paired(xa, xb, confidence) if paired else _welch(xa, xb, confidence)
    mean_a = float(xa.mean()) if len(xa) else None
    mean_b = float(xb.mean()) if len(xb) else None
    delta = None if mean_a is None or mean_b is None else mean_a - mean_b
    scale = abs(mean_b) if mean_b else None
    p_greater = p_less = None
    if core["t"] is not None:
        p_greater = float(st.t.sf(core["t"], core["df"]))
        p_less = float(st.t.cdf(core["t"], core["df"]))
    mwu_p, mwu_p_min = _mann_whitney(xa, xb), min_rank_p(len(xa), len(xb))
    rel = _rel_ci(xa, xb, paired, confidence, core, scale)
    out = {
        "n": core["n"],
        "n_a": len(xa),
        "n_b": len(xb),
        "mean_a": mean_a,
        "mean_b": mean_b,
        "delta": delta,
        "rel_delta": rel["rel_delta"],
        "ci_low": core["ci_low"],
        "ci_high": core["ci_high"],
        "rel_ci_low": rel["rel_ci_low"],
        "rel_ci_high": rel["rel_ci_high"],
        "test": core["test"],
        "t": core["t"],
        "df": core["df"],
        "p": core["p"],
        "p_greater": p_greater,
        "p_less": p_less,
        "effect_size": core["effect_size"],
        "effect_size_kind": "hedges_g_z" if paired else "hedges_g",
        "mwu_p": mwu_p,
        "mwu_p_min": mwu_p_min,
        "mwu_note": "rank test uninformative" if mwu_p_min > alpha else None,
        "degenerate": core["degenerate"],
    }
    out["verdict_hint"] = verdict(delta, core["p"], higher_is_better, alpha)
    out["rel_ci_method"] = rel["rel_ci_method"]  # new keys after the old ones: existing key order is unchanged
    # The 90% interval of the same relative change: equivalence by two one-sided tests at alpha 0.05 each holds
    # holds when it lies inside a margin declared before the runs (the claims table's "no effect").
    core90 = _paired(xa, xb, EQUIVALENCE_CONFIDENCE) if paired else _welch(xa, xb, EQUIVALENCE_CONFIDENCE)
    rel90 = _rel_ci(xa, xb, paired, EQUIVALENCE_CONFIDENCE, core90, scale)
    out["rel_ci90_low"], out["rel_ci90_high"] = rel90["rel_ci_low"], rel90["rel_ci_high"]
    out.update(_power_report(xa, xb, paired, alpha, power, core, delta, scale))
    return out


def _rel_ci(a: np.ndarray, b: np.ndarray, paired: bool, confidence: float, core: dict, scale: float | None) -> dict:
    """rel_delta and rel_ci_low/high/method for compare(); the core test's degenerate cases give no interval, as
    for the delta.

    - paired (seeds pair): the paired test's own interval of the mean difference over |reference mean|, so the
      relative interval agrees with the test's p. Per-seed differences are what the seeds pair for: a method that
      drives a positive metric towards 0 (GAPT's MBE: 1.14/1.28/1.14 -> 0.056/0.330/0.043, paired p = 0.002) gets
      an interval as tight as its differences agree, where any ratio of a mean near 0 explodes. For a metric whose
      values are all positive the lower end is clipped at -100% (it cannot fall further).
    - unpaired, positive arms: the log ratio of means (delta method), which carries both means' uncertainty.
    - otherwise: the delta CI over |reference mean|.
    """
    delta = float(a.mean() - b.mean()) if len(a) and len(b) else None
    rel = None if delta is None or not scale else delta / scale
    if core["ci_low"] is None or not scale:
        return {"rel_delta": rel, "rel_ci_low": None, "rel_ci_high": None, "rel_ci_method": None}
    positive = bool(len(a) and len(b) and (a > 0).all() and (b > 0).all())
    if positive and not paired:
        low, high = _rel_ci_log_ratio(a, b, paired, confidence)
        return {
            "rel_delta": rel,
            "rel_ci_low": low,
            "rel_ci_high": high,
            "rel_ci_method": None if low is None else REL_CI_LOG,
        }
    low, high = core["ci_low"] / scale, core["ci_high"] / scale
    if positive:
        low, high = max(low, -1.0), max(high, -1.0)
    return {
        "rel_delta": rel,
        "rel_ci_low": low,
        "rel_ci_high": high,
        "rel_ci_method": REL_CI_PAIRED if paired else REL_CI_LINEAR,
    }


def _power_report(
    a: np.ndarray,
    b: np.ndarray,
    paired: bool,
    alpha: float,
    power: float,
    core: dict,
    delta: float | None,
    scale: float | None,
) -> dict:
    """mde, mde_rel, seeds_needed, power_note and sd_delta (the sd behind them: of the per-seed differences when
    paired, pooled across arms otherwise; None when the test is degenerate) for compare(), at the comparison's own n
    and observed noise."""
    note = f"{'paired t' if paired else 'two-sample t (pooled sd)'}, alpha {alpha:g}, power {power:g}"
    out: dict[str, Any] = {"mde": None, "mde_rel": None, "seeds_needed": None, "power_note": note, "sd_delta": None}
    if core["degenerate"] is not None:  # no usable sd
        return out
    na, nb = len(a), len(b)
    if paired:
        sd = float((a - b).std(ddof=1))
    else:
        sd = math.sqrt(((na - 1) * float(a.var(ddof=1)) + (nb - 1) * float(b.var(ddof=1))) / (na + nb - 2))
    out["sd_delta"] = sd
    if not 0 < alpha < power < 1:  # no power to solve for
        return out
    out["mde"] = mde(sd, na, alpha, power, paired=True) if paired else mde(sd, na, alpha, power, paired=False, n_b=nb)
    if out["mde"] is not None and scale:
        out["mde_rel"] = out["mde"] / scale
    out["seeds_needed"] = seeds_needed(delta, sd, alpha, power, paired=paired)
    return out


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values (same as R's p.adjust(p, "holm")); None entries pass through untested.

    The family size m counts only the real p-values.
    """
    idx = [i for i, p in enumerate(pvalues) if p is not None]
    m = len(idx)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda k: pvalues[k])):  # type: ignore[arg-type, return-value]
        running = max(running, min(1.0, (m - rank) * float(pvalues[i])))  # type: ignore[arg-type]
        out[i] = running
    return out


def verdict(delta: float | None, p: float | None, higher_is_better: bool, alpha: float = 0.05) -> str:
    """better / worse / no significant difference / inconclusive, from a (Holm-adjusted) two-sided p."""
    if p is None or delta is None or not math.isfinite(p):
        return "inconclusive"
    if p >= alpha or delta == 0:
        return "no significant difference"
    return "better" if (delta > 0) == higher_is_better else "worse"
