"""Estimators for memorization in text models (Morris et al. 2025, capacity-paper.md sections 1, 3 and 3.5).

Pure functions over models and arrays: no file I/O, no task or config knowledge. A `text_memorization` task and
its analysis compose them.

- Code lengths: `sequence_nll_bits` is -log2 p(x_2..x_S | x_1) per sequence, the arithmetic-coding length the paper
  uses for H^K(x | model) (section 1). Strict first-token convention: token 1 is never predicted, as in
  `gapt_bench.tasks.synthetic_capacity.task`.
- Unintended memorization (section 1): per sequence max(0, nll_ref - nll_model), clipped per *sequence*; the
  dataset total is the sum, a lower bound on the dataset-level quantity (Proposition 1).
- Data-to-capacity ratio (section 3, double descent): dataset information = sum of reference code lengths,
  divided by alpha * P.
- Extraction (section 3): greedy continuation of a prefix, success = exact match of the whole remainder.
- Membership inference (section 3): loss threshold (Yeom et al. 2018) scored by F1 on a balanced set, threshold
  chosen on a calibration split disjoint from the scored one.
- The membership-inference law (section 3.5): the corrected form that reproduces the paper's validation table, the
  printed (inconsistent) form, its inverse, and a least-squares fit of the same functional form.
- `exact_dedup` and `rows_in` (section 3 data preparation: exact deduplication, and the check that non-members
  never occur in the training pool) and `double_descent_peak` (section 3, a descriptive locator).
- `sequence_scores`: code lengths and greedy extraction from one forward pass (what a task evaluates; the one
  implementation of both: `sequence_nll_bits` and teacher-forced `greedy_extraction` read one of its outputs).

Units: all code lengths are bits (log base 2). Membership losses are per-sequence *mean* NLL in bits per
predicted token, i.e. `sequence_nll_bits(...) / (S - 1)`.
"""
from __future__ import annotations

import contextlib
import math
import warnings
from typing import Any, Hashable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import optimize, special
from scipy import stats as st

from gapt_bench.analysis.paper import PAPER_ALPHA_SLOPE
from gapt_bench.stats import describe

# Membership-inference law constants as printed (section 3.5) and the slope k of the corrected argument k*|D|/P.
MI_C1, MI_C2, MI_C3 = 1.34, -0.034, -33.14
MI_K = 977.0

THRESHOLD_RULES = ("balanced_accuracy", "f1", "median")
X_SCALES = ("linear", "log10")


