"""Claims: a key (a run, a cached reference model) is worked on by one process at a time, across concurrent sweeps
and cluster nodes.

Before training, the executing process claims the run's key with an exclusive-create file in `OUT/claims/`
(O_EXCL is atomic on NFSv3+). The claim names its host, pid and cluster job (JOB_ENV), is refreshed while the run
trains (heartbeat), and is taken over when its owner is dead (same host), silent for CLAIM_STALE_S (another host),
or an earlier incarnation of the same requeued cluster job (by one taker at a time: `_remove_stale`).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gapt_bench.data.files import write_error

# The cluster job a process belongs to (gapt_bench.launch.job sets it), kept in its claims.
JOB_ENV = "GAPT_BENCH_JOB_ID"

CLAIMS_DIR = "claims"
CLAIM_HEARTBEAT_S = 30.0
CLAIM_STALE_S = 600.0  # a claim from another host not refreshed for this long is abandoned


def _proc_start(pid: int) -> str | None:
    """The start time of a process (Linux /proc), to tell a live owner from a reused pid; None if unknown."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    now = _proc_start(pid)
    return start is None or now is None or now == start


@dataclass
class Claim:
    """An exclusive claim on one run key; `release()` (or leaving the `with` block) deletes it."""

    path: Path
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def start_heartbeat(self, every: float = CLAIM_HEARTBEAT_S) -> None:
        def beat() -> None:
            while not self._stop.wait(every):
                try:
                    os.utime(self.path)
                except OSError:
                    pass

        self._thread = threading.Thread(target=beat, name="gapt-bench-claim", daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._stop.set()
        try:
            self.path.unlink()
        except OSError:
            pass

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def claim_path(out: Path, key: tuple) -> Path:
    digest = hashlib.sha256(json.dumps(list(key), default=str).encode()).hexdigest()[:24]
    return out / CLAIMS_DIR / f"{digest}.claim"


def claim_owner(path: Path) -> dict | None:
    try:
        return _parse_claim(path.read_bytes())
    except OSError:
        return None


def _parse_claim(data: bytes) -> dict | None:
    """A claim's owner, or None for an unreadable one (a writer that died between create and write, or garbage)."""
    try:
        owner = json.loads(data)
    except ValueError:
        return None
    return owner if isinstance(owner, dict) else None


def _stale(path: Path, owner: dict | None) -> bool:
    if owner is None:  # unreadable: a writer died between create and write, or garbage
        try:
            return time.time() - path.stat().st_mtime > 5.0
        except OSError:
            return True
    job = os.environ.get(JOB_ENV)
    if job and owner.get("job") == job and (owner.get("host"), owner.get("pid")) != (socket.gethostname(), os.getpid()):
        return True  # an earlier incarnation of this very cluster job (requeued after preemption, timeout or a crash)
    if owner.get("host") == socket.gethostname():
        return not _alive(int(owner.get("pid", -1)), owner.get("pid_start"))
    try:
        return time.time() - path.stat().st_mtime > CLAIM_STALE_S
    except OSError:
        return True


def live_claim(out: Path, key: tuple) -> dict | None:
    """The owner of a live claim on `key` (a run being trained right now), or None."""
    path = claim_path(out, key)
    if not path.exists():
        return None
    owner = claim_owner(path)
    return None if _stale(path, owner) else (owner or {})


def holder(owner: dict | None) -> str:
    """Who holds a claim, for messages: "pid P on HOST", or "another process" when its file names no owner."""
    return f"pid {owner.get('pid')} on {owner.get('host')}" if owner else "another process"


def _identity(path: Path) -> tuple[int, int, bytes] | None:
    """(inode, mtime in ns, bytes) of a claim file, read through one descriptor; None when it is gone. A new claim
    differs in all three from a stale one, even one left empty by a writer that died (its inode may be reused)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        data = b""
        while chunk := os.read(fd, 65536):
            data += chunk
        st = os.fstat(fd)
        return st.st_ino, st.st_mtime_ns, data
    except OSError:
        return None
    finally:
        os.close(fd)


def _exclusive_create(path: Path, data: bytes) -> bool:
    """Create `path` holding `data` unless it exists (O_EXCL); False if it exists. Nothing is left on a write error."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    except OSError as e:
        raise write_error(path, e) from e
    try:
        os.write(fd, data)
        os.fsync(fd)
    except OSError as e:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise write_error(path, e) from e
    os.close(fd)
    return True


def _remove_stale(path: Path, judged: tuple[int, int, bytes], me: bytes) -> None:
    """Remove the claim at `path` if it is still the one judged stale (`_identity` as read); race-free.

    Renaming or unlinking `path` straight away is not: two takers that judged the same claim stale each remove what
    `path` holds when they act, and the slower one removes the claim the faster one has just created. So the takers
    of one stale claim first take a lock specific to it, `<claim>.take-<digest of it>-<k>` (O_EXCL, naming the taker
    as a claim does): k = 0, or the next k when every lower lock's taker is dead too. The holder re-reads `path` and
    unlinks it only if it still is the stale claim: while it is, nobody else can remove it (its owner is dead, other
    takers wait on the lock) or create one (O_EXCL), so no fresh claim can slip in between the check and the unlink.
    A taker that finds a live lock backs off briefly; the caller then retries its create.
    """
    digest = hashlib.sha256(repr(judged).encode()).hexdigest()[:16]
    locks = [path.with_name(f"{path.name}.take-{digest}-{k}") for k in range(20)]
    for lock in locks:
        if _exclusive_create(lock, me):
            break
        if not _stale(lock, claim_owner(lock)):
            time.sleep(0.05)  # another taker is removing it right now
            return
    else:
        return
    try:
        if _identity(path) == judged:
            path.unlink(missing_ok=True)
    finally:
        for other in locks:  # lower locks are dead takers'; higher ones are takers backing off
            other.unlink(missing_ok=True)


def try_claim(out: Path, key: tuple, *, heartbeat: bool = True) -> tuple[Claim | None, dict | None]:
    """(claim, None) when this process now owns the run; (None, owner) when a live process does."""
    path = claim_path(out, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    me = json.dumps(
        {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "pid_start": _proc_start(os.getpid()),
            "job": os.environ.get(JOB_ENV) or None,
            "key": list(key),
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    ).encode()
    for _ in range(20):
        if not _exclusive_create(path, me):
            judged = _identity(path)
            owner = _parse_claim(judged[2]) if judged else None
            if judged is None:
                continue  # released since: create again
            if not _stale(path, owner):
                return None, owner or {}
            _remove_stale(path, judged, me)
            continue
        claim = Claim(path)
        if heartbeat:
            claim.start_heartbeat()
        return claim, None
    return None, claim_owner(path) or {}
