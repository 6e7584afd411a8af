"""The task's sequences: cut from documents, deduplicated, split into the pool and the non-members, cached."""

from __future__ import annotations

import json
import os
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gapt_bench.config import ConfigError
from gapt_bench.data import (
    DataError,
    TokenCache,
    cache_root,
    cached_without_streaming,
    check_local_source,
    hub_unreachable_reason,
    resolve_source,
)
from gapt_bench.data.sources import LOCAL_FIX
from gapt_bench.measures import memorization as M
from gapt_bench.tasks.text_memorization.options import NONMEMBER_SEED, POOL_SEED, SEQ_FORMAT, TASK_NAME, _digest


@dataclass
class SequenceData:
    pool: np.ndarray  # (n_pool, S), the references' data; training sets are subsets
    nonmembers: np.ndarray  # (n_nonmembers, S), held-out documents only, none equal to a training sequence
    key: str  # identity of everything above (part of each reference's key)
    stats: dict[str, Any]


def cut_sequences(tokens: np.ndarray, eot_id: int, seq_len: int, rule: str) -> np.ndarray:
    """(n, S) int64 sequences cut from a flat token array of documents separated by `eot_id` (a last document
    without a trailing EOT, cut by a token budget, counts too). `rule`: chunks | first (see the module)."""
    tokens = np.asarray(tokens)
    ends = np.flatnonzero(tokens == eot_id)
    starts = np.concatenate([[0], ends + 1]).astype(np.int64)
    stops = np.concatenate([ends, [tokens.shape[0]]]).astype(np.int64)
    lengths = stops - starts
    if rule == "first":
        row_starts = starts[lengths >= seq_len]
    else:
        n_chunks = lengths // seq_len
        keep = n_chunks > 0
        reps = np.repeat(starts[keep], n_chunks[keep])
        within = np.arange(reps.size) - np.repeat(np.cumsum(n_chunks[keep]) - n_chunks[keep], n_chunks[keep])
        row_starts = reps + within * seq_len
    if row_starts.size == 0:
        return np.zeros((0, seq_len), dtype=np.int64)
    return np.asarray(tokens[row_starts[:, None] + np.arange(seq_len)[None, :]], dtype=np.int64)


def _data_fields(cfg) -> dict:
    d = cfg.data
    return {
        "source": d.source,
        "name": d.name,
        "tokenizer": d.tokenizer,
        "val_fraction": d.val_fraction,
        "read_tokens": d.read_tokens,
        "val_tokens": d.val_tokens,
        "cut": d.cut,
        "dedup": d.dedup,
        "pool_sequences": d.pool_sequences,
        "nonmember_sequences": d.nonmember_sequences,
        "seq_len": cfg.train.seq_len,
        "cache_dir": d.cache_dir,
    }


_MEMO: dict[str, SequenceData] = {}


def _tokens(cfg):
    """The source's token files (the token cache). A source shorter than a budget is not warned about here: the
    task counts the distinct sequences it needs itself and refuses, in one line, a source that has too few."""
    d = cfg.data
    src = resolve_source(d.source, d.name)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*text available of the .* requested", category=UserWarning)
        return TokenCache(d.cache_dir).get(
            src, d.tokenizer, val_tokens=d.val_tokens, train_tokens=d.read_tokens, val_fraction=d.val_fraction
        )


def prepare_sequences(cfg) -> SequenceData:
    """The pool and the non-members of a config: built once (kept in memory and under `<cache>/text_memorization/
    sequences/`), then reused by every run and plan. Raises DataError when the source has too few distinct
    sequences for the pool or the non-members."""
    memo_key = _digest(
        {
            **_data_fields(cfg),
            "identity": resolve_source(cfg.data.source, cfg.data.name).identity(),
            "root": str(cache_root(cfg.data.cache_dir)),
        }
    )
    if memo_key in _MEMO:
        return _MEMO[memo_key]
    d = cfg.data
    tok = _tokens(cfg)
    key = _digest(
        {
            "v": SEQ_FORMAT,
            "tokens": tok.meta.get("keys"),
            "source": tok.source,
            "tokenizer": tok.tokenizer.fingerprint,
            **{k: v for k, v in _data_fields(cfg).items() if k != "cache_dir"},
        }
    )
    path = cache_root(d.cache_dir) / TASK_NAME / "sequences" / f"{key}.npz"
    data = _load_sequences(path, key)
    if data is None:
        data = _build_sequences(cfg, tok, key)
        _save_npz(path, pool=data.pool, nonmembers=data.nonmembers, stats=np.array(json.dumps(data.stats)))
    data.stats["cache_file"] = str(path)
    _MEMO[memo_key] = data
    return data


