"""Files on disk, for the data caches and the results store alike: where caches live, atomic writes (readers never
see half a file), and the one-line errors a failed read or write becomes."""

from __future__ import annotations

import errno
import os
import uuid
from pathlib import Path


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get("GAPT_BENCH_CACHE"):
        return Path(os.environ["GAPT_BENCH_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "gapt_bench"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class StoreError(ValueError):
    """An unreadable or unwritable results location. str() is one line naming the problem and the fix."""


class DiskFullError(StoreError):
    """No space left (ENOSPC/EDQUOT) while writing results; nothing partial was left behind."""


def is_disk_full(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)


def write_error(path: Path, e: OSError) -> StoreError:
    if is_disk_full(e):
        return DiskFullError(f"disk full while writing {path}; free space, then rerun the same command with --resume")
    return StoreError(f"cannot write {path} ({e.strerror or e}); check the folder and its permissions")