# -- code lengths ------------------------------------------------------------------------------------------------
def _model_device(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def _as_tokens(tokens: Any, min_len: int) -> torch.Tensor:
    t = torch.as_tensor(tokens)
    if t.dim() != 2:
        raise ValueError(f"tokens must be a 2-D (N, S) integer tensor, got shape {tuple(t.shape)}")
    if t.dtype.is_floating_point or t.dtype == torch.bool:
        raise ValueError(f"tokens must be integer ids, got dtype {t.dtype}")
    if t.shape[1] < min_len:
        raise ValueError(f"sequences need at least {min_len} tokens, got S = {t.shape[1]}")
    return t.long()


class _EvalMode:
    """eval() + no_grad inside, the model's training flag restored on exit (also on error)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model, self.was_training = model, model.training
        self.no_grad = torch.no_grad()

    def __enter__(self) -> None:
        self.model.eval()
        self.no_grad.__enter__()

    def __exit__(self, *exc: Any) -> None:
        self.no_grad.__exit__(*exc)
        self.model.train(self.was_training)


def sequence_nll_bits(model: torch.nn.Module, tokens: torch.Tensor, *, batch_size: int = 256,
                      device: torch.device | str | None = None) -> np.ndarray:
    """Per-sequence code length -log2 p(x_2..x_S | x_1) in bits: shape (N,), float64.

    This is the arithmetic-coding estimate of H^K(x | model) (capacity-paper.md section 1), summed over the S - 1
    *predicted* tokens of each row of `tokens` (int64, (N, S)). Strict first-token convention: token 1 is context
    only and is not coded, as `gapt_bench.tasks.synthetic_capacity.task` does. For unintended memorization the choice
    cancels (both models would code token 1 the same way); for dataset information it leaves out S^-1 of the bits.

    `model` is a Hugging Face causal LM called as `model(input_ids=x, use_cache=False).logits`; it runs in eval
    mode under no_grad and its training flag is restored. Log-probabilities are taken in float32 from whatever
    precision the forward runs at (wrap the call in an autocast context to measure at a training precision).
    `device` defaults to the model's device; the model is never moved. The code lengths of `sequence_scores`.
    """
    return sequence_scores(model, tokens, (), batch_size=batch_size, device=device)[0]


def _paired_arrays(a: Any, b: Any, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"{names[0]} and {names[1]} must be 1-D arrays of equal length, got {x.shape} and {y.shape}")
    return x, y


def unintended_memorization(nll_model_bits: Any, nll_ref_bits: Any) -> np.ndarray:
    """Per-sequence unintended memorization in bits: max(0, log2 p(x|theta_hat) - log2 p(x|theta_ref)).

    Equal to max(0, nll_ref - nll_model) with both code lengths from `sequence_nll_bits`. Section 1 of
    capacity-paper.md: H^K(x | theta_ref) ~ nll_ref and H^K(x | theta_ref, theta_hat) ~ min(nll_ref, nll_model)
    (the joint coder uses whichever model is better for the *whole* sequence; the 1-bit flag is ignored), so
    mem_U = nll_ref - min(nll_ref, nll_model). The max with 0 is taken per sequence, never per token: a per-token
    min would need a flag per token, and it would count positive parts of sequences the model codes worse overall.
    NaN (a failed measurement) propagates.
    """
    model, ref = _paired_arrays(nll_model_bits, nll_ref_bits, ("nll_model_bits", "nll_ref_bits"))
    return np.maximum(0.0, ref - model)


def total_unintended_memorization(nll_model_bits: Any, nll_ref_bits: Any) -> float:
    """Sum of the per-sequence `unintended_memorization` in bits.

    By super-additivity (capacity-paper.md section 1, Proposition 1) the sum of per-sample values is a *lower
    bound* on the dataset-level mem_U(X), itself bounded by the model's entropy H(theta_hat).
    """
    return float(unintended_memorization(nll_model_bits, nll_ref_bits).sum())


def dataset_information_bits(nll_ref_bits: Any) -> float:
    """Dataset information in bits: sum_i -log2 p(x_i | theta_ref) (capacity-paper.md section 3, double descent).

    For text the paper measures data by "the compression rates of the reference model"; this is the numerator of
    the data-to-capacity ratio. Under the strict convention token 1 of each sequence is not included.
    """
    ref = np.asarray(nll_ref_bits, dtype=np.float64)
    if ref.ndim != 1:
        raise ValueError(f"nll_ref_bits must be 1-D, got shape {ref.shape}")
    return float(ref.sum())


def capacity_ratio(info_bits: float, n_params: int, alpha: float = PAPER_ALPHA_SLOPE) -> float:
    """Data-to-capacity ratio info_bits / (alpha * P) (section 3); the paper puts the test-loss peak at 1.

    Default alpha = 3.64 bits/parameter, the paper's bf16 regression slope (section 0); pass a measured alpha
    (e.g. from `gapt_bench.analysis.capacity`) when one exists.
    """
    if n_params <= 0 or alpha <= 0:
        raise ValueError(f"n_params and alpha must be > 0, got {n_params} and {alpha}")
    return float(info_bits) / (alpha * n_params)


# -- extraction --------------------------------------------------------------------------------------------------
def greedy_extraction(model: torch.nn.Module, tokens: torch.Tensor, prefix_len: int, *, batch_size: int = 256,
                      device: torch.device | str | None = None, method: str = "teacher_forced") -> np.ndarray:
    """Per sequence: does greedy decoding from the first `prefix_len` tokens reproduce the rest exactly? (N,) bool.

    Extraction as in capacity-paper.md section 3 (prefixes of 8/16/32 tokens, success = exact match of the rest
    of the 64-token sequence). Greedy = argmax of the next-token logits (first index on ties, torch.argmax).

    method="teacher_forced" (default, the hits of `sequence_scores`) runs one forward per batch on the true sequence
    and checks that the argmax at every position prefix_len-1 .. S-2 equals the next true token. This is *exactly* the greedy exact-match
    outcome: while greedy decoding agrees with the sequence its context *is* the true prefix, so it reproduces the
    whole remainder iff every teacher-forced argmax matches (causal attention makes position t independent of
    later tokens). It is S - prefix_len times cheaper than decoding. method="decode" decodes literally (one
    forward per generated token, batched over sequences, no KV cache) and gives the same answer up to float
    differences between forward lengths; it exists to check that equivalence.

    Eval mode and no_grad inside; the training flag is restored. Raises ValueError unless 1 <= prefix_len < S.
    """
    if method not in ("teacher_forced", "decode"):
        raise ValueError(f"method must be 'teacher_forced' or 'decode', got {method!r}")
    if method == "teacher_forced":
        return sequence_scores(model, tokens, [prefix_len], batch_size=batch_size, device=device)[1][prefix_len]
    return _greedy_decode(model, tokens, prefix_len, batch_size, device)


def _greedy_decode(model: torch.nn.Module, tokens: torch.Tensor, prefix_len: int, batch_size: int,
                   device: torch.device | str | None) -> np.ndarray:
    """`greedy_extraction(method="decode")`: literal greedy decoding, the check of the teacher-forced shortcut."""
    x_all = _as_tokens(tokens, 2)
    seq_len = x_all.shape[1]
    if not 1 <= prefix_len < seq_len:
        raise ValueError(f"prefix_len must satisfy 1 <= prefix_len < S = {seq_len}, got {prefix_len}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = torch.device(device) if device is not None else _model_device(model)
    out = np.zeros(x_all.shape[0], dtype=bool)
    with _EvalMode(model):
        for i in range(0, x_all.shape[0], batch_size):
            x = x_all[i:i + batch_size].to(dev)
            ctx = x[:, :prefix_len]
            for _ in range(seq_len - prefix_len):
                nxt = model(input_ids=ctx, use_cache=False).logits[:, -1].float().argmax(dim=-1, keepdim=True)
                ctx = torch.cat([ctx, nxt.to(ctx.dtype)], dim=1)
            out[i:i + x.shape[0]] = (ctx[:, prefix_len:] == x[:, prefix_len:]).all(dim=1).cpu().numpy()
    return out


def extraction_rate(model: torch.nn.Module, tokens: torch.Tensor, prefix_len: int, *, batch_size: int = 256,
                    device: torch.device | str | None = None, method: str = "teacher_forced") -> float:
    """Fraction of sequences extracted by `greedy_extraction` (NaN for an empty set)."""
    hits = greedy_extraction(model, tokens, prefix_len, batch_size=batch_size, device=device, method=method)
    return float(hits.mean()) if hits.size else float("nan")


def sequence_scores(model: torch.nn.Module, tokens: torch.Tensor, prefix_lens: Sequence[int] = (), *,
                    batch_size: int = 256, device: torch.device | str | None = None,
                    context: Any = None) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Code lengths and greedy extraction from one forward pass per batch: (nll_bits (N,), {prefix_len: hits (N,)}).

    `nll_bits` is `sequence_nll_bits` (strict convention, float64 bits) and `hits[p]` is `greedy_extraction(...,
    p, method="teacher_forced")`: the argmax at every position p-1 .. S-2 equals the next true token. Both read the
    logits of the same forward on the whole sequence (the teacher-forced argmax at position t depends only on
    tokens 1..t under causal attention, so the outcome equals greedy decoding; see `greedy_extraction`). A task
    that needs both on a large set (text memorization: every training sequence) halves its evaluation this way.

    `context`: a callable returning a context manager entered around each forward (e.g. bf16 autocast, to measure
    at the training precision); log-probabilities are taken in float32 either way. Eval mode and no_grad inside,
    the training flag restored. Raises ValueError unless 1 <= p < S for every prefix length.
    """
    x_all = _as_tokens(tokens, 2)
    seq_len = x_all.shape[1]
    prefixes = [int(p) for p in prefix_lens]
    for p in prefixes:
        if not 1 <= p < seq_len:
            raise ValueError(f"prefix_len must satisfy 1 <= prefix_len < S = {seq_len}, got {p}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = torch.device(device) if device is not None else _model_device(model)
    nll_out = np.empty(x_all.shape[0], dtype=np.float64)
    hits_out = {p: np.zeros(x_all.shape[0], dtype=bool) for p in prefixes}
    with _EvalMode(model):
        for i in range(0, x_all.shape[0], batch_size):
            x = x_all[i:i + batch_size].to(dev)
            with (context() if context is not None else contextlib.nullcontext()):
                logits = model(input_ids=x, use_cache=False).logits
            logits = logits[:, :-1].float()  # position t predicts token t+1
            nll = F.cross_entropy(logits.transpose(1, 2), x[:, 1:], reduction="none")  # (B, S-1) nats
            nll_out[i:i + x.shape[0]] = nll.double().sum(dim=1).cpu().numpy()
            if prefixes:
                correct = logits.argmax(dim=-1) == x[:, 1:]  # (B, S-1): correct[:, t] predicts token t+1
                for p in prefixes:
                    hits_out[p][i:i + x.shape[0]] = correct[:, p - 1:].all(dim=1).cpu().numpy()
    return nll_out / math.log(2), hits_out


# -- membership inference ----------------------------------------------------------------------------------------
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
    return {"precision": precision, "recall": recall, "f1": f1, "threshold": float(threshold), "n": int(m.size),
            "tp": tp, "fp": fp, "fn": fn}


def _threshold_with_info(member: Any, nonmember: Any, rule: str, null_fallback_p: float | None
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


def choose_threshold(calib_member_losses: Any, calib_nonmember_losses: Any, *, rule: str = "balanced_accuracy",
                     null_fallback_p: float | None = 0.05) -> float:
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
    u_nm = ranks[m.size:].sum() - nm.size * (nm.size + 1) / 2  # pairs with the non-member ranked higher
    return float(u_nm / (m.size * nm.size))


def calibration_split(n_members: int, n_nonmembers: int, calib_fraction: float = 0.5, seed: int = 0
                      ) -> dict[str, np.ndarray]:
    """Index arrays of the calibration/evaluation split used by `membership_inference`.

    n = min(n_members, n_nonmembers) of each set are drawn by a seeded permutation (numpy default_rng(seed):
    members first, then non-members); the first round(calib_fraction * n) of each form the calibration split, the
    remaining ones the evaluation split. Both splits are balanced and disjoint.
    """
    if not 0 < calib_fraction < 1:
        raise ValueError(f"calib_fraction must lie in (0, 1), got {calib_fraction}")
    n = min(n_members, n_nonmembers)
    n_cal = int(round(calib_fraction * n))
    if not 1 <= n_cal < n:
        raise ValueError(f"need at least one calibration and one evaluation pair; n = {n}, "
                         f"calib_fraction = {calib_fraction} gives {n_cal} calibration pairs")
    rng = np.random.default_rng(seed)
    pm, pn = rng.permutation(n_members)[:n], rng.permutation(n_nonmembers)[:n]
    return {"member_calib": pm[:n_cal], "member_eval": pm[n_cal:],
            "nonmember_calib": pn[:n_cal], "nonmember_eval": pn[n_cal:]}


def membership_inference(member_losses: Any, nonmember_losses: Any, calib_fraction: float = 0.5, seed: int = 0, *,
                         rule: str = "balanced_accuracy", null_fallback_p: float | None = 0.05) -> dict[str, Any]:
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
    method = (f"loss threshold (Yeom et al. 2018): member iff mean NLL <= threshold; balanced "
              f"{n_cal + n_eval}+{n_cal + n_eval} drawn by default_rng({seed}) permutations; first {n_cal} of each "
              f"(calib_fraction {calib_fraction}) calibrate the threshold ({info['rule']}), the other {n_eval} of "
              f"each are scored")
    out = {"f1": res["f1"], "precision": res["precision"], "recall": res["recall"],
           "auc": membership_auc(me, nme), "threshold": thr, "threshold_rule": info["rule"],
           "n_calib": n_cal, "n_eval": n_eval, "n_members": int(m.size), "n_nonmembers": int(nm.size),
           "calib_fraction": calib_fraction, "seed": seed, "method": method}
    if "ks_p" in info:
        out["calib_ks_p"] = info["ks_p"]
    return out


# -- membership-inference law (section 3.5) -----------------------------------------------------------------------
def mi_law_paper_corrected(d_over_p: Any, c1: float = MI_C1, c2: float = MI_C2, c3: float = MI_C3,
                           k: float = MI_K) -> np.ndarray:
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


def mi_law_printed(d_over_p: Any, c1: float = MI_C1, c2: float = MI_C2, c3: float = MI_C3,
                   alpha: float = PAPER_ALPHA_SLOPE) -> np.ndarray:
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


def fit_mi_law(d_over_p: Any, f1: Any, *, x_scale: str = "linear", c1: float | None = None, k: float = MI_K,
               maxfev: int = 20000) -> dict[str, Any]:
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
    r, y = _paired_arrays(d_over_p, f1, ("d_over_p", "f1"))
    keep = np.isfinite(r) & np.isfinite(y) & ((r > 0) if x_scale == "log10" else (r >= 0))
    r, y = r[keep], y[keep]
    n_params = 2 if c1 is not None else 3
    out: dict[str, Any] = {"ok": False, "why": None, "form": "F1 = 0.5 * (1 + c1 * sigmoid(a * u + b))",
                           "x_scale": x_scale, "u": "d_over_p" if x_scale == "linear" else "log10(d_over_p)",
                           "n": int(r.size), "n_params": n_params, "c1_fixed": c1 is not None, "params": None,
                           "stderr": None, "rms": None}
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
    out["midpoint_d_over_p"] = mid if x_scale == "linear" else (float(10 ** mid) if abs(mid) < 300 else None)
    if x_scale == "linear" and a != 0:
        out["paper_equivalent"] = {"c1": params["c1"], "c2": a / k, "c3": b * k / a, "k": k}
    return out


# -- data and double descent ---------------------------------------------------------------------------------------
def exact_dedup(sequences: Any) -> np.ndarray:
    """Indices of the first occurrence of each distinct row of `sequences` (N, S), in increasing order.

    The paper's extra exact deduplication of 64-token FineWeb sequences (section 3): truncation leaves 1-2 %
    duplicates, which inflate extraction rates. Only identical rows are duplicates; `sequences[idx]` keeps the
    original order.
    """
    x = np.ascontiguousarray(np.asarray(sequences))
    if x.ndim != 2:
        raise ValueError(f"sequences must be 2-D (N, S), got shape {x.shape}")
    if x.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    _, first = np.unique(x, axis=0, return_index=True)
    return np.sort(first).astype(np.int64)


def _row_keys(x: np.ndarray) -> np.ndarray:
    """A 64-bit FNV-1a-style key per row (vectorised over rows); equal rows have equal keys."""
    h = np.full(x.shape[0], 0xCBF29CE484222325, dtype=np.uint64)
    prime = np.uint64(0x100000001B3)
    with np.errstate(over="ignore"):
        for j in range(x.shape[1]):
            h = (h ^ x[:, j].astype(np.uint64)) * prime
    return h


def rows_in(rows: Any, others: Any) -> np.ndarray:
    """(N,) bool: whether each row of `rows` (N, S) equals some row of `others` (M, S), exactly.

    For checking that held-out (non-member) sequences never occur in a training pool (capacity-paper.md section 3:
    non-members come from unused data). Rows are matched by a 64-bit key, then every key match is confirmed
    element by element, so a key collision never counts as an overlap. Linear in N + M (plus a sort of M).
    """
    a, b = np.asarray(rows), np.asarray(others)
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"rows and others must be 2-D, got shapes {a.shape} and {b.shape}")
    out = np.zeros(a.shape[0], dtype=bool)
    if a.shape[0] == 0 or b.shape[0] == 0:
        return out
    if a.shape[1] != b.shape[1]:
        return out  # rows of different lengths are never equal
    ka, kb = _row_keys(a), _row_keys(b)
    order = np.argsort(kb, kind="stable")
    kbs = kb[order]
    pos = np.searchsorted(kbs, ka)
    hit = (pos < kbs.size) & (kbs[np.minimum(pos, kbs.size - 1)] == ka)
    for i in np.flatnonzero(hit):
        j = int(pos[i])
        while j < kbs.size and kbs[j] == ka[i]:
            if np.array_equal(a[i], b[order[j]]):
                out[i] = True
                break
            j += 1
    return out


def _group_ratios(r: np.ndarray, rtol: float) -> list[np.ndarray]:
    order = np.argsort(r, kind="stable")
    groups: list[list[int]] = []
    for i in order:
        if groups and abs(r[i] - r[groups[-1][0]]) <= rtol * abs(r[groups[-1][0]]):
            groups[-1].append(int(i))
        else:
            groups.append([int(i)])
    return [np.asarray(g) for g in groups]


def double_descent_peak(ratios: Any, test_losses: Any, *, factor: float = 2.0, group_rtol: float = 0.01
                        ) -> dict[str, Any]:
    """Where one model's mean test loss peaks against the data-to-capacity ratio (capacity-paper.md section 3).

    Call once per model. Points (one per run) whose ratios agree within `group_rtol` (relative, default 1 %:
    seeds of one dataset size differ slightly in reference code length, while a size grid steps by ~2x) form one
    ratio, their mean; non-finite losses are dropped. The peak is the ratio with the highest mean test loss.
    It is "located" only when it is bracketed by at least one smaller and one larger ratio; then
    `within_factor` says whether 1/factor <= peak <= factor (default factor 2) around the paper's ratio 1.
    A descriptive locator, not a test: no uncertainty on the peak's position is claimed (per-ratio means carry
    the t-intervals of `gapt_bench.stats.describe`).
    """
    r, y = _paired_arrays(ratios, test_losses, ("ratios", "test_losses"))
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    keep = np.isfinite(r) & np.isfinite(y)
    r, y = r[keep], y[keep]
    out: dict[str, Any] = {"peak_ratio": None, "peak_loss": None, "located": False, "within_factor": None,
                           "factor": factor, "n_points": int(r.size), "per_ratio": []}
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
        out["statement"] = (f"highest mean test loss at ratio {peak:.3g}, the {edge}: the maximum is not "
                            f"bracketed, so no peak is located")
        return out
    out["within_factor"] = bool(1.0 / factor <= peak <= factor)
    where = "within" if out["within_factor"] else "not within"
    out["statement"] = (f"test-loss peak at data/capacity ratio {peak:.3g} (mean loss {means[i]:.4g}), {where} a "
                        f"factor {factor:g} of 1 (descriptive, not a test)")
    return out


def double_descent_peaks(ratios: Any, test_losses: Any, models: Sequence[Hashable], *, factor: float = 2.0,
                         group_rtol: float = 0.01) -> dict[Hashable, dict[str, Any]]:
    """`double_descent_peak` for each model label in `models` (one label per point), in first-seen order."""
    r, y = _paired_arrays(ratios, test_losses, ("ratios", "test_losses"))
    labels = list(models)
    if len(labels) != r.size:
        raise ValueError(f"models has {len(labels)} labels for {r.size} points")
    out: dict[Hashable, dict[str, Any]] = {}
    for lab in dict.fromkeys(labels):
        idx = [i for i, m in enumerate(labels) if m == lab]
        out[lab] = double_descent_peak(r[idx], y[idx], factor=factor, group_rtol=group_rtol)
    return out