def _load_sequences(path: Path, key: str) -> SequenceData | None:
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            stats = json.loads(str(z["stats"]))
            return SequenceData(z["pool"], z["nonmembers"], key, stats)
    except (OSError, ValueError, KeyError):
        return None


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp.npz")
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _build_sequences(cfg, tok, key: str) -> SequenceData:
    d, S = cfg.data, cfg.train.seq_len
    eot = tok.eot_id
    dtype = np.uint16 if tok.vocab_size <= 2**16 else np.uint32
    train_all = cut_sequences(tok.train.tokens, eot, S, d.cut)
    val_all = cut_sequences(tok.val.tokens, eot, S, d.cut)
    train_distinct = train_all[M.exact_dedup(train_all)] if d.dedup else train_all
    val_distinct = val_all[M.exact_dedup(val_all)] if d.dedup else val_all
    # no held-out sequence may equal any training candidate (the references see the pool, a subset)
    overlap = M.rows_in(val_distinct, train_distinct)
    val_clean = val_distinct[~overlap]
    label = f"data.source={d.source!r} ({tok.tokenizer.name} tokens, S={S}, cut={d.cut})"
    want_pool = d.pool_sequences if d.pool_sequences is not None else train_distinct.shape[0]
    if train_distinct.shape[0] < max(want_pool, 1):
        raise DataError(
            f"{label} has {train_distinct.shape[0]:,} distinct training sequences, fewer than "
            f"data.pool_sequences={want_pool:,}; lower data.pool_sequences, read more text "
            f"(data.read_tokens) or use a larger source"
        )
    if val_clean.shape[0] < d.nonmember_sequences:
        raise DataError(
            f"{label} has {val_clean.shape[0]:,} distinct held-out sequences (after removing "
            f"{int(overlap.sum())} equal to training ones), fewer than data.nonmember_sequences="
            f"{d.nonmember_sequences:,}; lower it, raise data.val_tokens or data.val_fraction"
        )
    perm = np.random.default_rng(POOL_SEED).permutation(train_distinct.shape[0])[:want_pool]
    pool = train_distinct[perm].astype(dtype)
    perm_nm = np.random.default_rng(NONMEMBER_SEED).permutation(val_clean.shape[0])[: d.nonmember_sequences]
    nonmembers = val_clean[perm_nm].astype(dtype)
    final_overlap = int(M.rows_in(nonmembers, pool).sum())
    if final_overlap:  # cannot happen (checked against a superset above); never measure on a leaked set
        raise DataError(f"{final_overlap} non-member sequences equal pool sequences; report this as a bug")
    stats = {
        "source": tok.source,
        "tokenizer": tok.tokenizer.name,
        "vocab_size": tok.vocab_size,
        "seq_len": S,
        "cut": d.cut,
        "dedup": d.dedup,
        "train_docs": tok.train.n_docs,
        "heldout_docs": tok.val.n_docs,
        "train_tokens_read": tok.train.n_tokens,
        "heldout_tokens_read": tok.val.n_tokens,
        "train_candidates": int(train_all.shape[0]),
        "train_duplicates_removed": int(train_all.shape[0] - train_distinct.shape[0]),
        "train_distinct": int(train_distinct.shape[0]),
        "heldout_candidates": int(val_all.shape[0]),
        "heldout_duplicates_removed": int(val_all.shape[0] - val_distinct.shape[0]),
        "heldout_equal_to_training_removed": int(overlap.sum()),
        "heldout_distinct_clean": int(val_clean.shape[0]),
        "pool": int(pool.shape[0]),
        "nonmembers": int(nonmembers.shape[0]),
        "nonmember_pool_overlap": final_overlap,
        "disjointness": "non-members come from held-out documents; every held-out sequence equal to a "
        "distinct training sequence was dropped; rechecked on the final sets: 0 overlap",
    }
    return SequenceData(pool, nonmembers, key, stats)


def _source_countable(cfg) -> bool:
    """Whether planning can count the source's sequences without streaming: a finite source, or a hub source
    whose token files are already cached. A hub source that is unreachable and not cached raises DataError."""
    d = cfg.data
    src = resolve_source(d.source, d.name)
    if src.kind == "local":
        check_local_source(src)
    if src.kind != "hub":
        return True
    if d.read_tokens is None:
        raise ConfigError(f"data.source={d.source!r} is streamed: set data.read_tokens (training tokens to read)")
    if cached_without_streaming(
        src, d.tokenizer, d.cache_dir, val_tokens=d.val_tokens, train_tokens=d.read_tokens, val_fraction=d.val_fraction
    ):
        return True
    why = hub_unreachable_reason()
    if why is not None:
        raise DataError(
            f"the Hugging Face hub is unreachable ({why}), so {d.source} cannot be streamed and its "
            f"tokens are not cached; {LOCAL_FIX}"
        )
    return False
