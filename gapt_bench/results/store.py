"""Results store: the run record schema, per-record files and `runs.jsonl`, and tolerant reading (run claims:
`gapt_bench.data.claims`).

The record (`RunRecord`, below) is the one definition of what a run leaves behind: the runner fills it, the readers
check it, the README points here.

Layout of a results folder OUT (safe on a shared filesystem written by many nodes at once, NFS included):

    OUT/records/<run_id>.json   one file per record: the commit point
    OUT/runs.jsonl              the same records, one line each, in the order written (what people read and copy)
    OUT/claims/<digest>.claim   who is training which run key right now
    OUT/runs/<run_id>/          the run folder: config.json, curve.jsonl, log.txt, state.json, checkpoint.pt

Writing. A record is first written whole to a private temporary file in `OUT/records/`, fsync'd, and renamed to
`<run_id>.json`. A rename within one folder is atomic on local filesystems and on NFS alike, so a record file is
either absent or complete, and no two writers ever touch the same file: nothing depends on `flock`. The record is
then appended to `runs.jsonl` as one `os.write` of one line on an O_APPEND descriptor under an exclusive `flock`, so
on a local disk two processes never interleave; a short write or a full disk truncates the file back to its size
before the append, so no partial line is ever left for the next writer to build on. Where `flock` or O_APPEND are
not honoured across machines (NFS without working locks), concurrent appends may tear or overwrite lines of
`runs.jsonl`; the record files still hold every record, and readers merge the two (below). On any write error
(a full disk) neither is left behind: the record file is removed again and DiskFullError/StoreError is raised.
`compact()` rewrites `runs.jsonl` from the merged records (`gapt-bench status OUT --compact`).

One run, one replicate. A run is identified by its key (task, method, config_hash, seed). Before training, the
executing process *claims* the key with an exclusive-create file in `OUT/claims/` (O_EXCL is atomic on NFSv3+),
so concurrent sweeps of the same plan train each run once; the claim names its host, pid and cluster job (the
GAPT_BENCH_JOB_ID variable, set by `gapt_bench.launch.cluster`), is refreshed while the run trains (heartbeat), and is
taken over when its owner is dead (same host), silent for CLAIM_STALE_S (another host), or an earlier incarnation
of the same requeued cluster job (by one taker at a time: `_remove_stale`). Readers keep one record per key and say how many they dropped: a finished record
(ok or diverged: both deterministic) wins over a failed one, and among equals the first written wins.

Reading is tolerant: `runs.jsonl` is read in order, then every record file whose run id it did not yield (a line
torn by an unlocked writer on NFS, or a writer that died between the rename and the append) is added in the order
the files were written. A truncated, hand-edited or ill-typed line or file is skipped with a warning naming it, and
nothing is rewritten by reading.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

# The errors of a results folder (defined with the files they come from); callers catch them from here too.
from gapt_bench.data.files import DiskFullError, StoreError, write_error  # noqa: F401

# 2: `kind` ("training" | "evaluation": `gapt-bench eval`'s records of saved models); a record without it is a
# training run (schema 1).
SCHEMA_VERSION = 2
KINDS = ("training", "evaluation")
# What a training record's metrics mean changed with none of these versions: schema 2 only added `kind`. Records
# whose versions map to the same measurement version compare (the regression check); others are INCOMPATIBLE.
MEASUREMENT_VERSION = {1: 1, 2: 1}


def measurement_version(schema_version: Any) -> Any:
    """The version of what a record's metrics mean (unknown versions stand for themselves)."""
    return (
        MEASUREMENT_VERSION.get(schema_version, schema_version) if isinstance(schema_version, int) else schema_version
    )


RUNS_FILE = "runs.jsonl"
RECORDS_DIR = "records"  # one <run_id>.json per record, written by atomic rename (see the module docstring)
FINISHED = ("ok", "diverged")  # terminal and deterministic: never trained again
STATUSES = ("ok", "failed", "diverged")


