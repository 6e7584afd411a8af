"""The option fields every task that reads text shares (data.source, data.name, data.tokenizer): one default and
one help text here, so the tasks describe and default their source the same way and cannot drift apart."""

from __future__ import annotations

from typing import Any

from gapt_bench.config import opt

SOURCE_HELP = (
    "offline (bundled corpus), a local .parquet/.jsonl file or folder with a 'text' column, or a hub id "
    "such as HuggingFaceFW/fineweb"
)
NAME_HELP = "hub dataset config, e.g. sample-10BT"
TOKENIZER_HELP = "bytes (V=257), bpe<N> (byte-level BPE trained on the source, cached) or gpt2"


def source_option() -> Any:
    """data.source: where the text comes from (default: the bundled offline corpus)."""
    return opt("offline", SOURCE_HELP)


def name_option() -> Any:
    """data.name: the hub dataset's config (null for every other source)."""
    return opt(None, NAME_HELP)


def tokenizer_option() -> Any:
    """data.tokenizer: bytes by default (no training, no download)."""
    return opt("bytes", TOKENIZER_HELP)
