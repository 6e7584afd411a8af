"""Where text comes from: the bundled offline corpus, local parquet/jsonl files, or a hub dataset streamed with
`datasets`, and the document-level train/validation split.

Sources (``source`` strings, as given to ``--set data.source=...``):

* ``"offline"``: the public-domain corpus that ships in ``gapt_bench/data/offline_corpus.parquet``
  (King James Bible + Jargon File, see ``offline_corpus.md``). No network, no ``datasets`` needed.
* a local path: a ``.parquet``, ``.jsonl`` or ``.json`` file, or a folder of them, with a ``text`` column
  (FineWeb's schema). Read with ``datasets.load_dataset(..., streaming=True)``; never touches the network.
  ``check_local_source`` refuses, before anything trains, an empty, unreadable or text-less file.
* a hub id such as ``"HuggingFaceFW/fineweb"`` with a config (``name="sample-10BT"``, or the short form
  ``"HuggingFaceFW/fineweb:sample-10BT"``), streamed with ``datasets``. When ``HF_HUB_OFFLINE`` or
  ``HF_DATASETS_OFFLINE`` is set, or a quick connectivity check fails, a :class:`DataError` is raised at once.

Split: a document is a *validation candidate* when a keyed hash of its text falls below ``val_fraction``.
Validation takes candidates in source order until the validation budget is reached; candidates beyond that are
dropped. Training takes only non-candidates. So no validation candidate is ever trained on, whatever the budgets
or the tokenizer, and the BPE tokenizers are trained on non-candidates only. Identical texts land in the same split.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

DEFAULT_VAL_FRACTION = 0.1
OFFLINE_CORPUS = "offline_corpus.parquet"
LOCAL_SUFFIXES = (".parquet", ".jsonl", ".json", ".jsonl.gz", ".json.gz")
LOCAL_FIX = "pass a local parquet/jsonl file with a 'text' column instead (--set data.source=/path/to/fineweb.parquet)"
_SPLIT_KEY = b"gapt_bench.split.v1"
_TRUTHY = {"1", "on", "yes", "true"}


class DataError(ValueError):
    """A data problem the user can fix (missing file, unreachable hub, bad tokenizer files). One-line message."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


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
        expanded.startswith(("/", "./", "../", "\\"))
        or source.startswith("~")
        or re.match(r"^[A-Za-z]:[\\/]", source)
        or source.lower().endswith(LOCAL_SUFFIXES)
        or os.path.exists(expanded)
    )
    if looks_local:
        path = Path(expanded)
        if not path.exists():
            raise DataError(
                f"data source {source!r} does not exist: pass an existing .parquet/.jsonl file or folder with a "
                f"'text' column (--set data.source=/path/to/fineweb.parquet), or data.source=offline for the "
                f"bundled corpus"
            )
        paths, fmt = _local_files(path)
        return Source("local", source, paths=paths, fmt=fmt)
    if _HUB_RE.match(source):
        hub_id, _, cfg = source.partition(":")
        return Source("hub", source, hub_id=hub_id, hub_name=name or cfg or None)
    raise DataError(
        f"data source {source!r} is neither 'offline', an existing local file or folder, nor a hub id like "
        f"'HuggingFaceFW/fineweb': {LOCAL_FIX}"
    )


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
            except Exception as e:
                raise DataError(
                    f"{label} is not a readable parquet file ({type(e).__name__}); pass a parquet or "
                    f"jsonl file with a 'text' column"
                ) from e
            if "text" not in names:
                raise DataError(
                    f"{label} has no 'text' column (columns: {', '.join(names) or 'none'}); pass "
                    f"FineWeb-style data with a 'text' column"
                )
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
            raise DataError(
                f"the bundled corpus {OFFLINE_CORPUS} is missing from gapt_bench.data: "
                f"rebuild it with scripts/build_corpus.py or reinstall gapt_bench"
            )
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
    except Exception as e:
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
        except Exception as e:
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
    except Exception as e:
        raise DataError(f"streaming {label} from the hub failed ({type(e).__name__}: {e}); {LOCAL_FIX}") from e


def _iter_source_texts(src: Source) -> Iterator[str]:
    if src.kind == "offline":
        return _iter_offline()
    if src.kind == "local":
        return _iter_local(src)
    return _iter_hub(src)


def load_texts(
    source: str | Source = "offline",
    *,
    name: str | None = None,
    split: str | None = None,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    limit: int | None = None,
) -> Iterator[Doc]:
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