class RunRecord(TypedDict):
    """One line of `runs.jsonl`: everything needed to read a run without its folder."""

    schema_version: int  # SCHEMA_VERSION of the writer
    kind: str  # training | evaluation (gapt_bench.evaluation.evaluate: task "evaluation", method = the model)
    run_id: str  # the run folder's name under OUT/runs/
    task: str  # registered task name
    task_version: str  # bumped by the task when its data or evaluation changes
    method: str  # registered method name
    seed: int  # the replicate: model init and data order (and data, where the task says so)
    preset: str  # preset the config was resolved from
    config: dict  # the fully resolved RunConfig (config.RunConfig.to_dict())
    config_hash: str  # hash of the config without the seed: the seeds of one config form a group
    setup_hash: str  # hash of what every arm of a comparison shares (config.RunConfig.setup_hash)
    metrics: dict  # metric name -> float (NaN/inf allowed; readers treat them as missing)
    metric_directions: dict  # metric name -> "min" | "max" (direction of better)
    primary_metrics: list  # the task's primary metrics: what the leaderboard ranks on (others: diagnostics)
    controls: list  # the methods that control this one (gapt: periodic, mbe), declared by its class
    status: str  # ok | failed | diverged
    error: dict | None  # failed/diverged: {"message", "step"?}
    n_params: int | None  # parameters as the task counts them (capacity: the paper's count)
    tokens: int  # training tokens actually consumed (samples for the MLP task)
    steps: int | None  # optimizer steps actually taken
    stop_reason: str | None  # budget | converged
    wall_time_s: float  # wall clock of the whole run, evaluation included
    tokens_per_s: float | None  # training throughput
    summary: dict  # task and method extras (gate statistics and duty cycle, throughput, data
    # provenance, preset_about: the preset's variant and deviations)
    env: dict  # machine class, versions, git sha (env.capture)
    started_at: str  # ISO 8601, UTC
    finished_at: str


RECORD_FIELDS = tuple(RunRecord.__annotations__)
# Fields a reader needs, with the types it accepts (task_version may be written as a number).
_REQUIRED_TYPES: dict[str, tuple[type, ...]] = {
    "run_id": (str,),
    "task": (str,),
    "method": (str,),
    "seed": (int,),
    "config_hash": (str,),
    "metrics": (dict,),
    "status": (str,),
}


def kind_of(record: dict) -> str:
    """ "training" or "evaluation" (records of schema 1 have no kind: they are training runs)."""
    return str(record.get("kind") or "training")


def split_kinds(records: list[dict]) -> tuple[list[dict], list[dict]]:
    """(training runs, evaluations of saved models): the analyses of training runs never see evaluations."""
    return [r for r in records if kind_of(r) != "evaluation"], [r for r in records if kind_of(r) == "evaluation"]


def runs_file(results: Path | str) -> Path:
    p = Path(results)
    return p if p.suffix == ".jsonl" else p / RUNS_FILE


def records_dir(results: Path | str) -> Path | None:
    """The per-record folder of a results location: OUT/records for a folder or its runs.jsonl; None for any other
    .jsonl file (a committed baseline is one file)."""
    path = runs_file(results)
    return path.parent / RECORDS_DIR if path.name == RUNS_FILE else None


def record_file_name(run_id: str) -> str:
    """`<run_id>.json` for the run ids the runner makes; a digest for anything that is not a safe file name."""
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,150}", run_id):
        return f"{run_id}.json"
    return f"id-{hashlib.sha256(run_id.encode()).hexdigest()[:32]}.json"


def has_results(results: Path | str) -> bool:
    """True when the location holds a runs file or at least one record file."""
    if runs_file(results).is_file():
        return True
    rdir = records_dir(results)
    return rdir is not None and rdir.is_dir() and any(rdir.glob("*.json"))


def run_key(record: dict) -> tuple:
    """(task, method, config_hash, seed): one replicate."""
    return (record.get("task"), record.get("method"), record.get("config_hash"), record.get("seed"))


# ---------------------------------------------------------------------------------------------------------------
# Appending


def append_record(results: Path | str, record: dict[str, Any]) -> None:
    """Write one record: its own file in OUT/records (atomic rename: the commit point), then one line of runs.jsonl.
    On any write error nothing is left behind (the record file is removed again; the runs file is as it was)."""
    record = {"kind": "training", **record}  # a record written without a kind is a training run, as in schema 1
    missing = [f for f in RECORD_FIELDS if f not in record]
    if missing:
        raise ValueError(f"record lacks fields {missing}")
    text = json.dumps(record, sort_keys=True, allow_nan=True)
    rdir = records_dir(results)
    written = _write_record_file(rdir, str(record["run_id"]), text.encode()) if rdir is not None else None
    try:
        _append_line(runs_file(results), (text + "\n").encode())
    except StoreError:
        if written is not None:
            written.unlink(missing_ok=True)
        raise


