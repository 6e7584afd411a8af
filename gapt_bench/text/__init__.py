"""Text for the LM tasks: sources and the train/validation split (`sources`), tokenizers (`tokenizers`) and the
token cache (`cache`). The names most callers need are re-exported here."""
from gapt_bench.text.cache import TokenCache, TokenData, TokenSplit, cache_root, cached_without_streaming
from gapt_bench.text.sources import (DEFAULT_VAL_FRACTION, LOCAL_FIX, OFFLINE_CORPUS, DataError, Doc, Source,
                                     check_local_source, doc_split, hub_unreachable_reason, load_texts,
                                     resolve_source)
from gapt_bench.text.tokenizers import (GPT2_ENCODER_JSON_SHA256, GPT2_VOCAB_BPE_SHA256, MIN_BPE_VOCAB,
                                        BPETokenizer, ByteTokenizer, GPT2Tokenizer, bytes_per_token, get_tokenizer,
                                        tokenizer_vocab_size, train_bpe)

__all__ = [
    "DataError", "Doc", "Source", "resolve_source", "check_local_source", "load_texts", "doc_split",
    "hub_unreachable_reason", "DEFAULT_VAL_FRACTION", "LOCAL_FIX", "OFFLINE_CORPUS", "ByteTokenizer", "BPETokenizer",
    "GPT2Tokenizer", "get_tokenizer", "train_bpe", "tokenizer_vocab_size", "MIN_BPE_VOCAB", "TokenSplit",
    "TokenData", "TokenCache", "bytes_per_token", "cache_root", "cached_without_streaming", "GPT2_ENCODER_JSON_SHA256", "GPT2_VOCAB_BPE_SHA256",
]
