"""Estimators for memorization in text models (Morris et al. 2025, capacity-paper.md sections 1 and 3).

Pure functions over models and arrays: no file I/O, no task or config knowledge. The `text_memorization` task and
`gapt-bench eval` compose them; membership inference is in `membership`, the laws fitted across runs (the
membership-inference law, the double-descent locator) in `gapt_bench.results.analysis.laws`.

- Code lengths: `sequence_nll_bits` is -log2 p(x_2..x_S | x_1) per sequence, the arithmetic-coding length the paper
  uses for H^K(x | model) (section 1). Strict first-token convention: token 1 is never predicted, as in
  `gapt_bench.tasks.synthetic_capacity.task`.
- Unintended memorization (section 1): per sequence max(0, nll_ref - nll_model), clipped per *sequence*; the
  dataset total is the sum, a lower bound on the dataset-level quantity (Proposition 1).
- Data-to-capacity ratio (section 3, double descent): dataset information = sum of reference code lengths,
  divided by alpha * P.
- Extraction (section 3): greedy continuation of a prefix, success = exact match of the whole remainder.
- `exact_dedup` and `rows_in` (section 3 data preparation: exact deduplication, and the check that non-members
  never occur in the training pool).
- `sequence_scores`: code lengths and greedy extraction from one forward pass (what a task evaluates; the one
  implementation of both: `sequence_nll_bits` and teacher-forced `greedy_extraction` read one of its outputs).
- `token_statistics`: per-token log p of the true token and the mean/sd of log p under the model, what the
  Min-K% and Min-K%++ membership scores (`membership.attack_scores`) read.

Units: all code lengths are bits (log base 2).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch is imported by the functions that run a model: the array estimators stay light
    import torch

# The capacity paper's alpha: bits per parameter, its bf16 regression slope in the paper's convention
# (capacity-paper.md section 0). `capacity_ratio` sizes datasets against it; the claims table reads it from here.
PAPER_ALPHA_SLOPE = 3.64


# -- code lengths ------------------------------------------------------------------------------------------------
def _model_device(model: torch.nn.Module) -> torch.device:
    import torch

    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def _as_tokens(tokens: Any, min_len: int) -> torch.Tensor:
    import torch

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
        import torch

        self.model, self.was_training = model, model.training
        self.no_grad = torch.no_grad()

    def __enter__(self) -> None:
        self.model.eval()
        self.no_grad.__enter__()

    def __exit__(self, *exc: Any) -> None:
        self.no_grad.__exit__(*exc)
        self.model.train(self.was_training)


def sequence_nll_bits(
    model: torch.nn.Module, tokens: torch.Tensor, *, batch_size: int = 256, device: torch.device | str | None = None
) -> np.ndarray:
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


def paired_arrays(a: Any, b: Any, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
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
    model, ref = paired_arrays(nll_model_bits, nll_ref_bits, ("nll_model_bits", "nll_ref_bits"))
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
    (e.g. from `gapt_bench.results.analysis.capacity`) when one exists.
    """
    if n_params <= 0 or alpha <= 0:
        raise ValueError(f"n_params and alpha must be > 0, got {n_params} and {alpha}")
    return float(info_bits) / (alpha * n_params)


# -- extraction --------------------------------------------------------------------------------------------------
def greedy_extraction(
    model: torch.nn.Module,
    tokens: torch.Tensor,
    prefix_len: int,
    *,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    method: str = "teacher_forced",
) -> np.ndarray:
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


def _greedy_decode(
    model: torch.nn.Module, tokens: torch.Tensor, prefix_len: int, batch_size: int, device: torch.device | str | None
) -> np.ndarray:
    """`greedy_extraction(method="decode")`: literal greedy decoding, the check of the teacher-forced shortcut."""
    import torch

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
            x = x_all[i : i + batch_size].to(dev)
            ctx = x[:, :prefix_len]
            for _ in range(seq_len - prefix_len):
                nxt = model(input_ids=ctx, use_cache=False).logits[:, -1].float().argmax(dim=-1, keepdim=True)
                ctx = torch.cat([ctx, nxt.to(ctx.dtype)], dim=1)
            out[i : i + x.shape[0]] = (ctx[:, prefix_len:] == x[:, prefix_len:]).all(dim=1).cpu().numpy()
    return out


