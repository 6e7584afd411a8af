"""The capacity paper's laws, fitted across runs (Morris et al. 2025): the membership-inference law (section 3.5:
the corrected form that reproduces the paper's validation table, the printed (inconsistent) form, its inverse, and
a least-squares fit of the same functional form) and the double-descent locator (section 3, descriptive).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
from scipy import optimize, special

from gapt_bench.measures.memorization import PAPER_ALPHA_SLOPE, paired_arrays
from gapt_bench.results.stats import describe

# Membership-inference law constants as printed (section 3.5) and the slope k of the corrected argument k*|D|/P.
MI_C1, MI_C2, MI_C3 = 1.34, -0.034, -33.14
MI_K = 977.0

X_SCALES = ("linear", "log10")


# -- membership-inference law (section 3.5) -----------------------------------------------------------------------
def mi_law_paper_corrected(
    d_over_p: Any, c1: float = MI_C1, c2: float = MI_C2, c3: float = MI_C3, k: float = MI_K
) -> np.ndarray:
    """Membership-inference F1 predicted from |D|/P (64-token samples per parameter), corrected form of section 3.5.

    F1 = 0.5 * (1 + c1 * sigmoid(c2 * (k * |D|/P + c3))). The paper prints Capacity(theta)/|D| as the argument,
    which is inconsistent (F1 -> ~1.01 as |D| grows, and it increases with |D|; see `mi_law_printed`). Solving the
    printed sigmoid at the validation table's |D| gives arguments 107.2 / 48.4 / 12.1, i.e. linear in |D|/P with
    k = 977 (~3.56e3 |D| / Capacity_bits). With c1 = 1.336 this reproduces all six validation targets (GPT-2 XL and
    small, F1 0.55 / 0.75 / 0.95) to 0.001; the printed c1 = 1.34 (default) to about 0.0015. F1 -> 0.5 as
    |D|/P -> inf and -> 0.5 * (1 + c1 * sigmoid(c2 * c3)) ~ 1.006 as |D|/P -> 0.
    """
    r = np.asarray(d_over_p, dtype=np.float64)
    return 0.5 * (1.0 + c1 * special.expit(c2 * (k * r + c3)))


def mi_law_printed(
    d_over_p: Any, c1: float = MI_C1, c2: float = MI_C2, c3: float = MI_C3, alpha: float = PAPER_ALPHA_SLOPE
) -> np.ndarray:
    """The law exactly as printed (section 3.5), for the record: F1 = 0.5 * (1 + c1 * sigmoid(c2 * (alpha*P/|D| + c3))).

    Wrong as printed: it *rises* with |D| and tends to 0.5 * (1 + c1 * sigmoid(c2 * c3)) ~ 1.006 as |D| -> inf,
    instead of 0.5 (chance). Use `mi_law_paper_corrected`.
    """
    r = np.asarray(d_over_p, dtype=np.float64)
    with np.errstate(divide="ignore"):
        x = alpha / r  # Capacity / |D| = alpha * P / |D|
    return 0.5 * (1.0 + c1 * special.expit(c2 * (x + c3)))


def mi_law_inverse(f1: Any, c1: float = MI_C1, c2: float = MI_C2, c3: float = MI_C3, k: float = MI_K) -> np.ndarray:
    """|D|/P at which `mi_law_paper_corrected` predicts `f1` (how the paper sized its validation runs, section 3.5).

    NaN where f1 is outside the law's range (0.5, 0.5 * (1 + c1 * sigmoid(c2 * c3))) or needs |D|/P < 0.
    """
    s = (2.0 * np.asarray(f1, dtype=np.float64) - 1.0) / c1
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (special.logit(s) / c2 - c3) / k
    return np.where((s > 0) & (s < 1) & (r >= 0), r, np.nan)


def mi_law_form(u: np.ndarray, c1: float, a: float, b: float) -> np.ndarray:
    """F1 = 0.5 * (1 + c1 * sigmoid(a * u + b)): the form `fit_mi_law` fits (its "params"), for drawing a fit."""
    return 0.5 * (1.0 + c1 * special.expit(a * u + b))


def fit_mi_law(
    d_over_p: Any, f1: Any, *, x_scale: str = "linear", c1: float | None = None, k: float = MI_K, maxfev: int = 20000
) -> dict[str, Any]:
    """Least-squares fit (scipy.optimize.curve_fit) of F1 = 0.5 * (1 + c1 * sigmoid(a * u + b)) to measured points.

    u = |D|/P for x_scale="linear" (default: the paper's corrected form, section 3.5) or log10(|D|/P) for
    x_scale="log10" (better conditioned when |D|/P spans decades; a different curve, not a reparameterisation).
    The paper's (c2, k, c3) is over-parameterised (c2 and k only appear as their product); (c1, a, b) is the
    identifiable set, with c2 = a / k and c3 = b * k / a at a chosen k (reported under "paper_equivalent" for the
    linear scale). Pass `c1` to hold it fixed (2 free parameters instead of 3).

    Needs at least n_params + 1 finite points (and |D|/P > 0 for log10); otherwise, or when every start fails,
    returns ok=False with a "why". Several starts (logit-linear regression on the data, the paper's constants,
    c1 in {1, 1.5}); the lowest residual wins. Standard errors are sqrt(diag(pcov)) (curve_fit's default
    residual-scaled covariance), None when not finite. "midpoint_d_over_p" is where the sigmoid argument is 0
    (F1 = 0.5 + c1/4, ~0.835 for the paper's constants, at |D|/P ~ 0.034).
    """
    if x_scale not in X_SCALES:
        raise ValueError(f"x_scale must be one of {X_SCALES}, got {x_scale!r}")
    r, y = paired_arrays(d_over_p, f1, ("d_over_p", "f1"))
    keep = np.isfinite(r) & np.isfinite(y) & ((r > 0) if x_scale == "log10" else (r >= 0))
    r, y = r[keep], y[keep]
    n_params = 2 if c1 is not None else 3
    out: dict[str, Any] = {
        "ok": False,
        "why": None,
        "form": "F1 = 0.5 * (1 + c1 * sigmoid(a * u + b))",
        "x_scale": x_scale,
        "u": "d_over_p" if x_scale == "linear" else "log10(d_over_p)",
        "n": int(r.size),
        "n_params": n_params,
        "c1_fixed": c1 is not None,
        "params": None,
        "stderr": None,
        "rms": None,
    }
    if r.size < n_params + 1:
        out["why"] = f"{r.size} usable points for {n_params} parameters: need at least {n_params + 1}"
        return out
    u = r if x_scale == "linear" else np.log10(r)

    starts: list[tuple[float, float, float]] = []
    c1_guess = c1 if c1 is not None else max(1.0, 1.02 * (2 * y.max() - 1))
    s = np.clip((2 * y - 1) / c1_guess, 1e-3, 1 - 1e-3)
    if np.ptp(u) > 0:
        a0, b0 = np.polyfit(u, special.logit(s), 1)
        starts.append((c1_guess, float(a0), float(b0)))
    if x_scale == "linear":
        starts.append((MI_C1, MI_C2 * k, MI_C2 * MI_C3))
    spread = max(float(np.ptp(u)), 1e-12)
    for c in (1.0, 1.5):  # a sigmoid falling across the data, centred on its median
        starts.append((c, -4.0 / spread, 4.0 * float(np.median(u)) / spread))

    best: tuple[float, np.ndarray, np.ndarray] | None = None
    errors: list[str] = []
    for c1_0, a0, b0 in starts:
        if c1 is None:
            fn, p0 = mi_law_form, [c1_0, a0, b0]
        else:
            fn, p0 = (lambda uu, a, b: mi_law_form(uu, c1, a, b)), [a0, b0]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                popt, pcov = optimize.curve_fit(fn, u, y, p0=p0, maxfev=maxfev)
        except (RuntimeError, ValueError, optimize.OptimizeWarning) as e:
            errors.append(str(e).splitlines()[0])
            continue
        ssr = float(np.sum((fn(u, *popt) - y) ** 2))
        if np.all(np.isfinite(popt)) and math.isfinite(ssr) and (best is None or ssr < best[0]):
            best = (ssr, popt, pcov)
    if best is None:
        out["why"] = "curve_fit failed from every start: " + "; ".join(errors[:2])
        return out
    ssr, popt, pcov = best
    names = ["c1", "a", "b"] if c1 is None else ["a", "b"]
    params = dict(zip(names, map(float, popt)))
    if c1 is not None:
        params = {"c1": float(c1), **params}
    se = np.sqrt(np.diag(pcov)) if pcov is not None else None
    out["ok"] = True
    out["params"] = params
    out["stderr"] = dict(zip(names, map(float, se))) if se is not None and np.all(np.isfinite(se)) else None
    out["rms"] = math.sqrt(ssr / r.size)
    a, b = params["a"], params["b"]
    mid = -b / a if a != 0 else float("nan")
    # a flat F1 (every run at 1, say) fits a midpoint far outside the data: 10**mid overflows, so None
    out["midpoint_d_over_p"] = mid if x_scale == "linear" else (float(10**mid) if abs(mid) < 300 else None)
    if x_scale == "linear" and a != 0:
        out["paper_equivalent"] = {"c1": params["c1"], "c2": a / k, "c3": b * k / a, "k": k}
    return out


# -- double descent (section 3) --------------------------------------------------------------------------------
def _group_ratios(r: np.ndarray, rtol: float) -> list[np.ndarray]:
    order = np.argsort(r, kind="stable")
    groups: list[list[int]] = []
    for i in order:
        if groups and abs(r[i] - r[groups[-1][0]]) <= rtol * abs(r[groups[-1][0]]):
            groups[-1].append(int(i))
        else:
            groups.append([int(i)])
    return [np.asarray(g) for g in groups]


def double_descent_peak(
    ratios: Any, test_losses: Any, *, factor: float = 2.0, group_rtol: float = 0.01
) -> dict[str, Any]:
    """Where one model's mean test loss peaks against the data-to-capacity ratio (capacity-paper.md section 3).

    Call once per model. Points (one per run) whose ratios agree within `group_rtol` (relative, default 1 %:
    seeds of one dataset size differ slightly in reference code length, while a size grid steps by ~2x) form one
    ratio, their mean; non-finite losses are dropped. The peak is the ratio with the highest mean test loss.
    It is "located" only when it is bracketed by at least one smaller and one larger ratio; then
    `within_factor` says whether 1/factor <= peak <= factor (default factor 2) around the paper's ratio 1.
    A descriptive locator, not a test: no uncertainty on the peak's position is claimed (per-ratio means carry
    the t-intervals of `gapt_bench.results.stats.describe`).
    """
    r, y = paired_arrays(ratios, test_losses, ("ratios", "test_losses"))
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    keep = np.isfinite(r) & np.isfinite(y)
    r, y = r[keep], y[keep]
    out: dict[str, Any] = {
        "peak_ratio": None,
        "peak_loss": None,
        "located": False,
        "within_factor": None,
        "factor": factor,
        "n_points": int(r.size),
        "per_ratio": [],
    }
    if r.size == 0:
        out["statement"] = "no finite points: no peak"
        return out
    groups = _group_ratios(r, group_rtol)
    per = [{"ratio": float(r[g].mean()), **describe(y[g])} for g in groups]
    for p in per:
        p.pop("values", None)
    out["per_ratio"] = per
    means = np.asarray([p["mean"] for p in per])
    i = int(np.argmax(means))
    peak = per[i]["ratio"]
    out["peak_ratio"], out["peak_loss"] = peak, float(means[i])
    out["located"] = 0 < i < len(per) - 1
    if not out["located"]:
        edge = "only ratio" if len(per) == 1 else ("smallest" if i == 0 else "largest") + " ratio measured"
        out["statement"] = (
            f"highest mean test loss at ratio {peak:.3g}, the {edge}: the maximum is not "
            f"bracketed, so no peak is located"
        )
        return out
    out["within_factor"] = bool(1.0 / factor <= peak <= factor)
    where = "within" if out["within_factor"] else "not within"
    out["statement"] = (
        f"test-loss peak at data/capacity ratio {peak:.3g} (mean loss {means[i]:.4g}), {where} a "
        f"factor {factor:g} of 1 (descriptive, not a test)"
    )
    return out


def double_descent_peaks(
    ratios: Any, test_losses: Any, models: Sequence[Hashable], *, factor: float = 2.0, group_rtol: float = 0.01
) -> dict[Hashable, dict[str, Any]]:
    """`double_descent_peak` for each model label in `models` (one label per point), in first-seen order."""
    r, y = paired_arrays(ratios, test_losses, ("ratios", "test_losses"))
    labels = list(models)
    if len(labels) != r.size:
        raise ValueError(f"models has {len(labels)} labels for {r.size} points")
    out: dict[Hashable, dict[str, Any]] = {}
    for lab in dict.fromkeys(labels):
        idx = [i for i, m in enumerate(labels) if m == lab]
        out[lab] = double_descent_peak(r[idx], y[idx], factor=factor, group_rtol=group_rtol)
    return out