def _write_record_file(rdir: Path, run_id: str, data: bytes) -> Path:
    """Write `data` to rdir/<run_id>.json whole or not at all: a private temporary file, fsync, atomic rename."""
    final = rdir / record_file_name(run_id)
    tmp = rdir / f".{final.stem}.{socket.gethostname()}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        rdir.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except OSError as e:
        raise write_error(final, e) from e
    try:
        try:
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(errno.ENOSPC, f"short write ({written} of {len(data)} bytes)")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, final)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise write_error(final, e) from e
    try:  # make the new name durable (best effort: not every filesystem can fsync a folder)
        dfd = os.open(rdir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return final


def _append_line(path: Path, line: bytes) -> None:
    """Append one line atomically (local disks); on any write error the file is left exactly as it was."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as e:
        raise write_error(path, e) from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        try:
            # A previous writer killed mid-line would leave no newline: start ours on a fresh line.
            if size:
                with open(path, "rb") as f:
                    f.seek(size - 1)
                    if f.read(1) != b"\n":
                        line = b"\n" + line
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(errno.ENOSPC, f"short write ({written} of {len(line)} bytes)")
            os.fsync(fd)
        except OSError as e:
            os.ftruncate(fd, size)  # no partial line for the next append to build on
            raise write_error(path, e) from e
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------------------------
# Reading


def record_problem(rec: Any) -> str | None:
    """Why a parsed line is not a usable record (None if it is). Normalises harmless variants in place: a seed
    written as a digit string becomes an int, a numeric task_version a string."""
    if not isinstance(rec, dict):
        return "not a JSON object"
    if isinstance(rec.get("seed"), str) and rec["seed"].strip().isdigit():
        rec["seed"] = int(rec["seed"])
    if isinstance(rec.get("task_version"), (int, float)) and not isinstance(rec.get("task_version"), bool):
        rec["task_version"] = str(rec["task_version"])
    for name, types in _REQUIRED_TYPES.items():
        value = rec.get(name)
        if value is None:
            return f"no {name}"
        if not isinstance(value, types) or isinstance(value, bool):
            return f"{name} is {type(value).__name__}, not {types[0].__name__}"
    if rec["status"] not in STATUSES:
        return f"status {rec['status']!r} is not one of {', '.join(STATUSES)}"
    if rec["seed"] < 0:
        return "negative seed"
    if rec.get("kind") is not None and rec["kind"] not in KINDS:
        return f"kind {rec['kind']!r} is not one of {', '.join(KINDS)}"
    sv = rec.get("schema_version", SCHEMA_VERSION)
    if not isinstance(sv, int) or isinstance(sv, bool):
        return f"schema_version is {type(sv).__name__}, not int"
    for name in ("config", "summary", "env", "metric_directions"):
        if rec.get(name) is not None and not isinstance(rec[name], dict):
            return f"{name} is {type(rec[name]).__name__}, not an object"
    for k, v in rec["metrics"].items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            return f"metric {k} is {type(v).__name__}, not a number"
    return None


@dataclass
class StoreContents:
    """What a results location holds: one record per run key, and what was dropped on the way."""

    path: Path
    records: list[dict[str, Any]] = field(default_factory=list)
    damaged_lines: list[int] = field(default_factory=list)
    damaged_files: list[str] = field(default_factory=list)  # record files in OUT/records that could not be read
    duplicates: int = 0  # records of a key that already had one (kept: finished over failed, then the first)

    def notes(self) -> list[str]:
        out = []
        if self.duplicates:
            out.append(
                f"{self.duplicates} duplicate record(s) of an already recorded (task, method, config, seed) "
                f"ignored in {self.path}: one record per run"
            )
        if self.damaged_lines:
            out.append(f"{len(self.damaged_lines)} damaged line(s) skipped in {self.path}")
        if self.damaged_files:
            out.append(f"{len(self.damaged_files)} damaged record file(s) skipped in {self.path.parent / RECORDS_DIR}")
        return out


def _open_runs(results: Path | str) -> Path:
    path = runs_file(results)
    if not path.exists():
        raise StoreError(
            f"no results at {path}; run `gapt-bench run --out {path.parent}` first or pass the right folder"
        )
    if path.is_dir():
        raise StoreError(f"{path} is a folder, not a results file; pass the folder that contains runs.jsonl")
    if not os.access(path, os.R_OK):
        raise StoreError(f"cannot read {path}; check its permissions")
    return path


def _parse(raw: bytes) -> dict:
    rec = json.loads(raw)
    problem = record_problem(rec)
    if problem:
        raise ValueError(problem)
    return rec


def iter_raw_records(
    results: Path | str, warn: bool = True, damaged: list[int] | None = None, damaged_files: list[str] | None = None
) -> Iterator[dict]:
    """Every well-formed record (no de-duplication): the lines of runs.jsonl in file order, then the record files
    of OUT/records whose run id no line gave, in the order they were written. Damaged lines and files are skipped
    with a warning."""
    path = runs_file(results)
    rdir = records_dir(results)
    files = sorted(rdir.glob("*.json")) if rdir is not None and rdir.is_dir() else []
    if not files or path.exists():
        path = _open_runs(results)
    seen: set[str] = set()
    if path.is_file():
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                try:
                    rec = _parse(raw)
                except (ValueError, UnicodeDecodeError, RecursionError) as e:
                    if damaged is not None:
                        damaged.append(lineno)
                    if warn:
                        fix = (
                            f" (`gapt-bench status {path.parent} --compact` rewrites the file without it)"
                            if path.name == RUNS_FILE
                            else ""
                        )
                        warnings.warn(
                            f"{path}:{lineno}: skipped an unreadable record ({str(e)[:60]}); the line stays{fix}",
                            stacklevel=2,
                        )
                    continue
                _warn_schema(rec, f"{path}:{lineno}", warn)
                seen.add(record_file_name(rec["run_id"]))
                yield rec
    pending = []
    for file in files:
        if file.name in seen:
            continue
        try:
            pending.append((file.stat().st_mtime_ns, file.name, file))
        except OSError:  # removed meanwhile (a rolled-back write)
            continue
    for _, _, file in sorted(pending):
        try:
            rec = _parse(file.read_bytes())
        except FileNotFoundError:
            continue
        except (OSError, ValueError, UnicodeDecodeError, RecursionError) as e:
            if damaged_files is not None:
                damaged_files.append(str(file))
            if warn:
                warnings.warn(f"{file}: skipped an unreadable record ({str(e)[:60]})", stacklevel=2)
            continue
        _warn_schema(rec, str(file), warn)
        yield rec


def _warn_schema(rec: dict, where: str, warn: bool) -> None:
    if rec.get("schema_version", SCHEMA_VERSION) > SCHEMA_VERSION and warn:
        warnings.warn(f"{where}: record has newer schema {rec['schema_version']}; upgrade gapt-bench", stacklevel=2)


def read_store(results: Path | str, warn: bool = True) -> StoreContents:
    """The records of a results folder (or .jsonl file), one per run key (see the module docstring)."""
    out = StoreContents(path=runs_file(results))
    kept: dict[tuple, int] = {}
    for rec in iter_raw_records(results, warn=warn, damaged=out.damaged_lines, damaged_files=out.damaged_files):
        key = run_key(rec)
        i = kept.get(key)
        if i is None:
            kept[key] = len(out.records)
            out.records.append(rec)
            continue
        out.duplicates += 1
        if out.records[i]["status"] not in FINISHED and rec["status"] in FINISHED:
            out.records[i] = rec
    if out.duplicates and warn:
        warnings.warn(out.notes()[0], stacklevel=2)
    return out


def read_records(results: Path | str, warn: bool = True) -> list[dict[str, Any]]:
    """The records of a results location, one per run key, in the order first written."""
    return read_store(results, warn=warn).records


def finished_keys(results: Path | str) -> set[tuple]:
    """Keys of runs that must not be trained again (status ok or diverged)."""
    if not has_results(results):
        return set()
    return {run_key(r) for r in iter_raw_records(results, warn=False) if r["status"] in FINISHED}


def ok_keys(results: Path | str) -> set[tuple]:
    """Keys of runs recorded as ok: the only ones a matched control can copy."""
    if not has_results(results):
        return set()
    return {run_key(r) for r in iter_raw_records(results, warn=False) if r["status"] == "ok"}


def compact(results: Path | str) -> tuple[int, Path | None]:
    """Rewrite OUT/runs.jsonl from every readable record (its own lines and OUT/records), without damaged lines and
    without exact repeats; the old file is kept as runs.jsonl.<time>.bak. Returns (records written, backup path).
    Writers may keep going: a line appended to the old file meanwhile is still in its record file."""
    path = runs_file(results)
    lines: list[bytes] = []
    seen: set[bytes] = set()
    for rec in iter_raw_records(results, warn=False):
        line = json.dumps(rec, sort_keys=True, allow_nan=True).encode()
        if line not in seen:
            seen.add(line)
            lines.append(line + b"\n")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    backup = None
    try:
        with open(tmp, "wb") as f:
            f.write(b"".join(lines))
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            backup = path.with_name(f"{path.name}.{time.strftime('%Y%m%dT%H%M%S')}.bak")
            shutil.copy2(path, backup)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise write_error(path, e) from e
    return len(lines), backup


def check_writable(out: Path, flag: str = "--out") -> None:
    """Fail before any work when the output folder cannot be created or written."""
    if out.suffix == ".jsonl" or out.is_file():
        raise StoreError(f"{flag} {out} must be a folder, not a file; pass a folder name")
    if runs_file(out).is_dir():
        raise StoreError(f"{runs_file(out)} is a folder; remove it or pick another --out")
    probe = None
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-probe-{os.getpid()}"
        with open(probe, "wb") as f:
            f.write(b"x" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise StoreError(
            f"cannot write to output folder {out} ({e.strerror}); pick another {flag} or free space"
        ) from None
    finally:
        if probe is not None and probe.exists():
            probe.unlink()