def extraction_rate(
    model: torch.nn.Module,
    tokens: torch.Tensor,
    prefix_len: int,
    *,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    method: str = "teacher_forced",
) -> float:
    """Fraction of sequences extracted by `greedy_extraction` (NaN for an empty set)."""
    hits = greedy_extraction(model, tokens, prefix_len, batch_size=batch_size, device=device, method=method)
    return float(hits.mean()) if hits.size else float("nan")


def sequence_scores(
    model: torch.nn.Module,
    tokens: torch.Tensor,
    prefix_lens: Sequence[int] = (),
    *,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    context: Any = None,
) -> tuple[np.ndarray, dict[int, np.ndarray]]:
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
    import torch
    import torch.nn.functional as F

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
            x = x_all[i : i + batch_size].to(dev)
            with context() if context is not None else contextlib.nullcontext():
                logits = model(input_ids=x, use_cache=False).logits
            logits = logits[:, :-1].float()  # position t predicts token t+1
            nll = F.cross_entropy(logits.transpose(1, 2), x[:, 1:], reduction="none")  # (B, S-1) nats
            nll_out[i : i + x.shape[0]] = nll.double().sum(dim=1).cpu().numpy()
            if prefixes:
                correct = logits.argmax(dim=-1) == x[:, 1:]  # (B, S-1): correct[:, t] predicts token t+1
                for p in prefixes:
                    hits_out[p][i : i + x.shape[0]] = correct[:, p - 1 :].all(dim=1).cpu().numpy()
    return nll_out / math.log(2), hits_out


def token_statistics(
    model: torch.nn.Module,
    tokens: torch.Tensor,
    *,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    context: Any = None,
) -> dict[str, np.ndarray]:
    """Per-token statistics for the membership attacks: {"logp", "mu", "sigma"}, each float64 (N, S - 1), nats.

    Column t - 1 is the prediction of token t + 1 from tokens 1..t, t = 1..S-1 (strict convention, as
    `sequence_scores`: token 1 is context only): `logp` = log p(x_{t+1} | x_1..x_t), and `mu` = E_{z~p}[log p(z)]
    (minus the entropy) and `sigma` = sqrt(Var_{z~p}[log p(z)]) of the same next-token distribution p. Min-K% (Shi et al. 2024) needs `logp`, Min-K%++
    (Zhang et al. 2024) standardises it by `mu` and `sigma`; `gapt_bench.measures.membership.attack_scores` reads
    this dict. Tokens outside the support (log p = -inf) add nothing to `mu`/`sigma`.

    Unlike `sequence_scores` this keeps a few (B, S - 1, V) float32 tensors per batch, hence the smaller default
    `batch_size`. `context`, eval mode, no_grad, device and precision handling as in `sequence_scores`.
    """
    import torch

    x_all = _as_tokens(tokens, 2)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = torch.device(device) if device is not None else _model_device(model)
    shape = (x_all.shape[0], x_all.shape[1] - 1)
    out = {key: np.empty(shape, dtype=np.float64) for key in ("logp", "mu", "sigma")}
    with _EvalMode(model):
        for i in range(0, x_all.shape[0], batch_size):
            x = x_all[i : i + batch_size].to(dev)
            with context() if context is not None else contextlib.nullcontext():
                logits = model(input_ids=x, use_cache=False).logits
            lp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (B, S-1, V): position t predicts token t+1
            logp = lp.gather(-1, x[:, 1:, None]).squeeze(-1)
            p = lp.exp()
            lp = lp.nan_to_num_(neginf=0.0)  # p = 0 there: 0 * log 0 counts as 0, not NaN
            mu = (p * lp).sum(dim=-1)
            var = lp.sub_(mu[..., None]).square_().mul_(p).sum(dim=-1)  # centred: no E[l^2] - mu^2 cancellation
            rows = slice(i, i + x.shape[0])
            out["logp"][rows] = logp.double().cpu().numpy()
            out["mu"][rows] = mu.double().cpu().numpy()
            out["sigma"][rows] = var.clamp_min(0.0).sqrt().double().cpu().numpy()
    return out


# -- data ---------------------------------------------------------------------------------------
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
