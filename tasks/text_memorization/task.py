"""Text memorization (Morris et al. 2025, sections 4-5; capacity-paper.md sections 1, 3 and 3.5).

How much of a text training set does a model memorize beyond what it generalizes, and can it be extracted or
detected? A sweep over training-set size N per model size, every method at the same token budget.

Data (every choice the paper leaves open is a `data.*` field, recorded in each run):

* Text from the source the suite already reads (`gapt_bench.text`): ``offline`` (the bundled public-domain corpus;
  the CPU presets), a local parquet/jsonl with a ``text`` column (FineWeb on disk), or a hub id
  (``HuggingFaceFW/fineweb``, streamed; then ``data.read_tokens`` bounds what is read). Tokenised once into the
  token cache. Documents are split by a keyed hash of their text (`doc_split`, ``data.val_fraction``): training
  candidates and held-out candidates never share a document.
* Sequences of S = ``train.seq_len`` tokens cut from each document (``data.cut``: ``chunks`` = every
  non-overlapping S-token chunk inside a document, the tail dropped; ``first`` = the first S tokens of each
  document, the paper's "truncation"). Never across document boundaries, no EOT inside a sequence.
* Exact deduplication (``data.dedup``; `memorization.exact_dedup`) of the training candidates and, separately, of
  the held-out candidates; then every held-out sequence equal to *any* distinct training sequence is dropped
  (`memorization.rows_in`), so no non-member occurs in the pool, and the check is repeated on the final sets and
  recorded (``summary.data.nonmember_pool_overlap`` = 0 and how many were dropped).
* The **pool**: ``data.pool_sequences`` distinct training sequences (null: all of them), drawn by a fixed
  permutation (the same for every seed). The reference models train on the whole pool.
* The **training set** of a run: the first N sequences of a permutation of the pool seeded by ``data.data_seed``
  (null: the run seed), so the sets of one seed are nested across N.
* **Non-members**: ``data.nonmember_sequences`` held-out sequences (a fixed permutation): the test loss,
  extraction and membership inference read them. They are disjoint from the training set and from the
  references' data by construction and by the check above.

Sizing N: ``data.n_sequences`` directly, or ``data.capacity_ratio``: N = round(ratio * alpha * P /
(sizing_bits_per_token * (S - 1))), with P the paper's parameter count and ``data.sizing_bits_per_token`` an
estimate of the reference's code length per predicted token (N must be known while planning, before any reference
exists). Each run records the requested ratio and the realised one, Σ -log2 p(x | θ_ref) over its training set /
(alpha * P), measured with the trained reference.

Reference models, trained once per (data, architecture, recipe, seed, device, precision) and cached under
``<cache>/text_memorization/references/<key>.{pt,npz,json}`` (``<cache>``: ``data.cache_dir``, else
``$GAPT_BENCH_CACHE``, else ``~/.cache/gapt_bench``: the token cache's home, so a new results folder reuses them):

* (a) ``ref``: the run's architecture trained on the whole pool with the run's recipe (CE only) for
  ``data.ref_tokens`` tokens (null: ``train.tokens``). The paper's main reference.
* (b) ``oracle`` (optional, ``data.oracle_n_layer`` > 0): a larger model, same recipe and pool, for
  ``data.oracle_tokens`` tokens (null: the reference's budget).

A run that needs a reference which is not cached claims it (`store.try_claim` on the reference's key: an
exclusive-create claim file with a heartbeat; a dead owner's claim is taken over), trains it, writes its weights
(``.pt``), its per-sequence code lengths on the non-members (``.npz``), its training curve (``.curve.jsonl``) and
its provenance (``.json``, written last: its presence marks a complete reference), and releases the claim; a run
that finds it claimed waits for the files. So a parallel or resumed sweep trains each reference once. Each run
scores its own training set with the loaded reference (one forward pass). The reference never sees a non-member.
The sequence data (pool and non-members) are cached beside them under ``<cache>/text_memorization/sequences/``.

Measured per run (bits are log2; code lengths use the strict first-token convention of `gapt_bench.memorization`,
token 1 of a sequence is context only):

* ``train_ce`` / ``test_ce``: mean next-token CE (nats) on the training set / the non-members.
* ``mem_u_bits``: total unintended memorization of the training set against the reference,
  Σ_i max(0, log2 p(x_i | θ̂) − log2 p(x_i | θ_ref)), the max taken per *sequence*;
  ``mem_u_nonmember_bits_per_seq``: the same per non-member sequence (what the model knows beyond the reference on
  text it never saw: the floor). ``mem_u_oracle_*`` against the oracle when there is one.
* ``extract_train_p<k>`` / ``extract_test_p<k>``: fraction of training / non-member sequences whose remaining S − k
  tokens greedy decoding reproduces exactly from their first k tokens, for k in ``data.prefixes``.
* ``mi_f1`` (0.5 = chance) and ``mi_auc``: loss-threshold membership inference (Yeom et al. 2018) on a balanced set
  of up to ``data.mi_sequences`` members (training sequences) and as many non-members; the score is the mean NLL
  per predicted token; the threshold is chosen on a calibration split (``data.mi_calib_fraction`` of each, by
  ``data.mi_rule``) and F1 is scored on the other part only, so the threshold never sees the members it scores
  (`memorization.membership_inference`; the record's summary states the split).
* ``test_mbe`` / ``test_mbe_centered``: MBE of the non-members' hidden states (every method reports it).

The primary metric is ``test_ce``: at matched budgets, does a method generalize better to held-out text? The
memorization measures are diagnostics of the task's question (does compression change what is memorized,
extractable or detectable?), and for them lower is "better" in the privacy sense. N, P, the dataset information,
alpha * P, the realised ratio and |D|/P are properties of the setup, not of the method: they are in the record's
summary (``summary.sizing``), where the memorization analysis (`gapt_bench.analysis.memorization`) reads them.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import pickle
import time
import uuid
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gapt_bench import memorization as M
from gapt_bench.config import EXECUTION_FIELDS, ConfigError, opt
from gapt_bench.entropy import layer_entropies
from gapt_bench.models import build_model, forward_with_hidden, paper_param_count, param_count
from gapt_bench.registry import register_task
from gapt_bench.runtime import Interrupted, RunContext, autocast_context, resolve_precision
from gapt_bench.task import EpochOrder, Evaluation, LMTask, mbe_metrics, next_token_targets, size_vocab_for_tokenizer
from gapt_bench.text import (DataError, TokenCache, cache_root, cached_without_streaming, check_local_source,
                             hub_unreachable_reason, resolve_source)
from gapt_bench.text.options import name_option, source_option, tokenizer_option
from gapt_bench.text.sources import LOCAL_FIX

TASK_NAME = "text_memorization"
SEQ_FORMAT = 1  # bump when the cutting/dedup/selection rules change (part of every data and reference key)
REF_FORMAT = 1  # bump when what a cached reference holds changes
POOL_SEED = 0x5EED_9001  # the pool's fixed permutation (the same pool for every seed)
NONMEMBER_SEED = 0x5EED_9002
REF_SEED_OFFSET = 1_000_003  # a reference's init and data order: seed + offset (not the run's own trajectory)
WAIT_POLL_S = 1.0
SCORE_CHUNK = 65_536  # sequences converted to int64 at a time when scoring
ESTIMATOR_TEXT = ("per-sequence code length -log2 p(x_2..x_S | x_1) (strict: token 1 is context only); "
                  "mem_U(x) = max(0, nll_ref(x) - nll_model(x)) per sequence, summed over the set (no per-token "
                  "clipping); dataset information = sum of nll_ref over the training set")


@dataclass
class TextMemorizationOptions:
    source: str = source_option()
    name: str | None = name_option()
    tokenizer: str = tokenizer_option()
    pad_vocab_multiple: int = opt(1, "pad model.vocab_size up to a multiple of this (1 keeps the paper's P)", min=1)
    cache_dir: str | None = opt(None, "cache root for tokens, sequences and references (null: $GAPT_BENCH_CACHE "
                                      "or ~/.cache/gapt_bench)")
    val_fraction: float = opt(0.1, "fraction of documents held out (keyed hash of the text): the non-member "
                                   "candidates", min=0.0, max=1.0, max_open=True)
    read_tokens: int | None = opt(None, "training-split tokens to read from the source (null: the whole finite "
                                        "source; required for a hub source)", min=1)
    val_tokens: int = opt(262_144, "held-out tokens to read (whole documents, in source order)", min=1)
    cut: str = opt("chunks", "S-token sequences from a document: chunks (every non-overlapping S tokens, tail "
                             "dropped) or first (its first S tokens only: the paper's truncation)",
                   choices=("chunks", "first"))
    dedup: bool = opt(True, "exact deduplication of the training and held-out candidates (the paper: essential "
                            "for extraction rates)")
    pool_sequences: int | None = opt(None, "the pool (the references' data, every training set's superset): this "
                                           "many distinct training sequences by a fixed permutation; null = all",
                                     min=1)
    nonmember_sequences: int = opt(512, "non-member (held-out) sequences: test loss, extraction, membership "
                                        "inference", min=4)
    n_sequences: int = opt(256, "N: training sequences (ignored when capacity_ratio is set)", min=4)
    capacity_ratio: float | None = opt(None, "if set, N = round(ratio * alpha * P / (sizing_bits_per_token * "
                                             "(S-1))): dataset information over capacity, P the paper's count",
                                       min=0.0)
    alpha: float = opt(3.64, "bits per parameter of capacity alpha * P (sizing and the realised ratio; the "
                             "paper's slope)", min=0.0)
    sizing_bits_per_token: float = opt(3.0, "reference code length per predicted token (bits) assumed when "
                                            "sizing N from capacity_ratio (the realised ratio is measured)",
                                       min=0.0)
    data_seed: int | None = opt(None, "training-set seed (which N pool sequences); null = the run seed")
    ref_tokens: int | None = opt(None, "reference (a) budget in tokens, same recipe on the whole pool (null: "
                                       "train.tokens)", min=1)
    oracle_n_layer: int = opt(0, "oracle reference (b), a larger model on the pool: layers (0 = no oracle)", min=0)
    oracle_n_embd: int = opt(0, "oracle width", min=0)
    oracle_n_head: int = opt(0, "oracle heads", min=0)
    oracle_tokens: int | None = opt(None, "oracle budget in tokens (null: the reference's)", min=1)
    prefixes: list[int] = opt([8, 16, 32], "extraction prefix lengths (tokens); each below train.seq_len")
    mi_sequences: int = opt(2048, "membership inference: at most this many members and as many non-members",
                            min=4)
    mi_calib_fraction: float = opt(0.5, "membership inference: fraction of each set that calibrates the threshold "
                                        "(the rest is scored)", min=0.0, max=1.0, max_open=True)
    mi_rule: str = opt("balanced_accuracy", "membership threshold rule on the calibration split",
                       choices=M.THRESHOLD_RULES)
    mi_null_fallback_p: float | None = opt(0.05, "balanced_accuracy: fall back to the median threshold when the "
                                                 "one-sided KS p on the calibration split exceeds this (null: "
                                                 "never)", min=0.0, max=1.0)
    convention: str = opt("strict", "first-token convention of the code lengths (token 1 is context only)",
                          choices=("strict",))
    eval_batch: int = opt(256, "sequences per evaluation forward pass", min=1)


_N_DEFAULT = next(f.default for f in dataclasses.fields(TextMemorizationOptions) if f.name == "n_sequences")


def _digest(obj: Any, n: int = 20) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


# ---------------------------------------------------------------------------------------------------------------
# Sequences: cut, deduplicated, split into pool and non-members


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
    return {"source": d.source, "name": d.name, "tokenizer": d.tokenizer, "val_fraction": d.val_fraction,
            "read_tokens": d.read_tokens, "val_tokens": d.val_tokens, "cut": d.cut, "dedup": d.dedup,
            "pool_sequences": d.pool_sequences, "nonmember_sequences": d.nonmember_sequences,
            "seq_len": cfg.train.seq_len, "cache_dir": d.cache_dir}


_MEMO: dict[str, SequenceData] = {}


def _tokens(cfg):
    """The source's token files (the token cache). A source shorter than a budget is not warned about here: the
    task counts the distinct sequences it needs itself and refuses, in one line, a source that has too few."""
    d = cfg.data
    src = resolve_source(d.source, d.name)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*text available of the .* requested", category=UserWarning)
        return TokenCache(d.cache_dir).get(src, d.tokenizer, val_tokens=d.val_tokens, train_tokens=d.read_tokens,
                                           val_fraction=d.val_fraction)


def prepare_sequences(cfg) -> SequenceData:
    """The pool and the non-members of a config: built once (kept in memory and under `<cache>/text_memorization/
    sequences/`), then reused by every run and plan. Raises DataError when the source has too few distinct
    sequences for the pool or the non-members."""
    memo_key = _digest({**_data_fields(cfg), "identity": resolve_source(cfg.data.source, cfg.data.name).identity(),
                        "root": str(cache_root(cfg.data.cache_dir))})
    if memo_key in _MEMO:
        return _MEMO[memo_key]
    d = cfg.data
    tok = _tokens(cfg)
    key = _digest({"v": SEQ_FORMAT, "tokens": tok.meta.get("keys"), "source": tok.source,
                   "tokenizer": tok.tokenizer.fingerprint, **{k: v for k, v in _data_fields(cfg).items()
                                                                if k != "cache_dir"}})
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
        raise DataError(f"{label} has {train_distinct.shape[0]:,} distinct training sequences, fewer than "
                        f"data.pool_sequences={want_pool:,}; lower data.pool_sequences, read more text "
                        f"(data.read_tokens) or use a larger source")
    if val_clean.shape[0] < d.nonmember_sequences:
        raise DataError(f"{label} has {val_clean.shape[0]:,} distinct held-out sequences (after removing "
                        f"{int(overlap.sum())} equal to training ones), fewer than data.nonmember_sequences="
                        f"{d.nonmember_sequences:,}; lower it, raise data.val_tokens or data.val_fraction")
    perm = np.random.default_rng(POOL_SEED).permutation(train_distinct.shape[0])[:want_pool]
    pool = train_distinct[perm].astype(dtype)
    perm_nm = np.random.default_rng(NONMEMBER_SEED).permutation(val_clean.shape[0])[:d.nonmember_sequences]
    nonmembers = val_clean[perm_nm].astype(dtype)
    final_overlap = int(M.rows_in(nonmembers, pool).sum())
    if final_overlap:  # cannot happen (checked against a superset above); never measure on a leaked set
        raise DataError(f"{final_overlap} non-member sequences equal pool sequences; report this as a bug")
    stats = {"source": tok.source, "tokenizer": tok.tokenizer.name, "vocab_size": tok.vocab_size,
             "seq_len": S, "cut": d.cut, "dedup": d.dedup,
             "train_docs": tok.train.n_docs, "heldout_docs": tok.val.n_docs,
             "train_tokens_read": tok.train.n_tokens, "heldout_tokens_read": tok.val.n_tokens,
             "train_candidates": int(train_all.shape[0]),
             "train_duplicates_removed": int(train_all.shape[0] - train_distinct.shape[0]),
             "train_distinct": int(train_distinct.shape[0]),
             "heldout_candidates": int(val_all.shape[0]),
             "heldout_duplicates_removed": int(val_all.shape[0] - val_distinct.shape[0]),
             "heldout_equal_to_training_removed": int(overlap.sum()),
             "heldout_distinct_clean": int(val_clean.shape[0]),
             "pool": int(pool.shape[0]), "nonmembers": int(nonmembers.shape[0]),
             "nonmember_pool_overlap": final_overlap,
             "disjointness": "non-members come from held-out documents; every held-out sequence equal to a "
                             "distinct training sequence was dropped; rechecked on the final sets: 0 overlap"}
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
    if cached_without_streaming(src, d.tokenizer, d.cache_dir, val_tokens=d.val_tokens, train_tokens=d.read_tokens,
                                val_fraction=d.val_fraction):
        return True
    why = hub_unreachable_reason()
    if why is not None:
        raise DataError(f"the Hugging Face hub is unreachable ({why}), so {d.source} cannot be streamed and its "
                        f"tokens are not cached; {LOCAL_FIX}")
    return False


# ---------------------------------------------------------------------------------------------------------------
# Reference models: trained once, cached, claimed while training


@dataclass
class Reference:
    role: str  # "ref" | "oracle"
    key: str
    model: torch.nn.Module  # the trained reference (eval mode), scored on each run's training set
    nonmember_nll: np.ndarray  # bits per non-member sequence (strict convention), computed once
    meta: dict[str, Any]


class _PoolBatches:
    """The references' data order: per-epoch permutations of the whole pool (a pure function of the step)."""

    def __init__(self, pool: np.ndarray, batch_size: int, seed: int) -> None:
        self.pool, self.b = pool, batch_size
        self.order = EpochOrder(pool.shape[0], seed)

    def get_batch(self, step: int):
        x = torch.from_numpy(self.pool[self.order.indices(step, self.b).numpy()].astype(np.int64))
        return x, next_token_targets(x)

    def check(self, model, step, ctx) -> bool:
        return False


