"""The token cache: each (source, tokenizer, split, budget) is tokenised once and kept as a flat token file.

Token files: each document's tokens followed by ``eot_id``, concatenated into one flat array per split, stored as
``uint16`` (``vocab_size <= 65536``) or ``uint32`` in ``<cache>/tokens/`` and returned as read-only memmaps.
``<cache>`` is the ``cache_dir`` argument, else ``$GAPT_BENCH_CACHE``, else ``$XDG_CACHE_HOME/gapt_bench``
(``~/.cache/gapt_bench``). BPE tokenizers live in ``<cache>/bpe/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gapt_bench.data.files import atomic_write_bytes, cache_root
from gapt_bench.data.sources import (
    DEFAULT_VAL_FRACTION,
    DataError,
    Doc,
    Source,
    load_texts,
    resolve_source,
)
from gapt_bench.data.tokenizers import get_tokenizer


@dataclass
class TokenSplit:
    """One split's flat token array: each document's tokens followed by EOT."""

    name: str  # "train" | "val"
    tokens: np.ndarray  # 1-D, read-only memmap (uint16 or uint32)
    n_docs: int
    n_bytes: int  # UTF-8 bytes of the documents included (train: the last document may be cut)
    doc_index: np.ndarray  # source positions (Doc.index) of the documents included
    requested: int | str | None  # the token budget asked for (None: everything; "bytes:N" for val_bytes)
    cache_hit: bool
    path: Path

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def bytes_per_token(self) -> float:
        """UTF-8 bytes per token (EOTs count as tokens): bits/byte = (nats/token) / ln 2 / bytes_per_token."""
        return self.n_bytes / max(self.n_tokens, 1)


@dataclass
class TokenData:
    train: TokenSplit
    val: TokenSplit
    tokenizer: object
    source: str  # the source's identity string
    meta: dict = field(default_factory=dict)

    @property
    def cache_hit(self) -> bool:
        return self.train.cache_hit and self.val.cache_hit

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    @property
    def eot_id(self) -> int:
        return self.tokenizer.eot_id

    def overlap(self) -> set[int]:
        """Source positions of documents present in both splits (always empty by construction)."""
        return set(self.train.doc_index.tolist()) & set(self.val.doc_index.tolist())


def _dtype_for(vocab_size: int):
    return np.uint16 if vocab_size <= 2**16 else np.uint32


class TokenCache:
    """Tokenise a source once per (source identity, tokenizer, budget, split, val_fraction) and keep the result.

    ``get`` returns :class:`TokenData`; ``data.cache_hit`` (and ``data.train.cache_hit`` / ``data.val.cache_hit``)
    tell whether the files were reused. The train split does not depend on ``val_tokens`` and the validation split
    does not depend on ``train_tokens``, so each is cached under its own key.
    """

    BATCH_DOCS = 256

    def __init__(self, cache_dir: str | os.PathLike | None = None):
        """``cache_dir``: the cache root (default ``$GAPT_BENCH_CACHE`` or ``~/.cache/gapt_bench``); token files go
        to ``<root>/tokens/``, BPE tokenizers trained for a spec string to ``<root>/bpe/``."""
        self.root = cache_root(cache_dir)
        self.dir = self.root / "tokens"

    # --- keys and files
    def _key(self, source_id: str, tokenizer, split: str, budget: int | None, val_fraction: float) -> str:
        fields = {
            "v": 1,
            "source": source_id,
            "tokenizer": tokenizer.fingerprint,
            "split": split,
            "budget": budget,
            "val_fraction": val_fraction,
        }
        digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:24]
        return f"{tokenizer.name}-{split}-{digest}"

    def _split_keys(
        self,
        source_id: str,
        tokenizer,
        train_tokens: int | None,
        val_tokens: int,
        val_bytes: int | None,
        val_fraction: float,
    ) -> dict[str, str]:
        val_budget = f"bytes:{val_bytes}" if val_bytes is not None else val_tokens
        return {
            "train": self._key(source_id, tokenizer, "train", train_tokens, val_fraction),
            "val": self._key(source_id, tokenizer, "val", val_budget, val_fraction),
        }

    def cached(
        self,
        source: Source,
        tokenizer,
        *,
        val_tokens: int = 100_000,
        train_tokens: int | None = None,
        val_bytes: int | None = None,
        val_fraction: float = DEFAULT_VAL_FRACTION,
    ) -> bool:
        """True when `get` with the same arguments would find both splits on disk (never builds, never streams)."""
        keys = self._split_keys(source.identity(), tokenizer, train_tokens, val_tokens, val_bytes, val_fraction)
        return all(self._load(k, s) is not None for s, k in keys.items())

    def _paths(self, key: str) -> tuple[Path, Path, Path]:
        return self.dir / f"{key}.bin", self.dir / f"{key}.docs.npy", self.dir / f"{key}.json"

    def _load(self, key: str, name: str) -> TokenSplit | None:
        bin_p, docs_p, meta_p = self._paths(key)
        if not (meta_p.exists() and bin_p.exists() and docs_p.exists()):
            return None
        try:
            meta = json.loads(meta_p.read_text())
            dtype = np.dtype(meta["dtype"])
            n = int(meta["n_tokens"])
            if bin_p.stat().st_size != n * dtype.itemsize:
                return None
            tokens = np.memmap(bin_p, dtype=dtype, mode="r", shape=(n,)) if n else np.zeros(0, dtype)
            doc_index = np.load(docs_p)
        except (OSError, ValueError, KeyError):
            return None
        return TokenSplit(
            name, tokens, int(meta["n_docs"]), int(meta["n_bytes"]), doc_index, meta["requested"], True, bin_p
        )

    # --- build
    def get(
        self,
        source: str | Source = "offline",
        tokenizer="bytes",
        *,
        name: str | None = None,
        val_tokens: int = 100_000,
        train_tokens: int | None = None,
        val_bytes: int | None = None,
        val_fraction: float = DEFAULT_VAL_FRACTION,
    ) -> TokenData:
        """Token arrays for both splits of ``source``.

        ``tokenizer``: a tokenizer object or a spec for :func:`get_tokenizer` (a BPE is trained on this source).
        ``val_tokens``: validation budget; whole documents are taken until it is reached (it may be exceeded by
        less than one document, or fall short with a warning when the source runs out of validation candidates).
        ``train_tokens``: training budget, cut exactly; None takes every training document (finite sources only).
        ``val_bytes``: when set, the validation budget is this many UTF-8 bytes of text instead of ``val_tokens``,
        so every tokenizer gets the same validation documents (use it to compare bits per byte across tokenizers).
        """
        src = source if isinstance(source, Source) else resolve_source(source, name)
        if isinstance(tokenizer, str):
            tokenizer = get_tokenizer(tokenizer, source=src, val_fraction=val_fraction, cache_dir=self.root)
        if train_tokens is None and not src.finite:
            raise DataError(f"train_tokens must be set for a streamed hub source ({src.spec})")
        if val_tokens < 0 or (train_tokens is not None and train_tokens < 0) or (val_bytes or 0) < 0:
            raise ValueError("token budgets must be >= 0")
        source_id = src.identity()
        keys = self._split_keys(source_id, tokenizer, train_tokens, val_tokens, val_bytes, val_fraction)
        found = {s: self._load(k, s) for s, k in keys.items()}
        missing = [s for s, v in found.items() if v is None]
        if missing:
            budgets = {"train": train_tokens, "val": val_tokens}
            self._build(
                src, tokenizer, {s: budgets[s] for s in missing}, {s: keys[s] for s in missing}, val_fraction, val_bytes
            )
            for s in missing:
                found[s] = self._load(keys[s], s)
                if found[s] is None:
                    raise DataError(f"token cache file for {keys[s]} in {self.dir} could not be read back")
                found[s].cache_hit = False
        return TokenData(
            found["train"],
            found["val"],
            tokenizer,
            source_id,
            meta={"keys": keys, "val_fraction": val_fraction, "cache_dir": str(self.dir)},
        )

    def _build(
        self, src: Source, tokenizer, budgets: dict, keys: dict, val_fraction: float, val_bytes: int | None = None
    ) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        dtype = _dtype_for(tokenizer.vocab_size)
        eot = np.array([tokenizer.eot_id], dtype=dtype)
        tmp = {s: self.dir / f".{keys[s]}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp" for s in budgets}
        files = {s: open(tmp[s], "wb") for s in budgets}
        count = {s: 0 for s in budgets}
        nbytes = {s: 0 for s in budgets}
        docs: dict[str, list[int]] = {s: [] for s in budgets}
        if "val" in budgets and val_bytes is not None:
            budgets = dict(budgets, val=None)
        done = {s: budgets[s] == 0 or (s == "val" and val_bytes == 0) for s in budgets}

        def take(doc: Doc, ids: np.ndarray) -> None:
            s = doc.split
            if s not in budgets or done[s]:
                return
            arr = np.concatenate([ids.astype(dtype, copy=False), eot])
            budget = budgets[s]
            if s == "train" and budget is not None and count[s] + len(arr) >= budget:
                arr = arr[: budget - count[s]]
                done[s] = True
            files[s].write(arr.tobytes())
            count[s] += len(arr)
            nbytes[s] += len(doc.text.encode("utf-8"))
            docs[s].append(doc.index)
            if s == "val" and (nbytes[s] >= val_bytes if val_bytes is not None else count[s] >= budget):
                done[s] = True

        try:
            batch: list[Doc] = []
            for doc in load_texts(src, val_fraction=val_fraction):
                if doc.split not in budgets or done[doc.split]:
                    continue
                batch.append(doc)
                if len(batch) >= self.BATCH_DOCS:
                    for d, ids in zip(batch, tokenizer.encode_arrays([d.text for d in batch])):
                        take(d, ids)
                    batch.clear()
                    if all(done.values()):
                        break
            if batch and not all(done.values()):
                for d, ids in zip(batch, tokenizer.encode_arrays([d.text for d in batch])):
                    take(d, ids)
            for f in files.values():
                f.close()
            for s in budgets:
                if s == "val" and val_bytes is not None:
                    got, want, unit = nbytes[s], val_bytes, "bytes of"
                else:
                    got, want, unit = count[s], budgets[s], "tokens of"
                if want is not None and got < want:
                    warnings.warn(
                        f"{src.spec}: only {got:,} {s} {unit} text available of the {want:,} requested "
                        f"(tokenizer {tokenizer.name}, val_fraction {val_fraction})",
                        stacklevel=3,
                    )
                bin_p, docs_p, meta_p = self._paths(keys[s])
                os.replace(tmp[s], bin_p)
                buf = _npy_bytes(np.asarray(docs[s], dtype=np.int64))
                atomic_write_bytes(docs_p, buf)
                requested = f"bytes:{val_bytes}" if s == "val" and val_bytes is not None else budgets[s]
                meta = {
                    "split": s,
                    "n_tokens": count[s],
                    "n_docs": len(docs[s]),
                    "n_bytes": nbytes[s],
                    "dtype": np.dtype(dtype).name,
                    "requested": requested,
                    "tokenizer": tokenizer.name,
                    "tokenizer_fingerprint": tokenizer.fingerprint,
                    "vocab_size": tokenizer.vocab_size,
                    "eot_id": tokenizer.eot_id,
                    "source": src.identity(),
                    "source_spec": src.spec,
                    "val_fraction": val_fraction,
                }
                atomic_write_bytes(meta_p, json.dumps(meta, indent=1).encode())
        finally:
            for s, f in files.items():
                if not f.closed:
                    f.close()
                if tmp[s].exists():
                    tmp[s].unlink()


def _npy_bytes(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def cached_without_streaming(source: Source, tokenizer: str, cache_dir=None, **budgets) -> bool:
    """Whether both token files of (source, tokenizer spec, budgets) are already cached, so that a hub source needs
    no network. Only for tokenizers known without training (bytes, gpt2): a BPE for a hub source is trained by
    streaming it. `budgets` are TokenCache.cached's keywords (val_tokens, train_tokens, val_bytes, val_fraction)."""
    if str(tokenizer).lower() not in ("bytes", "gpt2"):
        return False
    try:
        tok = get_tokenizer(tokenizer)
    except DataError:
        return False
    return TokenCache(cache_dir).cached(source, tok, **budgets)
