"""What Slurm says about a sweep's jobs: the queue (`squeue`), the runs still waiting in it under an earlier job,
and the job states `--wait` follows.

submitit follows its Slurm jobs through `sacct`. On a cluster without accounting (`AccountingStorageType=none`, as
a one-node test cluster or a small lab's often is) sacct fails: submitit then warns on every poll and never sees a
job end that left no result file (cancelled, killed outright), so `--wait` would wait forever. There the jobs get a
watcher that reads `squeue -t all` instead (`_use_squeue_states`; one line says so): a job no longer listed has
ended, and its result file, or its absence, says how.
"""

from __future__ import annotations

import getpass
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from gapt_bench.launch.options import JOBS_FILE, SUBMITIT_DIR

# squeue's states of a job that has ended (ENDED: no longer listed); the others (pending, running, completing,
# requeued, held, suspended, ...) mean it may still run
ENDED_STATES = {
    "ENDED",
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
}


def slurm_queue(all_states: bool = False) -> dict[str, str] | None:
    """{job id: state} of this user's jobs in the Slurm queue, one line per array task (`squeue -r`; `all_states`:
    also those that ended in the last minutes, `-t all`); None when squeue is missing or fails (then nothing is
    known to be queued)."""
    states = ["-t", "all"] if all_states else []
    try:
        done = subprocess.run(
            ["squeue", "-h", "-r", "-u", getpass.getuser(), *states, "-o", "%i %T"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, KeyError, subprocess.SubprocessError):  # no squeue, no user name, a hung controller
        return None
    if done.returncode != 0:
        return None
    return dict(line.split(None, 1) for line in done.stdout.splitlines() if len(line.split(None, 1)) == 2)


def queued_runs(out: Path, last_jobs: dict[tuple, dict] | None = None) -> dict[tuple, tuple[str, str]]:
    """{run key: (job id, state)} for the runs whose last Slurm job (`jobs.jsonl`, or `last_jobs` already read from
    it) is still in the queue."""
    if last_jobs is None:
        last_jobs = _last_jobs(Path(out) / SUBMITIT_DIR)
    jobs = {k: j for k, j in last_jobs.items() if j.get("cluster") == "slurm"}
    queue = slurm_queue() if jobs else None
    if not queue:
        return {}
    return {k: (str(j["job_id"]), queue[str(j["job_id"])]) for k, j in jobs.items() if str(j["job_id"]) in queue}


def _last_jobs(folder: Path) -> dict[tuple, dict]:
    out: dict[tuple, dict] = {}
    try:
        text = (folder / JOBS_FILE).read_text()
    except OSError:
        return out
    for line in text.splitlines():
        try:
            rec = json.loads(line)
            out[tuple(rec["key"])] = rec
        except (ValueError, KeyError, TypeError):
            continue
    return out


# ----------------------------------------------------------------------------------------------------------------
# Job states without accounting


def _sacct_problem() -> str | None:
    """Why sacct cannot report job states here (e.g. "Slurm accounting storage is disabled"), or None if it can."""
    try:
        done = subprocess.run(
            ["sacct", "-n", "-X", "-j", "1", "-o", "JobID"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.SubprocessError) as e:
        return f"sacct: {e}"
    if done.returncode == 0:
        return None
    lines = [ln.strip() for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
    return lines[-1][:200] if lines else f"sacct exited with {done.returncode}"


def _use_squeue_states(jobs: list, poll_s: float, say: Callable[[str], None]) -> None:
    """Where sacct cannot report the states of these submitit Slurm jobs, give them a watcher that reads squeue
    (see the module docstring) and say so in one line; where it can, leave submitit's own watcher."""
    jobs = [j for j in jobs if hasattr(j, "watcher")]  # submitit jobs (a test may pass stand-ins)
    if not jobs:
        return
    problem = _sacct_problem()
    if problem is None:
        return
    say(f"job states come from squeue ({problem})")
    watcher = _squeue_watcher(poll_s)
    for job in jobs:
        for j in [job, *getattr(job, "_sub_jobs", [])]:
            j.watcher = watcher
            watcher.register_job(str(j.job_id))


def _squeue_watcher(poll_s: float):
    from submitit.slurm.slurm import SlurmInfoWatcher

    class SqueueWatcher(SlurmInfoWatcher):
        """submitit's InfoWatcher on `squeue -t all` (jobs stay listed a few minutes after they end, `MinJobAge`):
        a job no longer listed has ended (state ENDED); its result file, or its absence, says how."""

        def update(self) -> None:
            ids = self._registered - self._finished
            if not ids:
                return
            self._num_calls += 1
            queue = slurm_queue(all_states=True)
            self._last_status_check = time.time()
            if queue is None:  # squeue failed this time: nothing learned
                return
            for job_id in ids:
                self._info_dict[job_id] = {"JobID": job_id, "State": queue.get(job_id, "ENDED"), "NodeList": ""}
                if self.is_done(job_id, mode="cache"):
                    self._finished.add(job_id)

        def is_done(self, job_id: str, mode: str = "standard") -> bool:
            return self.get_state(job_id, mode=mode).split()[0].upper() in ENDED_STATES

    return SqueueWatcher(delay_s=max(1, int(poll_s)))