def reference_arch(cfg, role: str) -> dict:
    d, m = cfg.data, cfg.model
    if role == "ref":
        return {"n_layer": m.n_layer, "n_embd": m.n_embd, "n_head": m.n_head}
    return {"n_layer": d.oracle_n_layer, "n_embd": d.oracle_n_embd, "n_head": d.oracle_n_head}


def reference_tokens(cfg, role: str) -> int:
    d = cfg.data
    ref = d.ref_tokens if d.ref_tokens is not None else cfg.train.tokens
    return ref if role == "ref" else (d.oracle_tokens if d.oracle_tokens is not None else ref)


def reference_key(cfg, role: str, data_key: str, device: torch.device) -> str:
    """Everything the reference depends on: the sequences, its architecture and recipe, the seed, device type and
    precision (not the method, N, the training-set seed or the measurement options)."""
    train = dataclasses.asdict(cfg.train)
    for name in EXECUTION_FIELDS.get("train", ()):
        train.pop(name, None)
    train.update(tokens=reference_tokens(cfg, role), eval_every=0, device=device.type,
                 precision=resolve_precision(cfg.train.precision, device))
    m = cfg.model
    return _digest({"v": REF_FORMAT, "task_version": TextMemorization.version, "role": role, "data": data_key,
                    "arch": {**reference_arch(cfg, role), "vocab_size": m.vocab_size, "n_positions": m.n_positions,
                             "dropout": m.dropout}, "train": train, "seed": cfg.seed,
                    "convention": cfg.data.convention}, 24)


