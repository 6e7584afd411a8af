"""Data for the tasks: text sources and the train/validation split (`sources`), tokenizers (`tokenizers`), the
token cache (`token_cache`), files on disk and their errors (`files`), claims on a key across processes
(`claims`), the `data:` options text tasks share (`options`), and the
bundled offline corpus (`offline_corpus.parquet`, its card `offline_corpus.md`). The names most callers need are
re-exported here."""

from gapt_bench.data.files import cache_root
from gapt_bench.data.sources import (
    DEFAULT_VAL_FRACTION,
    LOCAL_FIX,
    OFFLINE_CORPUS,
    DataError,
    Doc,
    Source,
    check_local_source,
    doc_split,
    hub_unreachable_reason,
    load_texts,
    resolve_source,
)
from gapt_bench.data.token_cache import (
    TokenCache,
    TokenData,
    TokenSplit,
    cached_without_streaming,
)
from gapt_bench.data.tokenizers import (
    GPT2_ENCODER_JSON_SHA256,
    GPT2_VOCAB_BPE_SHA256,
    MIN_BPE_VOCAB,
    BPETokenizer,
    ByteTokenizer,
    GPT2Tokenizer,
    bytes_per_token,
    get_tokenizer,
    tokenizer_vocab_size,
    train_bpe,
)

__all__ = [
    "DEFAULT_VAL_FRACTION",
    "GPT2_ENCODER_JSON_SHA256",
    "GPT2_VOCAB_BPE_SHA256",
    "LOCAL_FIX",
    "MIN_BPE_VOCAB",
    "OFFLINE_CORPUS",
    "BPETokenizer",
    "ByteTokenizer",
    "DataError",
    "Doc",
    "GPT2Tokenizer",
    "Source",
    "TokenCache",
    "TokenData",
    "TokenSplit",
    "bytes_per_token",
    "cache_root",
    "cached_without_streaming",
    "check_local_source",
    "doc_split",
    "get_tokenizer",
    "hub_unreachable_reason",
    "load_texts",
    "resolve_source",
    "tokenizer_vocab_size",
    "train_bpe",
]
