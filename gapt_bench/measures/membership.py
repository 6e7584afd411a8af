"""Membership inference (Morris et al. 2025 section 3; Yeom et al. 2018): is a sequence in the training set?

A loss threshold scored by F1 on a balanced set, the threshold chosen on a calibration split disjoint from the
scored one; ROC AUC beside it. Membership losses are per-sequence *mean* NLL in bits per predicted token, i.e.
`sequence_nll_bits(...) / (S - 1)`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats as st

THRESHOLD_RULES = ("balanced_accuracy", "f1", "median")


# -- ----------------------------------------------------------------------------------------
def _losses(values: Any, name: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains non-finite losses")
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