def reference_dir(cfg) -> Path:
    return cache_root(cfg.data.cache_dir) / TASK_NAME / "references"


def _build_arch(cfg, arch: dict) -> torch.nn.Module:
    m = cfg.model
    return build_model(n_layer=arch["n_layer"], n_embd=arch["n_embd"], n_head=arch["n_head"],
                       vocab_size=m.vocab_size, n_positions=m.n_positions, dropout=m.dropout)


def _load_reference(cfg, root: Path, key: str, role: str, device: torch.device) -> Reference | None:
    meta_p, npz_p, pt_p = root / f"{key}.json", root / f"{key}.npz", root / f"{key}.pt"
    if not (meta_p.is_file() and npz_p.is_file() and pt_p.is_file()):
        return None
    try:
        meta = json.loads(meta_p.read_text())
        with np.load(npz_p) as z:
            nm = z["nonmember_nll"]
        state = torch.load(pt_p, map_location=device, weights_only=True)
        model = _build_arch(cfg, meta["arch"])
        model.load_state_dict(state)
    except (OSError, ValueError, KeyError, RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile):
        return None
    model.to(device).eval()
    return Reference(role, key, model, nm, meta)


def ensure_reference(task: "TextMemorization", role: str, ctx: RunContext) -> Reference:
    """The cached reference of this config and role, training it first if no process has (see the module)."""
    from gapt_bench.store import try_claim

    cfg = task.cfg
    root = reference_dir(cfg)
    root.mkdir(parents=True, exist_ok=True)
    key = reference_key(cfg, role, task.data.key, ctx.device)
    waited, said = 0.0, False
    while True:
        found = _load_reference(cfg, root, key, role, ctx.device)
        if found is not None:
            found.meta = {**found.meta, "cache_hit": True, "waited_s": round(waited, 1)}
            return found
        claim, owner = try_claim(root, ("reference", key))
        if claim is None:
            if ctx.stop_requested():
                raise Interrupted(f"stopped while waiting for reference {key}")
            if not said:
                ctx.log(f"waiting for reference {role} {key}: being trained by pid {(owner or {}).get('pid')}")
                said = True
            time.sleep(WAIT_POLL_S)
            waited += WAIT_POLL_S
            continue
        try:
            if (root / f"{key}.json").is_file():  # finished between the check and the claim, or left incomplete
                found = _load_reference(cfg, root, key, role, ctx.device)
                if found is not None:
                    found.meta = {**found.meta, "cache_hit": True, "waited_s": round(waited, 1)}
                    return found
                _remove_reference(root, key, ctx)
            return _train_reference(task, role, key, root, ctx)
        finally:
            claim.release()


