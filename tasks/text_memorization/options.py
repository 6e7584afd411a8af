"""The `data:` options of text_memorization and the constants its data and reference keys are built from."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from gapt_bench.config import opt
from gapt_bench.data.options import name_option, source_option, tokenizer_option
from gapt_bench.measures import membership

TASK_NAME = "text_memorization"
TASK_VERSION = "1"  # bump when the data or the evaluation changes (part of every reference key)
SEQ_FORMAT = 1  # bump when the cutting/dedup/selection rules change (part of every data and reference key)
REF_FORMAT = 1  # bump when what a cached reference holds changes
POOL_SEED = 0x5EED_9001  # the pool's fixed permutation (the same pool for every seed)
NONMEMBER_SEED = 0x5EED_9002
REF_SEED_OFFSET = 1_000_003  # a reference's init and data order: seed + offset (not the run's own trajectory)
WAIT_POLL_S = 1.0
SCORE_CHUNK = 65_536  # sequences converted to int64 at a time when scoring
ESTIMATOR_TEXT = (
    "per-sequence code length -log2 p(x_2..x_S | x_1) (strict: token 1 is context only); "
    "mem_U(x) = max(0, nll_ref(x) - nll_model(x)) per sequence, summed over the set (no per-token "
    "clipping); dataset information = sum of nll_ref over the training set"
)


@dataclass
class TextMemorizationOptions:
    source: str = source_option()
    name: str | None = name_option()
    tokenizer: str = tokenizer_option()
    pad_vocab_multiple: int = opt(1, "pad model.vocab_size up to a multiple of this (1 keeps the paper's P)", min=1)
    cache_dir: str | None = opt(
        None, "cache root for tokens, sequences and references (null: $GAPT_BENCH_CACHE or ~/.cache/gapt_bench)"
    )
    val_fraction: float = opt(
        0.1,
        "fraction of documents held out (keyed hash of the text): the non-member candidates",
        min=0.0,
        max=1.0,
        max_open=True,
    )
    read_tokens: int | None = opt(
        None,
        "training-split tokens to read from the source (null: the whole finite source; required for a hub source)",
        min=1,
    )
    val_tokens: int = opt(262_144, "held-out tokens to read (whole documents, in source order)", min=1)
    cut: str = opt(
        "chunks",
        "S-token sequences from a document: chunks (every non-overlapping S tokens, tail "
        "dropped) or first (its first S tokens only: the paper's truncation)",
        choices=("chunks", "first"),
    )
    dedup: bool = opt(
        True, "exact deduplication of the training and held-out candidates (the paper: essential for extraction rates)"
    )
    pool_sequences: int | None = opt(
        None,
        "the pool (the references' data, every training set's superset): this "
        "many distinct training sequences by a fixed permutation; null = all",
        min=1,
    )
    nonmember_sequences: int = opt(
        512, "non-member (held-out) sequences: test loss, extraction, membership inference", min=4
    )
    n_sequences: int = opt(256, "N: training sequences (ignored when capacity_ratio is set)", min=4)
    capacity_ratio: float | None = opt(
        None,
        "if set, N = round(ratio * alpha * P / (sizing_bits_per_token * "
        "(S-1))): dataset information over capacity, P the paper's count",
        min=0.0,
    )
    alpha: float = opt(
        3.64, "bits per parameter of capacity alpha * P (sizing and the realised ratio; the paper's slope)", min=0.0
    )
    sizing_bits_per_token: float = opt(
        3.0,
        "reference code length per predicted token (bits) assumed when "
        "sizing N from capacity_ratio (the realised ratio is measured)",
        min=0.0,
    )
    data_seed: int | None = opt(None, "training-set seed (which N pool sequences); null = the run seed")
    ref_tokens: int | None = opt(
        None, "reference (a) budget in tokens, same recipe on the whole pool (null: train.tokens)", min=1
    )
    oracle_n_layer: int = opt(0, "oracle reference (b), a larger model on the pool: layers (0 = no oracle)", min=0)
    oracle_n_embd: int = opt(0, "oracle width", min=0)
    oracle_n_head: int = opt(0, "oracle heads", min=0)
    oracle_tokens: int | None = opt(None, "oracle budget in tokens (null: the reference's)", min=1)
    prefixes: list[int] = opt([8, 16, 32], "extraction prefix lengths (tokens); each below train.seq_len")
    mi_sequences: int = opt(2048, "membership inference: at most this many members and as many non-members", min=4)
    mi_calib_fraction: float = opt(
        0.5,
        "membership inference: fraction of each set that calibrates the threshold (the rest is scored)",
        min=0.0,
        max=1.0,
        max_open=True,
    )
    mi_rule: str = opt(
        "balanced_accuracy", "membership threshold rule on the calibration split", choices=membership.THRESHOLD_RULES
    )
    mi_null_fallback_p: float | None = opt(
        0.05,
        "balanced_accuracy: fall back to the median threshold when the "
        "one-sided KS p on the calibration split exceeds this (null: "
        "never)",
        min=0.0,
        max=1.0,
    )
    convention: str = opt(
        "strict", "first-token convention of the code lengths (token 1 is context only)", choices=("strict",)
    )
    eval_batch: int = opt(256, "sequences per evaluation forward pass", min=1)


_N_DEFAULT = next(f.default for f in dataclasses.fields(TextMemorizationOptions) if f.name == "n_sequences")


def _digest(obj: Any, n: int = 20) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]
