"""Results store: `runs.jsonl` (one record per finished run) plus a folder per run.

Appends are atomic: the whole record is one `os.write` of one line on an O_APPEND descriptor under an exclusive
`flock`, so two processes writing at once never interleave or leave half a line. Reading is tolerant: a truncated
or hand-edited line is skipped with a warning naming the line, and the file is never rewritten.
"""
from __future__ import annotations

import fcntl
import json
import os
import warnings
from pathlib import Path
from typing import Any, Iterator

SCHEMA_VERSION = 1
RUNS_FILE = "runs.jsonl"
RECORD_FIELDS = (
    "schema_version", "run_id", "task", "task_version", "method", "seed", "config", "config_hash", "metrics",
    "metric_directions", "status", "n_params", "tokens", "wall_time_s", "tokens_per_s", "env",
)


class StoreError(ValueError):
    """An unreadable results location. str() is one line naming the problem and the fix."""


def runs_file(results: Path | str) -> Path:
    p = Path(results)
    return p if p.suffix == ".jsonl" else p / RUNS_FILE


def append_record(results: Path | str, record: dict[str, Any]) -> None:
    missing = [f for f in RECORD_FIELDS if f not in record]
    if missing:
        raise ValueError(f"record lacks fields {missing}")
    line = (json.dumps(record, sort_keys=True, allow_nan=True) + "\n").encode()
    path = runs_file(results)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            # A previous writer killed mid-line would leave no newline: start ours on a fresh line.
            size = os.fstat(fd).st_size
            if size:
                with open(path, "rb") as f:
                    f.seek(size - 1)
                    if f.read(1) != b"\n":
                        line = b"\n" + line
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(f"short write to {path} ({written} of {len(line)} bytes)")
            os.fsync(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def iter_records(results: Path | str, warn: bool = True) -> Iterator[dict[str, Any]]:
    path = runs_file(results)
    if not path.exists():
        raise StoreError(f"no results at {path}; run `gapt-bench run --out {path.parent}` first or pass the right folder")
    if not os.access(path, os.R_OK):
        raise StoreError(f"cannot read {path}; check its permissions")
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
                if not isinstance(rec, dict) or "task" not in rec or "metrics" not in rec:
                    raise ValueError("not a run record")
            except (ValueError, UnicodeDecodeError) as e:
                if warn:
                    warnings.warn(f"{path}:{lineno}: skipped an unreadable record ({str(e)[:60]})", stacklevel=2)
                continue
            if rec.get("schema_version", SCHEMA_VERSION) > SCHEMA_VERSION and warn:
                warnings.warn(f"{path}:{lineno}: record has newer schema {rec['schema_version']}; upgrade gapt-bench")
            yield rec


def read_records(results: Path | str, warn: bool = True) -> list[dict[str, Any]]:
    return list(iter_records(results, warn=warn))


def check_writable(out: Path) -> None:
    """Fail before training when the output folder cannot be created or written."""
    probe = None
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-probe-{os.getpid()}"
        with open(probe, "wb") as f:
            f.write(b"x" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise StoreError(f"cannot write to output folder {out} ({e.strerror}); pick another --out or free space")
    finally:
        if probe is not None and probe.exists():
            probe.unlink()
