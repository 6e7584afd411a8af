"""Membership inference (Morris et al. 2025 section 3; Yeom et al. 2018): is a sequence in the training set?

A loss threshold scored by F1 on a balanced set, the threshold chosen on a calibration split disjoint from the
scored one; ROC AUC beside it. Membership losses are per-sequence *mean* NLL in bits per predicted token, i.e.
`sequence_nll_bits(...) / (S - 1)`.

The attack scores of the literature (`attack_scores`: loss, reference-calibrated loss, zlib ratio, Min-K%,
Min-K%++) read the per-token statistics of `gapt_bench.measures.memorization.token_statistics`; `roc_metrics`
reports them the way that literature does (AUC with a bootstrap interval, TPR at a low FPR), and
`membership_scores_report` adds the held-out-threshold F1 above for each. Scores are "higher = member", the
losses above "lower = member".
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats as st

THRESHOLD_RULES = ("balanced_accuracy", "f1", "median")


# -- ----------------------------------------------------------------------------------------
def _losses(values: Any, name: str, what: str = "losses") -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains non-finite {what}")
    return x


def _balanced(member: Any, nonmember: Any) -> tuple[np.ndarray, np.ndarray]:
    m, nm = _losses(member, "member losses"), _losses(nonmember, "non-member losses")
    n = min(m.size, nm.size)
    return m[:n], nm[:n]


def membership_f1(member_scores: Any, nonmember_scores: Any, threshold: float) -> dict[str, Any]:
    """Precision, recall and F1 of the loss-threshold attack: "member" iff loss <= threshold (Yeom et al. 2018).

    Scored on a balanced set (capacity-paper.md section 3, F1 with 0.5 = chance): the first min(n_m, n_nm) of each
    array. On a balanced set a guess that labels a fraction q as members has precision 1/2 and F1 = 2q / (1 + 2q),
    so F1 = 0.5 is chance only for q = 1/2 (labelling everything "member" scores 2/3). Precision is 0 when nothing
    is predicted a member. Scores are per-sequence mean NLL (bits per predicted token) in the threshold's units.
    """
    m, nm = _balanced(member_scores, nonmember_scores)
    tp = int(np.count_nonzero(m <= threshold))
    fp = int(np.count_nonzero(nm <= threshold))
    fn = m.size - tp
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / m.size
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "threshold": float(threshold),
        "n": int(m.size),
        "tp": tp,
        "fp": fp,
        "fn": fn,
    }


def _threshold_with_info(
    member: Any, nonmember: Any, rule: str, null_fallback_p: float | None
) -> tuple[float, dict[str, Any]]:
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"rule must be one of {THRESHOLD_RULES}, got {rule!r}")
    m, nm = _balanced(member, nonmember)
    n = m.size
    values = np.concatenate([m, nm])
    is_member = np.concatenate([np.ones(n, bool), np.zeros(n, bool)])
    order = np.argsort(values, kind="stable")
    v, lab = values[order], is_member[order]
    # candidate k: predict the k smallest pooled values as members, cut only between distinct values
    ks = np.concatenate([[0], np.flatnonzero(v[1:] > v[:-1]) + 1, [2 * n]])
    tp = np.concatenate([[0], np.cumsum(lab)])[ks]
    fp = ks - tp
    info: dict[str, Any] = {"rule": rule}
    if rule == "median":
        score = -np.abs(ks - n).astype(float)  # the cut closest to half the pooled set
    elif rule == "f1":
        score = 2 * tp / np.maximum(2 * tp + fp + (n - tp), 1)
    else:
        score = (tp - fp) / n  # balanced accuracy - 1/2, times 2 (Youden's J = TPR - FPR)
    if rule == "balanced_accuracy" and null_fallback_p is not None:
        # one-sided two-sample KS: statistic max(F_member - F_nonmember) = max J; members have *lower* losses
        p = float(st.ks_2samp(m, nm, alternative="greater").pvalue)
        info["ks_p"] = p
        if p > null_fallback_p:
            score = -np.abs(ks - n).astype(float)
            info["rule"] = f"median (fallback: one-sided KS p = {p:.3g} > {null_fallback_p})"
    best = np.flatnonzero(score >= score.max() - 1e-12)
    k = int(ks[best[np.argmin(np.abs(ks[best] - n))]])  # ties: the cut closest to predicting half
    if k == 0:
        thr = float(v[0] - max(1.0, abs(v[0])))
    elif k == 2 * n:
        thr = float(v[-1])
    else:
        lo, hi = v[k - 1], v[k]
        mid = lo + (hi - lo) / 2
        thr = float(mid if lo <= mid < hi else lo)
    return thr, info


def choose_threshold(
    calib_member_losses: Any,
    calib_nonmember_losses: Any,
    *,
    rule: str = "balanced_accuracy",
    null_fallback_p: float | None = 0.05,
) -> float:
    """Loss threshold for `membership_f1`, chosen on a *calibration* split only (never on the scored members).

    Balanced like `membership_f1` (first min(n_m, n_nm) of each). Candidates are the midpoints between
    consecutive distinct pooled losses (plus "none" and "all"); ties go to the cut closest to labelling half the
    set as members. Rules (the paper does not say how its threshold was set):

    - "balanced_accuracy" (default): maximise TPR - FPR (Youden's J, = accuracy on a balanced set). Without a
      signal its argmax is noise and the scored F1 = 2q/(1+2q) wanders over [0, 2/3]; so when the one-sided
      two-sample KS test of "members have lower losses" on the calibration split has p > `null_fallback_p`
      (default 0.05; None disables) the threshold falls back to the pooled median, where chance F1 is 0.5.
    - "median": the pooled median (labels half as members): chance F1 = 0.5 exactly, but weak when members'
      losses are concentrated rather than shifted.
    - "f1": maximise F1. Not the default: labelling everything "member" already scores 2/3, so F1 no longer reads
      0.5 at chance.
    """
    return _threshold_with_info(calib_member_losses, calib_nonmember_losses, rule, null_fallback_p)[0]


def membership_auc(member_losses: Any, nonmember_losses: Any) -> float:
    """P(member loss < non-member loss) + 1/2 P(tie) (Mann-Whitney AUC): threshold-free, 0.5 = chance."""
    m, nm = _losses(member_losses, "member losses"), _losses(nonmember_losses, "non-member losses")
    ranks = st.rankdata(np.concatenate([m, nm]))
    u_nm = ranks[m.size :].sum() - nm.size * (nm.size + 1) / 2  # pairs with the non-member ranked higher
    return float(u_nm / (m.size * nm.size))


def calibration_split(
    n_members: int, n_nonmembers: int, calib_fraction: float = 0.5, seed: int = 0
) -> dict[str, np.ndarray]:
    """Index arrays of the calibration/evaluation split used by `membership_inference`.

    n = min(n_members, n_nonmembers) of each set are drawn by a seeded permutation (numpy default_rng(seed):
    members first, then non-members); the first round(calib_fraction * n) of each form the calibration split, the
    remaining ones the evaluation split. Both splits are balanced and disjoint.
    """
    if not 0 < calib_fraction < 1:
        raise ValueError(f"calib_fraction must lie in (0, 1), got {calib_fraction}")
    n = min(n_members, n_nonmembers)
    n_cal = round(calib_fraction * n)
    if not 1 <= n_cal < n:
        raise ValueError(
            f"need at least one calibration and one evaluation pair; n = {n}, "
            f"calib_fraction = {calib_fraction} gives {n_cal} calibration pairs"
        )
    rng = np.random.default_rng(seed)
    pm, pn = rng.permutation(n_members)[:n], rng.permutation(n_nonmembers)[:n]
    return {
        "member_calib": pm[:n_cal],
        "member_eval": pm[n_cal:],
        "nonmember_calib": pn[:n_cal],
        "nonmember_eval": pn[n_cal:],
    }


def membership_inference(
    member_losses: Any,
    nonmember_losses: Any,
    calib_fraction: float = 0.5,
    seed: int = 0,
    *,
    rule: str = "balanced_accuracy",
    null_fallback_p: float | None = 0.05,
) -> dict[str, Any]:
    """Loss-threshold membership inference with a held-out threshold; F1 on evaluation (0.5 = chance).

    `member_losses` / `nonmember_losses`: per-sequence mean NLL (bits per predicted token,
    `sequence_nll_bits / (S - 1)`; any unit works, the threshold is reported in it) of training and unseen
    sequences. Split by `calibration_split`, threshold by `choose_threshold(rule, null_fallback_p)` on the
    calibration split only, precision/recall/F1 by `membership_f1` on the evaluation split, plus the
    threshold-free AUC on the same evaluation split. capacity-paper.md section 3. Non-finite losses raise
    ValueError (drop failed measurements first); fewer than 2 of either set cannot be split.
    """
    m, nm = _losses(member_losses, "member losses"), _losses(nonmember_losses, "non-member losses")
    split = calibration_split(m.size, nm.size, calib_fraction, seed)
    thr, info = _threshold_with_info(m[split["member_calib"]], nm[split["nonmember_calib"]], rule, null_fallback_p)
    me, nme = m[split["member_eval"]], nm[split["nonmember_eval"]]
    res = membership_f1(me, nme, thr)
    n_cal, n_eval = split["member_calib"].size, split["member_eval"].size
    method = (
        f"loss threshold (Yeom et al. 2018): member iff mean NLL <= threshold; balanced "
        f"{n_cal + n_eval}+{n_cal + n_eval} drawn by default_rng({seed}) permutations; first {n_cal} of each "
        f"(calib_fraction {calib_fraction}) calibrate the threshold ({info['rule']}), the other {n_eval} of "
        f"each are scored"
    )
    out = {
        "f1": res["f1"],
        "precision": res["precision"],
        "recall": res["recall"],
        "auc": membership_auc(me, nme),
        "threshold": thr,
        "threshold_rule": info["rule"],
        "n_calib": n_cal,
        "n_eval": n_eval,
        "n_members": int(m.size),
        "n_nonmembers": int(nm.size),
        "calib_fraction": calib_fraction,
        "seed": seed,
        "method": method,
    }
    if "ks_p" in info:
        out["calib_ks_p"] = info["ks_p"]
    return out


# -- attack scores of the literature -----------------------------------------------------------------------------
def zlib_length(text: str) -> int:
    """Bytes of zlib.compress(text as UTF-8): the denominator of the zlib score (Carlini et al. 2021)."""
    return len(zlib.compress(text.encode("utf-8")))


def _token_matrix(stats: Any, key: str, name: str) -> np.ndarray:
    if key not in stats:
        raise ValueError(f"{name} has no {key!r} (expected the dict of memorization.token_statistics)")
    x = np.asarray(stats[key], dtype=np.float64)
    if x.ndim != 2 or x.size == 0:
        raise ValueError(f"{name}[{key!r}] must be a non-empty 2-D (N, T) array, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name}[{key!r}] contains non-finite values")
    return x


def min_k_count(n_tokens: int, k: float) -> int:
    """Tokens in the "lowest k fraction" of Min-K% / Min-K%++: floor(k * T), at least 1.

    Floor as int(k * T) in the usual implementations (so k = 0.2 of 63 tokens is 12), with 1e-9 of slack for
    float products such as 0.29 * 100 = 28.999...; at least 1 so that short sequences still get a score.
    """
    if not 0 < k <= 1:
        raise ValueError(f"k must lie in (0, 1], got {k}")
    return max(1, math.floor(k * n_tokens + 1e-9))


SIGMA_FLOOR = 1e-6  # Min-K%++: a position with sd(log p) below this (a degenerate prediction) scores 0


def attack_scores(
    stats: dict[str, Any],
    *,
    ref_stats: dict[str, Any] | None = None,
    zlib_bytes: Any = None,
    k: float = 0.2,
) -> dict[str, np.ndarray]:
    """Per-sequence membership scores, higher = more likely a member: {name: float64 (N,)}.

    `stats` (and `ref_stats`) are the dicts of `memorization.token_statistics` (nats, (N, T)); `zlib_bytes` the
    `zlib_length` of each sequence's decoded text. Every score is a sequence statistic thresholded by the attacker:

    - `loss`: mean log p = -mean NLL (Yeom et al. 2018, the loss attack).
    - `reference`: -(mean NLL_model - mean NLL_ref), the loss calibrated by a reference model that never saw the
      data (Carlini et al. 2021; Mireshghallah et al. 2022). Per-token means, so `ref_stats` may come from
      another tokenizer (its T may differ; its N may not).
    - `zlib`: -(sum NLL) / zlib bytes, the loss relative to a generic compressor (Carlini et al. 2021).
    - `min_k`: mean of the lowest `min_k_count(T, k)` token log-probs (Shi et al. 2024, Min-K% Prob): members
      have fewer outlier tokens.
    - `min_k_plus_plus`: the same over z = (log p - mu) / sigma (Zhang et al. 2024, Min-K%++): a token scores by
      how far it sits below the model's own expectation; z = 0 where sigma < SIGMA_FLOOR.

    `reference` is omitted when `ref_stats` is None and `zlib` when `zlib_bytes` is None.
    """
    logp = _token_matrix(stats, "logp", "stats")
    mu, sigma = _token_matrix(stats, "mu", "stats"), _token_matrix(stats, "sigma", "stats")
    if mu.shape != logp.shape or sigma.shape != logp.shape:
        raise ValueError(f"stats arrays differ in shape: logp {logp.shape}, mu {mu.shape}, sigma {sigma.shape}")
    if np.any(sigma < 0):
        raise ValueError("stats['sigma'] must be >= 0")
    n, t = logp.shape
    m = min_k_count(t, k)
    out = {"loss": logp.mean(axis=1)}
    if ref_stats is not None:
        ref = _token_matrix(ref_stats, "logp", "ref_stats")
        if ref.shape[0] != n:
            raise ValueError(f"ref_stats has {ref.shape[0]} sequences, stats has {n}")
        out["reference"] = out["loss"] - ref.mean(axis=1)
    if zlib_bytes is not None:
        zb = np.asarray(zlib_bytes, dtype=np.float64)
        if zb.shape != (n,):
            raise ValueError(f"zlib_bytes must have shape ({n},), got {zb.shape}")
        if not np.all(np.isfinite(zb) & (zb > 0)):
            raise ValueError("zlib_bytes must be finite and > 0")
        out["zlib"] = logp.sum(axis=1) / zb
    out["min_k"] = np.sort(logp, axis=1)[:, :m].mean(axis=1)
    ok = sigma >= SIGMA_FLOOR
    z = np.where(ok, (logp - mu) / np.where(ok, sigma, 1.0), 0.0)
    out["min_k_plus_plus"] = np.sort(z, axis=1)[:, :m].mean(axis=1)
    return out


def _scores(values: Any, name: str) -> np.ndarray:
    return _losses(values, name, "scores")


def _auc_rows(member: np.ndarray, nonmember: np.ndarray) -> np.ndarray:
    """AUC of each row pair (higher = member, ties 1/2) by the Mann-Whitney rank formula."""
    n_m, n_nm = member.shape[-1], nonmember.shape[-1]
    ranks = st.rankdata(np.concatenate([member, nonmember], axis=-1), axis=-1)
    return (ranks[..., :n_m].sum(axis=-1) - n_m * (n_m + 1) / 2) / (n_m * n_nm)


def _fpr_key(fpr: float) -> str:
    return f"tpr_at_{100 * fpr:g}%"


def roc_metrics(
    member_scores: Any,
    nonmember_scores: Any,
    *,
    fprs: Sequence[float] = (0.001, 0.01),
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """ROC AUC with a bootstrap interval and TPR at low FPR, for scores where higher = member.

    - `auc`: P(member score > non-member score) + 1/2 P(tie) (Mann-Whitney), 0.5 = chance.
    - `auc_low`, `auc_high`: percentile bootstrap interval at `confidence`, members and non-members resampled
      independently (n_boot draws from numpy default_rng(seed)); None when n_boot = 0.
    - `tpr_at_{100 f}%` per f in `fprs` (e.g. `tpr_at_0.1%`): the largest TPR of a rule "member iff score >= t"
      whose FPR <= f, over all real t. With n non-members at most floor(f * n) false positives are allowed, so at
      f < 1/n it is the fraction of members scoring above every non-member. TPR at 0.1% FPR means something only
      with >= 1000 non-members (Carlini et al. 2022 report this regime); hence `n_members` and `n_nonmembers`.
    """
    m, nm = _scores(member_scores, "member scores"), _scores(nonmember_scores, "non-member scores")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    out: dict[str, Any] = {"auc": float(_auc_rows(m, nm))}
    low = high = None
    if n_boot:
        rng = np.random.default_rng(seed)
        boots = np.empty(n_boot)
        chunk = max(1, 2_000_000 // (m.size + nm.size))  # rows per batch: bounded memory
        for i in range(0, n_boot, chunk):
            b = min(chunk, n_boot - i)
            im, inm = rng.integers(0, m.size, (b, m.size)), rng.integers(0, nm.size, (b, nm.size))
            boots[i : i + b] = _auc_rows(m[im], nm[inm])
        alpha = (1 - confidence) / 2
        low, high = (float(q) for q in np.quantile(boots, [alpha, 1 - alpha]))
    out["auc_low"], out["auc_high"] = low, high
    nm_desc = np.sort(nm)[::-1]
    for f in fprs:
        if not 0 < f < 1:
            raise ValueError(f"fprs must lie in (0, 1), got {f}")
        allowed = math.floor(f * nm.size + 1e-9)  # false positives allowed
        tpr = 1.0 if allowed >= nm.size else float(np.mean(m > nm_desc[allowed]))
        out[_fpr_key(f)] = tpr
    out.update(n_members=int(m.size), n_nonmembers=int(nm.size), n_boot=int(n_boot), confidence=confidence)
    return out


def membership_scores_report(
    member_stats: dict[str, Any],
    nonmember_stats: dict[str, Any],
    *,
    member_ref: dict[str, Any] | None = None,
    nonmember_ref: dict[str, Any] | None = None,
    member_zlib: Any = None,
    nonmember_zlib: Any = None,
    k: float = 0.2,
    calib_fraction: float = 0.5,
    seed: int = 0,
    n_boot: int = 1000,
) -> dict[str, Any]:
    """Every `attack_scores` score on one held-out split: {score: roc_metrics + F1} plus the split sizes.

    Split by `calibration_split(calib_fraction, seed)` (balanced, calibration and evaluation disjoint). Per score:
    `roc_metrics` on the evaluation split (bootstrap seeded by `seed`), and the thresholded attack of
    `membership_inference` (threshold by `choose_threshold` on the calibration split only, `membership_f1` on the
    evaluation split); those read lower = member, so they get the negated score, and `threshold` is reported back
    in score units (member iff score >= threshold). References and zlib lengths are given for both sets or neither.
    """
    if (member_ref is None) != (nonmember_ref is None):
        raise ValueError("give member_ref and nonmember_ref together, or neither")
    if (member_zlib is None) != (nonmember_zlib is None):
        raise ValueError("give member_zlib and nonmember_zlib together, or neither")
    sm = attack_scores(member_stats, ref_stats=member_ref, zlib_bytes=member_zlib, k=k)
    snm = attack_scores(nonmember_stats, ref_stats=nonmember_ref, zlib_bytes=nonmember_zlib, k=k)
    n_m, n_nm = next(iter(sm.values())).size, next(iter(snm.values())).size
    split = calibration_split(n_m, n_nm, calib_fraction, seed)
    out: dict[str, Any] = {}
    for name, m in sm.items():
        nm = snm[name]
        thr, info = _threshold_with_info(
            -m[split["member_calib"]], -nm[split["nonmember_calib"]], "balanced_accuracy", 0.05
        )
        me, nme = m[split["member_eval"]], nm[split["nonmember_eval"]]
        res = roc_metrics(me, nme, n_boot=n_boot, seed=seed)
        f1 = membership_f1(-me, -nme, thr)
        res.update(f1=f1["f1"], precision=f1["precision"], recall=f1["recall"], threshold=-thr)
        res["threshold_rule"] = info["rule"]
        out[name] = res
    out.update(
        n_calib=int(split["member_calib"].size),
        n_eval=int(split["member_eval"].size),
        n_members=n_m,
        n_nonmembers=n_nm,
        k=k,
        seed=seed,
    )
    return out