def _remove_reference(root: Path, key: str, ctx: RunContext) -> None:
    """Delete a reference whose provenance exists but whose weights or code lengths do not load (a truncated or
    missing .pt/.npz): holding its claim, the caller retrains it instead of finding the same files forever."""
    names = [f"{key}{suffix}" for suffix in (".json", ".pt", ".npz", ".curve.jsonl")]
    ctx.log(f"reference {key} in {root} is incomplete or unreadable; removing {', '.join(names)} and retraining")
    for name in names:
        (root / name).unlink(missing_ok=True)


def _train_reference(task: "TextMemorization", role: str, key: str, root: Path, ctx: RunContext) -> Reference:
    from gapt_bench.registry import METHODS
    from gapt_bench.train import train_lm

    cfg = task.cfg
    arch = reference_arch(cfg, role)
    rcfg = copy.deepcopy(cfg)
    rcfg.method = "baseline"
    rcfg.model.n_layer, rcfg.model.n_embd, rcfg.model.n_head = arch["n_layer"], arch["n_embd"], arch["n_head"]
    rcfg.train.tokens = reference_tokens(cfg, role)
    rcfg.train.eval_every = 0
    rcfg.align.every = 0
    seed = cfg.seed + REF_SEED_OFFSET
    torch.manual_seed(seed)
    m = rcfg.model
    model = _build_arch(cfg, arch)
    pool = task.data.pool
    work = root / f".{key}.{os.getpid()}.{uuid.uuid4().hex[:6]}.tmp"
    work.mkdir(parents=True)
    ctx.log(f"training reference {role} {key}: L{m.n_layer}/d{m.n_embd} on {pool.shape[0]:,} pool sequences, "
            f"{rcfg.train.tokens:,} tokens")
    try:
        rctx = RunContext(run_dir=work, device=ctx.device, log=ctx.log, stop_requested=ctx.stop_requested)
        method = METHODS.get("baseline")(rcfg, m.n_layer, matched=None)
        out = train_lm(model, _PoolBatches(pool, rcfg.train.batch_size, seed), method, rcfg, rctx)
        nm_nll = task.score(out.model, task.data.nonmembers, ctx.device)[0]
        S = cfg.train.seq_len
        meta = {"role": role, "key": key, "arch": arch, "n_params": param_count(out.model),
                "tokens": out.tokens, "steps": out.steps, "train_time_s": out.summary.get("train_time_s"),
                "seed": seed, "pool_sequences": int(pool.shape[0]),
                "epochs": out.tokens / (pool.shape[0] * S),
                "nonmember_bits_per_token": float(nm_nll.mean() / (S - 1)),
                "device": ctx.device.type, "precision": resolve_precision(cfg.train.precision, ctx.device),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        tmp_pt = root / f".{key}.{os.getpid()}.pt.tmp"
        torch.save(out.model.state_dict(), tmp_pt)
        os.replace(tmp_pt, root / f"{key}.pt")
        _save_npz(root / f"{key}.npz", nonmember_nll=nm_nll)
        if (work / "curve.jsonl").is_file():  # the reference's training curve, kept for inspection
            os.replace(work / "curve.jsonl", root / f"{key}.curve.jsonl")
        tmp_meta = root / f".{key}.{os.getpid()}.json.tmp"
        tmp_meta.write_text(json.dumps(meta, indent=1))
        os.replace(tmp_meta, root / f"{key}.json")  # written last: its presence marks a complete reference
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    out.model.eval()
    return Reference(role, key, out.model, nm_nll, {**meta, "cache_hit": False, "waited_s": 0.0})


# ---------------------------------------------------------------------------------------------------------------
# The task


@register_task(TASK_NAME)
class TextMemorization(LMTask):
    version = "1"
    description = ("unintended memorization, double descent, extraction and membership inference on text "
                   "(Morris et al. 2025)")
    Options = TextMemorizationOptions
    metrics = {"test_ce": "min", "train_ce": "min", "mem_u_bits": "min", "mem_u_nonmember_bits_per_seq": "min",
               "mem_u_oracle_bits": "min", "mem_u_oracle_nonmember_bits_per_seq": "min",
               "extract_train_p*": "min", "extract_test_p*": "min", "mi_f1": "min", "mi_auc": "min",
               "test_mbe": "min", "test_mbe_centered": "min"}
    primary = ("test_ce",)

    @classmethod
    def analyses(cls, records, reference: str = "baseline"):
        from gapt_bench.analysis.memorization import analyse_memorization

        return {"memorization": analyse_memorization(records, reference=reference)}

    # -- planning ----------------------------------------------------------------------------------------------
    @classmethod
    def finalize(cls, cfg) -> None:
        d, t = cfg.data, cfg.train
        S = t.seq_len
        size_vocab_for_tokenizer(cfg)
        if not d.prefixes:
            raise ConfigError("data.prefixes is empty; give extraction prefix lengths such as [8, 16, 32]")
        for p in d.prefixes:
            if not 1 <= p < S:
                raise ConfigError(f"data.prefixes has {p}: an extraction prefix must be at least 1 token and shorter "
                                  f"than the {S}-token sequences (train.seq_len) it is cut from; use prefixes "
                                  f"below {S}")
        if len(set(d.prefixes)) != len(d.prefixes):
            raise ConfigError(f"data.prefixes={d.prefixes} lists a length twice")
        if not 0.0 < d.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction={d.val_fraction} must be in (0, 1)")
        if not 0.0 < d.mi_calib_fraction < 1.0:
            raise ConfigError(f"data.mi_calib_fraction={d.mi_calib_fraction} must be in (0, 1)")
        oracle = (d.oracle_n_layer, d.oracle_n_embd, d.oracle_n_head)
        if any(oracle) and not all(oracle):
            raise ConfigError(f"the oracle needs data.oracle_n_layer, oracle_n_embd and oracle_n_head all > 0 "
                              f"(got {oracle}); or set all three to 0 for no oracle")
        if all(oracle) and d.oracle_n_embd % d.oracle_n_head:
            raise ConfigError(f"data.oracle_n_embd={d.oracle_n_embd} is not divisible by data.oracle_n_head="
                              f"{d.oracle_n_head}")
        if d.capacity_ratio is not None:
            if d.capacity_ratio <= 0 or d.alpha <= 0 or d.sizing_bits_per_token <= 0:
                raise ConfigError("data.capacity_ratio, data.alpha and data.sizing_bits_per_token must be > 0 to "
                                  "size N; or set data.n_sequences")
            n = sized_n(cfg)
            if d.n_sequences not in (n, _N_DEFAULT):
                raise ConfigError(f"data.n_sequences={d.n_sequences} conflicts with data.capacity_ratio="
                                  f"{d.capacity_ratio} (which gives N={n}); set data.capacity_ratio=null to fix N")
            d.n_sequences = max(n, 1)
        if d.n_sequences < 4:
            raise ConfigError(f"N = {d.n_sequences} training sequences: membership inference needs at least 4 "
                              f"(2 to calibrate, 2 to score); raise data.capacity_ratio or data.n_sequences")
        if d.pool_sequences is not None and d.n_sequences > d.pool_sequences:
            raise ConfigError(f"N = {d.n_sequences:,} training sequences exceed data.pool_sequences="
                              f"{d.pool_sequences:,}; the training set is drawn from the pool: raise the pool or "
                              f"lower N")
        if _source_countable(cfg):
            data = prepare_sequences(cfg)  # DataError when the source is too small for the pool/non-members
            if d.n_sequences > data.pool.shape[0]:
                raise DataError(f"data.source={d.source!r} gives {data.pool.shape[0]:,} distinct training sequences "
                                f"of {S} tokens (after exact dedup), fewer than N = {d.n_sequences:,}; lower N "
                                f"(data.capacity_ratio / data.n_sequences) or use a larger source")

    @classmethod
    def plan_summary(cls, cfg) -> str:
        d = cfg.data
        ratio = f" (ratio {d.capacity_ratio:g} at {d.sizing_bits_per_token:g} bits/token)" \
            if d.capacity_ratio is not None else ""
        return f"{super().plan_summary(cfg)} N={d.n_sequences:,}{ratio}"

    # -- data --------------------------------------------------------------------------------------------------
    def setup(self, ctx=None) -> None:
        if ctx is not None and ctx.world_size > 1:
            raise ConfigError("text_memorization runs on one device (its references are trained inside the run); "
                              "run it without torchrun")
        d = self.cfg.data
        self.data = prepare_sequences(self.cfg)
        n = d.n_sequences
        if n > self.data.pool.shape[0]:
            raise DataError(f"N = {n} exceeds the {self.data.pool.shape[0]} pool sequences")
        data_seed = self.cfg.seed if d.data_seed is None else d.data_seed
        self.train_idx = np.random.default_rng([data_seed, 0x7E47]).permutation(self.data.pool.shape[0])[:n]
        self.train = torch.from_numpy(self.data.pool[self.train_idx].astype(np.int64))
        self.order = EpochOrder(n, self.cfg.seed)
        self.nonmembers = torch.from_numpy(self.data.nonmembers.astype(np.int64))
        self.refs: dict[str, Reference] = {}
        if ctx is not None:
            self.refs["ref"] = ensure_reference(self, "ref", ctx)
            if d.oracle_n_layer:
                self.refs["oracle"] = ensure_reference(self, "oracle", ctx)

    def get_batch(self, step: int):
        """Sequences [step*B, (step+1)*B) of per-epoch permutations of the N training sequences (pure in step)."""
        x = self.train[self.order.indices(step, self.cfg.train.batch_size)]
        return x, next_token_targets(x)

    # -- measurement -------------------------------------------------------------------------------------------
    def score(self, model, tokens, device) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """Per-sequence code lengths (bits) and greedy extraction hits per prefix, at the training precision.
        `tokens`: (n, S) tensor or array, converted to int64 a chunk at a time (a paper-scale pool is large)."""
        dev = torch.device(device)
        nll, hits = [], {p: [] for p in self.cfg.data.prefixes}
        for i in range(0, max(len(tokens), 1), SCORE_CHUNK):
            part = tokens[i:i + SCORE_CHUNK]
            part = torch.from_numpy(np.asarray(part, dtype=np.int64)) if isinstance(part, np.ndarray) else part
            n, h = M.sequence_scores(model, part, self.cfg.data.prefixes, batch_size=self.cfg.data.eval_batch,
                                     device=dev, context=lambda: autocast_context(dev, self.cfg.train.precision))
            nll.append(n)
            for p in h:
                hits[p].append(h[p])
        return np.concatenate(nll), {p: np.concatenate(v) for p, v in hits.items()}

    def evaluate(self, model, ctx, trained) -> Evaluation:
        d, S = self.cfg.data, self.cfg.train.seq_len
        ln2 = math.log(2)
        n_params = param_count(model)
        tr_nll, tr_hits = self.score(model, self.train, ctx.device)
        te_nll, te_hits = self.score(model, self.nonmembers, ctx.device)
        metrics: dict[str, float] = {
            "test_ce": float(te_nll.mean() / (S - 1) * ln2), "train_ce": float(tr_nll.mean() / (S - 1) * ln2)}
        sizing: dict[str, Any] = {}
        refs: dict[str, Any] = {}
        for role, ref in self.refs.items():
            ref_tr, ref_te = self.score(ref.model, self.train, ctx.device)[0], ref.nonmember_nll
            prefix = "mem_u_" if role == "ref" else "mem_u_oracle_"
            metrics[f"{prefix}bits"] = M.total_unintended_memorization(tr_nll, ref_tr)
            metrics[f"{prefix}nonmember_bits_per_seq"] = M.total_unintended_memorization(te_nll, ref_te) / len(te_nll)
            refs[role] = {**ref.meta, "train_ce": float(ref_tr.mean() / (S - 1) * ln2),
                          "test_ce": float(ref_te.mean() / (S - 1) * ln2),
                          "mem_u_bits_per_seq": metrics[f"{prefix}bits"] / len(tr_nll)}
            if role == "ref":
                info = M.dataset_information_bits(ref_tr)
                sizing = {"n_sequences": int(d.n_sequences), "n_params": n_params,
                          "paper_param_count": paper_param_count(self.cfg.model.n_layer, self.cfg.model.n_embd,
                                                                 self.cfg.model.vocab_size,
                                                                 self.cfg.model.n_positions),
                          "alpha": d.alpha, "capacity_bits": d.alpha * n_params, "data_info_bits": info,
                          "info_bits_per_token": info / (len(ref_tr) * (S - 1)),
                          "capacity_ratio": M.capacity_ratio(info, n_params, d.alpha),
                          "capacity_ratio_requested": d.capacity_ratio,
                          "sizing_bits_per_token": d.sizing_bits_per_token if d.capacity_ratio is not None else None,
                          "d_over_p": d.n_sequences / n_params,
                          "epochs": trained.tokens / (d.n_sequences * S)}
        for p in d.prefixes:
            metrics[f"extract_train_p{p}"] = float(tr_hits[p].mean())
            metrics[f"extract_test_p{p}"] = float(te_hits[p].mean())
        k = min(d.mi_sequences, len(tr_nll), len(te_nll))
        data_seed = self.cfg.seed if d.data_seed is None else d.data_seed
        mi = M.membership_inference(tr_nll[:k] / (S - 1), te_nll[:k] / (S - 1), d.mi_calib_fraction, data_seed,
                                    rule=d.mi_rule, null_fallback_p=d.mi_null_fallback_p)
        metrics.update({"mi_f1": mi["f1"], "mi_auc": mi["auc"]})
        metrics.update(self._mbe(model, ctx))
        summary = {"sizing": sizing, "references": refs,
                   "membership_inference": {**{k2: v for k2, v in mi.items()}, "members": "the first k training "
                                            "sequences (a random subset: the training set is a seeded draw)",
                                            "nonmembers": "the first k non-members", "k": k,
                                            "score": "mean NLL bits per predicted token"},
                   "extraction": {"prefixes": list(d.prefixes), "rule": "greedy (argmax, teacher-forced check "
                                  "= exact greedy decoding), success = exact match of the remaining tokens",
                                  "train_sequences": len(tr_nll), "nonmember_sequences": len(te_nll),
                                  "train_hits": {str(p): int(tr_hits[p].sum()) for p in d.prefixes},
                                  "test_hits": {str(p): int(te_hits[p].sum()) for p in d.prefixes}},
                   "mi_precision": mi["precision"], "mi_recall": mi["recall"]}
        return Evaluation(metrics, summary)

    @torch.no_grad()
    def _mbe(self, model, ctx) -> dict[str, float]:
        mb = self.cfg.mbe
        x = self.nonmembers[:64].to(ctx.device)
        was = model.training
        model.eval()
        try:
            with autocast_context(ctx.device, self.cfg.train.precision):
                _, hidden = forward_with_hidden(model, x)
            hidden = [h.float() for h in hidden]
        finally:
            model.train(was)
        return mbe_metrics("test_", layer_entropies(hidden, mb.alpha, mb.patch_size).tolist(),
                           layer_entropies(hidden, mb.alpha, mb.patch_size, centered=True).tolist(),
                           per_layer=False)

    def summary(self, trained, ctx) -> dict:
        d = self.cfg.data
        return {"data": dict(self.data.stats), "estimator": ESTIMATOR_TEXT, "convention": d.convention,
                "precision": resolve_precision(self.cfg.train.precision, ctx.device),
                "data_seed": self.cfg.seed if d.data_seed is None else d.data_seed,
                "train_sequences": int(d.n_sequences)}


def sized_n(cfg) -> int:
    """N from data.capacity_ratio: round(ratio * alpha * P / (sizing_bits_per_token * (S - 1)))."""
    d, m, t = cfg.data, cfg.model, cfg.train
    p = paper_param_count(m.n_layer, m.n_embd, m.vocab_size, m.n_positions)
    return int(round(d.capacity_ratio * d.alpha * p / (d.sizing_bits_per_token * (t.seq_len - 1))))
