"""Statistics over seeds: intervals, two-arm tests, effect sizes, Holm correction and verdicts.

The replicate is the seed (one training run), so samples are small (3-10). Everything here is therefore exact
small-sample machinery (t-intervals, Welch/paired t-tests, Hedges' g) plus two robustness extras: a bootstrap CI
once n >= 10, and a Mann-Whitney U test reported together with its minimum attainable p so that nobody reads
"p = 0.10" with 3 seeds against 3 as evidence of anything.

Degenerate inputs (fewer than two values, or no variance to estimate a standard error from) give p = None and the
verdict "inconclusive", never p = 0. Pure numpy/scipy; no torch.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np
from scipy import stats as st

CONFIDENCE = 0.95
BOOTSTRAP_MIN_N = 10
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
# Relative size below which a standard deviation counts as zero: differences like 1.1 - 1.0 vs 2.2 - 2.1 are
# "identical" up to float rounding, and a t-test on rounding noise would print p ~ 1e-15.
ZERO_SD_REL = 1e-12

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


def bootstrap_interval(x: np.ndarray, confidence: float = CONFIDENCE, seed: int = BOOTSTRAP_SEED,
                       method: str = "BCa") -> tuple[float, float]:
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


def describe(values: Iterable[Any], confidence: float = CONFIDENCE) -> dict:
    """n, mean, sample std (ddof=1) and a t-interval; plus a BCa bootstrap CI (boot_low/boot_high) when n >= 10.

    The t-interval stays the primary CI (ci_method "t") so groups of different sizes are read the same way.
    """
    x = as_array(values)
    n = len(x)
    out: dict[str, Any] = {"n": n, "mean": float(x.mean()) if n else None, "std": None,
                           "ci_low": None, "ci_high": None, "ci_method": None, "values": x.tolist()}
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
    out: dict[str, Any] = {"test": "paired_t", "n": n, "t": None, "df": None, "p": None,
                           "ci_low": None, "ci_high": None, "effect_size": None, "degenerate": None}
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
    out.update(t=float(res.statistic), df=float(df), p=float(res.pvalue),
               ci_low=float(d.mean()) - half, ci_high=float(d.mean()) + half,
               effect_size=None if j is None else j * float(d.mean()) / sd)
    return out


def _welch(a: np.ndarray, b: np.ndarray, confidence: float) -> dict:
    na, nb = len(a), len(b)
    out: dict[str, Any] = {"test": "welch_t", "n": min(na, nb), "t": None, "df": None, "p": None,
                           "ci_low": None, "ci_high": None, "effect_size": None, "degenerate": None}
    if na < 2 or nb < 2:
        out["degenerate"] = "fewer than 2 values in an arm"
        return out
    va, vb = float(a.var(ddof=1)), float(b.var(ddof=1))
    if _is_zero_sd(math.sqrt(va + vb), a.mean(), b.mean()):
        out["degenerate"] = "zero variance in both arms"
        return out
    se2 = va / na + vb / nb
    df = se2 ** 2 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1))  # Welch-Satterthwaite
    half = float(st.t.ppf(0.5 + confidence / 2, df)) * math.sqrt(se2)
    delta = float(a.mean() - b.mean())
    res = st.ttest_ind(a, b, equal_var=False)
    pooled = math.sqrt(((na - 1) * va + (nb - 1) * vb) / (na + nb - 2))
    j = hedges_correction(na + nb - 2)
    out.update(t=float(res.statistic), df=float(df), p=float(res.pvalue),
               ci_low=delta - half, ci_high=delta + half,
               effect_size=None if (j is None or pooled == 0) else j * delta / pooled)
    return out


def compare(a: Sequence[float], b: Sequence[float], paired: bool, higher_is_better: bool,
            alpha: float = 0.05, confidence: float = CONFIDENCE) -> dict:
    """Method `a` against reference `b`: delta = mean(a) - mean(b), its CI, a t-test, Hedges' g and Mann-Whitney.

    - paired=True pairs a[i] with b[i] (the caller pairs by seed): paired t-test on the differences, CI is the
      t-interval of the differences, effect size is g_z = J(n-1) * mean(d) / sd(d) (Cohen's d_z with Hedges'
      small-sample correction; it measures the effect against seed-to-seed noise of the *difference*).
    - paired=False: Welch's t-test with Welch-Satterthwaite df; effect size is Hedges' g with the pooled sd.
    - p is two-sided and equals scipy's ttest_rel / ttest_ind(equal_var=False); p_greater / p_less are the
      one-sided p-values for mean(a) > mean(b) / mean(a) < mean(b) (used by the regression gate).
    - rel_delta and rel_ci_* divide by |mean(b)|, treating the reference mean as fixed (None if it is 0).
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
    out = {
        "n": core["n"], "n_a": len(xa), "n_b": len(xb), "mean_a": mean_a, "mean_b": mean_b,
        "delta": delta, "rel_delta": None if delta is None or not scale else delta / scale,
        "ci_low": core["ci_low"], "ci_high": core["ci_high"],
        "rel_ci_low": None if core["ci_low"] is None or not scale else core["ci_low"] / scale,
        "rel_ci_high": None if core["ci_high"] is None or not scale else core["ci_high"] / scale,
        "test": core["test"], "t": core["t"], "df": core["df"], "p": core["p"],
        "p_greater": p_greater, "p_less": p_less, "effect_size": core["effect_size"],
        "effect_size_kind": "hedges_g_z" if paired else "hedges_g",
        "mwu_p": mwu_p, "mwu_p_min": mwu_p_min,
        "mwu_note": "rank test uninformative" if mwu_p_min > alpha else None,
        "degenerate": core["degenerate"],
    }
    out["verdict_hint"] = verdict(delta, core["p"], higher_is_better, alpha)
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
