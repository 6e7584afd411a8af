"""Memorization of a loaded model, given the texts it was trained on (members), texts it never saw (non-members) and
optionally a reference model (Morris et al. 2025; Carlini et al. 2021, 2023; the MIMIR family of attacks).

Every text becomes its first `seq_len` tokens (shorter texts are left out and counted). Measures:

* unintended memorization (bits): per member, max(0, NLL_ref - NLL_model) in bits over tokens 2..S
  (`measures.memorization.unintended_memorization`), summed and per sequence; needs the reference, which must
  share the model's tokenizer (code lengths of the same tokens);
* k-extractability: greedy decoding from each member's first k tokens reproduces the rest exactly
  (`measures.memorization.sequence_scores`, teacher-forced, equal to greedy decoding), for each prefix length;
* membership inference: the loss, reference-calibrated loss, zlib, Min-K% and Min-K%++ scores, each with ROC AUC
  and a bootstrap interval, TPR at 0.1% and 1% FPR on the evaluation split, and the thresholded F1 with the
  threshold chosen on a disjoint calibration split (`measures.membership.membership_scores_report`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

PREFIX_LENGTHS = (8, 16, 32)


class OverlapError(ValueError):
    """Member and non-member sets share a sequence: membership is undefined for it."""


def token_rows(texts: list[str], tokenizer: Any, seq_len: int) -> tuple[np.ndarray, list[str]]:
    """(N, seq_len) token ids of the texts with at least seq_len tokens, and the text of those ids (what is scored:
    the zlib score divides the NLL of these tokens by the compressed size of this text, not of the whole text)."""
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    kept = [ids[:seq_len] for ids in encoded if len(ids) >= seq_len]
    if not kept:
        return np.zeros((0, seq_len), dtype=np.int64), []
    return np.asarray(kept, dtype=np.int64), [tokenizer.decode(ids) for ids in kept]


def memorization_metrics(
    model: Any,
    tokenizer: Any,
    members: list[str],
    nonmembers: list[str],
    *,
    reference: Any = None,
    seq_len: int = 64,
    prefix_lengths: tuple[int, ...] = PREFIX_LENGTHS,
    batch_size: int = 32,
    k: float = 0.2,
    calib_fraction: float = 0.5,
    seed: int = 0,
    n_boot: int = 1000,
) -> tuple[dict[str, float], dict[str, Any], list[dict]]:
    """(metrics, summary, samples): see the module docstring. Raises OverlapError / ValueError on bad sets."""
    import torch

    from gapt_bench.measures.membership import (
        attack_scores,
        calibration_split,
        membership_scores_report,
        zlib_length,
    )
    from gapt_bench.measures.memorization import (
        rows_in,
        sequence_scores,
        token_statistics,
        unintended_memorization,
    )

    m_rows, m_texts = token_rows(members, tokenizer, seq_len)
    n_rows, n_texts = token_rows(nonmembers, tokenizer, seq_len)
    for name, rows, given in (("member", m_rows, members), ("non-member", n_rows, nonmembers)):
        if len(rows) < 4:
            raise ValueError(
                f"only {len(rows)} of {len(given)} {name} texts have {seq_len} tokens; membership needs at least 4 "
                f"of each: give more or longer texts, or a smaller --member-tokens"
            )
    shared = rows_in(m_rows, n_rows)
    if shared.any():
        raise OverlapError(
            f"{int(shared.sum())} member sequences also occur among the non-members (first {seq_len} tokens); "
            f"membership is undefined for them: remove them from one of the two sets"
        )
    prefixes = tuple(p for p in prefix_lengths if 1 <= p < seq_len)
    device = next(model.parameters()).device
    stats_m = token_statistics(model, torch.from_numpy(m_rows), batch_size=batch_size, device=device)
    stats_n = token_statistics(model, torch.from_numpy(n_rows), batch_size=batch_size, device=device)
    _, hits = sequence_scores(model, torch.from_numpy(m_rows), prefixes, batch_size=batch_size, device=device)
    bits_m = -stats_m["logp"].sum(axis=1) / math.log(2)
    bits_n = -stats_n["logp"].sum(axis=1) / math.log(2)
    ref_m = ref_n = None
    metrics: dict[str, float] = {}
    if reference is not None:
        ref_device = next(reference.parameters()).device
        ref_m = token_statistics(reference, torch.from_numpy(m_rows), batch_size=batch_size, device=ref_device)
        ref_n = token_statistics(reference, torch.from_numpy(n_rows), batch_size=batch_size, device=ref_device)
        ref_bits = -ref_m["logp"].sum(axis=1) / math.log(2)
        mem = unintended_memorization(bits_m, ref_bits)
        metrics["unintended_memorization_bits"] = float(mem.sum())
        metrics["unintended_memorization_bits_per_seq"] = float(mem.mean())
    zlib_m = np.asarray([zlib_length(t) for t in m_texts], dtype=np.float64)
    zlib_n = np.asarray([zlib_length(t) for t in n_texts], dtype=np.float64)
    for p in prefixes:
        metrics[f"extraction_rate_p{p}"] = float(hits[p].mean())
    report = membership_scores_report(
        stats_m,
        stats_n,
        member_ref=ref_m,
        nonmember_ref=ref_n,
        member_zlib=zlib_m,
        nonmember_zlib=zlib_n,
        k=k,
        calib_fraction=calib_fraction,
        seed=seed,
        n_boot=n_boot,
    )
    for name, res in report.items():
        if not isinstance(res, dict):  # the split sizes beside the per-score results
            continue
        for key, value in res.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                metrics[f"mi_{name}_{_metric_key(key)}"] = float(value)
    metrics["member_nll_bits_per_token"] = float(bits_m.mean() / (seq_len - 1))
    metrics["nonmember_nll_bits_per_token"] = float(bits_n.mean() / (seq_len - 1))
    summary = {
        "members": len(m_rows),
        "members_given": len(members),
        "nonmembers": len(n_rows),
        "nonmembers_given": len(nonmembers),
        "member_tokens": seq_len,
        "prefix_lengths": list(prefixes),
        "min_k_fraction": k,
        "calib_fraction": calib_fraction,
        "split_seed": seed,
        "membership": {k2: v for k2, v in report.items() if not isinstance(v, dict)},
    }
    # per sequence: every score (higher = member) and the split it fell in, so AUCs and ROCs can be recomputed
    split = calibration_split(len(m_rows), len(n_rows), calib_fraction, seed)
    where = {}
    for label, prefix in (("member", "member"), ("nonmember", "nonmember")):
        for part in ("calib", "eval"):
            where.update({(label, int(i)): part for i in split[f"{prefix}_{part}"]})
    scores_of = {
        "member": attack_scores(stats_m, ref_stats=ref_m, zlib_bytes=zlib_m, k=k),
        "nonmember": attack_scores(stats_n, ref_stats=ref_n, zlib_bytes=zlib_n, k=k),
    }
    samples = []
    for label, rows_bits, ref_stats, zl, idx_hits in (
        ("member", bits_m, ref_m, zlib_m, hits),
        ("nonmember", bits_n, ref_n, zlib_n, None),
    ):
        for i in range(len(rows_bits)):
            row: dict[str, Any] = {
                "set": label,
                "index": i,
                "split": where.get((label, i), "unused"),
                "nll_bits": float(rows_bits[i]),
                "zlib_bytes": int(zl[i]),
                **{f"score_{name}": float(v[i]) for name, v in scores_of[label].items()},
            }
            if ref_stats is not None:
                row["ref_nll_bits"] = float(-ref_stats["logp"][i].sum() / math.log(2))
            if idx_hits is not None:
                row.update({f"extracted_p{p}": bool(idx_hits[p][i]) for p in prefixes})
            samples.append(row)
    return metrics, summary, samples


def _metric_key(key: str) -> str:
    """Metric-name-safe form of a report key: `tpr_at_0.1%` -> `tpr_at_0.1pct`."""
    return key.replace("%", "pct")
