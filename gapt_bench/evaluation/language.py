"""CE, bits per byte and per-layer MBE of a loaded model on a corpus, in two windowings.

* ``chunks`` (what a run's validation does, `tasks/fineweb_lm`): the documents' tokens, each document followed by
  EOS, joined into one stream and cut to ``max_tokens + 1`` tokens; windows j are tokens [j*S, j*S + S] (S inputs,
  targets shifted by one), attention crossing document boundaries. ``ce`` = mean next-token CE (nats) over all
  targets; ``bpb`` = ce / ln 2 * tokens / bytes of the whole documents (EOS counted as a token), as `val_bpb`.
  With the run's corpus, split and token budget this gives a run's `val_ce` back.
* ``rolling`` (lm-evaluation-harness's rolling log-likelihood): each document alone, EOS as its first context
  token, every token predicted once in disjoint windows of S predictions whose context reaches back S tokens;
  ``ce_rolling`` = -sum log-likelihood / tokens and ``bpb_rolling`` = -sum log-likelihood / UTF-8 bytes / ln 2
  (lm-eval's corpus-level bits_per_byte), so models with different tokenizers compare.

MBE (``mbe``) is measured on the first ``mbe_windows`` chunks, per decoder layer, with the same functions training
uses (`measures.entropy.matrix_entropy_per_patch` over `measures.hidden_states.forward_with_hidden`), the centred
control beside each: `mbe_layer_<i>`, `mbe`, `mbe_centered`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

WINDOWINGS = ("chunks", "rolling", "both")


@dataclass
class Documents:
    texts: list[str]
    ids: list[list[int]]  # each document's tokens, without EOS
    n_bytes: int


def take_documents(texts: Any, tokenizer: Any, max_tokens: int, batch: int = 64) -> Documents:
    """Whole documents, in order, until their tokens plus one EOS each reach `max_tokens` (the token cache's rule
    for a run's validation split: `data/token_cache.py`)."""
    out_texts: list[str] = []
    out_ids: list[list[int]] = []
    total, pending = 0, []

    def flush() -> bool:
        nonlocal total
        encoded = tokenizer(pending, add_special_tokens=False)["input_ids"]
        for text, ids in zip(pending, encoded):
            out_texts.append(text)
            out_ids.append(list(ids))
            total += len(ids) + 1
            if total >= max_tokens:
                return True
        pending.clear()
        return False

    for text in texts:
        pending.append(text)
        if len(pending) >= batch and flush():
            break
    else:
        if pending:
            flush()
    return Documents(out_texts, out_ids, sum(len(t.encode("utf-8")) for t in out_texts))


def chunk_stream(docs: Documents, eos_id: int, max_tokens: int) -> np.ndarray:
    stream = np.fromiter((t for ids in docs.ids for t in (*ids, eos_id)), dtype=np.int64)
    return stream[: max_tokens + 1]


def rolling_windows(ids: Sequence[int], prefix_id: int, seq_len: int) -> list[tuple[list[int], list[int], int]]:
    """(inputs, targets, n_scored) per window: every token of `ids` is a target exactly once; the first window starts
    from `prefix_id`; later windows take a full context of `seq_len` tokens where the document has them, and only
    their last `n_scored` targets count (lm-eval's `get_rolling_token_windows` with context_len 1)."""
    tokens = [prefix_id, *ids]
    out = []
    for start in range(0, len(ids), seq_len):
        end = min(start + seq_len, len(ids))  # predict ids[start:end]
        lo = max(0, end - seq_len)  # inputs tokens[lo:end] predict tokens[lo+1:end+1] = ids[lo:end]
        out.append((tokens[lo:end], tokens[lo + 1 : end + 1], end - start))
    return out


def language_metrics(
    model: Any,
    tokenizer: Any,
    docs: Documents,
    *,
    seq_len: int,
    batch_size: int,
    max_tokens: int,
    windowing: str = "chunks",
    mbe: bool = True,
    alpha: float = 2.0,
    patch_size: int = 8,
    mbe_windows: int = 64,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, float], dict[str, Any], list[dict]]:
    """(metrics, summary, samples) of the model on the documents; samples are per chunk window and per document."""
    import torch

    from gapt_bench.measures.entropy import matrix_entropy_per_patch
    from gapt_bench.measures.hidden_states import forward_with_hidden
    from gapt_bench.tasks.base import mbe_metrics

    device = next(model.parameters()).device
    metrics: dict[str, float] = {}
    summary: dict[str, Any] = {"documents": len(docs.texts), "bytes": docs.n_bytes, "seq_len": seq_len}
    samples: list[dict] = []
    eos = tokenizer.eos_token_id
    # lm-eval's first context token: BOS where the tokenizer has one, else EOS (the suite's tokenizers: EOT both)
    prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos
    rows: list[tuple[list[int], list[int], int, int]] = []  # inputs, targets, targets scored, document
    if windowing in ("rolling", "both"):
        for d, ids in enumerate(docs.ids):
            rows += [(x, y, k, d) for x, y, k in rolling_windows(ids, prefix, seq_len)]
        if not rows:
            raise ValueError("the corpus has no tokens to score; pass a corpus with text (--data, --split)")
        summary["rolling_prefix_id"] = prefix
    stream = chunk_stream(docs, eos, max_tokens) if windowing in ("chunks", "both") or mbe else None
    n_chunks = (len(stream) - 1) // seq_len if stream is not None else 0
    if stream is not None and n_chunks < 1:
        raise ValueError(
            f"the corpus gives {len(stream)} tokens, fewer than one window of seq_len + 1 = {seq_len + 1}; "
            f"pass a larger corpus or --max-tokens, or a smaller --seq-len"
        )
    chunk_work = n_chunks if windowing in ("chunks", "both") else min(n_chunks, mbe_windows)
    total, done = chunk_work + len(rows), 0
    with torch.no_grad():
        if stream is not None:
            n_mbe = min(n_chunks, mbe_windows) if mbe else 0
            if mbe and seq_len % patch_size:
                raise ValueError(f"--seq-len {seq_len} is not a multiple of --patch-size {patch_size}; change one")
            L = None
            nll = n_tgt = 0.0
            plain: list[float] = []
            centred: list[float] = []
            n_patches = 0
            for i in range(0, chunk_work, batch_size):
                w = np.arange(i, min(i + batch_size, chunk_work))
                block = torch.from_numpy(stream[w[:, None] * seq_len + np.arange(seq_len + 1)[None, :]]).to(device)
                x, y = block[:, :-1], block[:, 1:]
                if bool((w < n_mbe).any()):
                    logits, hidden = forward_with_hidden(model, x)
                else:  # CE only: any causal LM, whether or not its blocks can be found
                    logits, hidden = model(input_ids=x, use_cache=False).logits, []
                per_row = _cross_entropy_rows(logits, y)
                nll += float(per_row.sum())
                n_tgt += y.numel()
                samples += [
                    {"window": int(j), "kind": "chunk", "nll": float(v), "tokens": seq_len} for j, v in zip(w, per_row)
                ]
                keep = torch.from_numpy(w < n_mbe).to(device)
                if bool(keep.any()):
                    if L is None:
                        L = len(hidden)
                        plain, centred = [0.0] * L, [0.0] * L
                    for li, h in enumerate(hidden):
                        h = h[keep].float()
                        plain[li] += float(matrix_entropy_per_patch(h, alpha, patch_size).double().sum())
                        centred[li] += float(
                            matrix_entropy_per_patch(h, alpha, patch_size, centered=True).double().sum()
                        )
                    n_patches += int(keep.sum()) * (seq_len // patch_size)
                done += len(w)
                if progress:
                    progress(done, total)
            if windowing in ("chunks", "both"):
                ce = nll / n_tgt
                tokens_per_byte = sum(len(ids) + 1 for ids in docs.ids) / max(docs.n_bytes, 1)
                metrics["ce"] = ce
                metrics["bpb"] = ce / math.log(2) * tokens_per_byte
                summary.update(chunk_windows=n_chunks, chunk_tokens=int(n_tgt))
            if n_patches:
                metrics.update(
                    mbe_metrics("", [v / n_patches for v in plain], [v / n_patches for v in centred], per_layer=True)
                )
                metrics.update({f"mbe_centered_layer_{i}": v / n_patches for i, v in enumerate(centred)})
                summary.update(mbe_windows=n_mbe, alpha=alpha, patch_size=patch_size)
        if rows:
            doc_nll = np.zeros(len(docs.ids))
            for i in range(0, len(rows), batch_size):
                part = rows[i : i + batch_size]
                width = max(len(x) for x, _, _, _ in part)
                x = torch.full((len(part), width), eos, dtype=torch.long)
                y = torch.full((len(part), width), -100, dtype=torch.long)
                for r, (xi, yi, k, _) in enumerate(part):  # right-padded; pads and context are never a target
                    x[r, : len(xi)] = torch.tensor(xi)
                    y[r, len(yi) - k : len(yi)] = torch.tensor(yi[len(yi) - k :])
                logits = model(input_ids=x.to(device), use_cache=False).logits
                per_row = _cross_entropy_rows(logits, y.to(device))
                for (_, _, _, d), v in zip(part, per_row):
                    doc_nll[d] += float(v)
                done += len(part)
                if progress:
                    progress(done, total)
            n_tok = sum(len(ids) for ids in docs.ids)
            metrics["ce_rolling"] = float(doc_nll.sum() / n_tok)
            metrics["bpb_rolling"] = float(doc_nll.sum() / docs.n_bytes / math.log(2))
            summary.update(rolling_windows=len(rows), rolling_tokens=n_tok)
            samples += [
                {"doc": d, "kind": "document", "nll": float(v), "tokens": len(ids), "bytes": len(t.encode("utf-8"))}
                for d, (v, ids, t) in enumerate(zip(doc_nll, docs.ids, docs.texts))
            ]
    return metrics, summary, samples


def _cross_entropy_rows(logits: Any, y: Any) -> Any:
    """Per-row summed next-token NLL (nats, float64 on the CPU) of targets y (-100: not a target)."""
    import torch.nn.functional as F

    return (
        F.cross_entropy(logits.float().transpose(1, 2), y, reduction="none", ignore_index=-100).double().sum(dim=1)
    ).cpu()
