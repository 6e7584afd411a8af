"""One cluster job (`RunJob`, a submitit Checkpointable): rebuild the run's config, take the DDP rendezvous from the
job, run it with `execute`, and checkpoint and requeue on preemption or a time limit (see `cluster` for the flow)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gapt_bench.config import RunConfig
from gapt_bench.data.claims import JOB_ENV
from gapt_bench.launch.options import (
    LauncherOptions,
    LaunchError,
)
from gapt_bench.results.store import has_results, iter_raw_records

try:  # the base class of the job: submitit's when installed (it always is where a job runs)
    from submitit.helpers import Checkpointable as _Checkpointable
except ImportError:  # pragma: no cover - exercised only without the cluster extra

    class _Checkpointable:  # type: ignore[no-redef]
        pass


# The signals a job received, and submitit's handler it replaced (one job per process).
_JOB: dict[str, Any] = {"preempted": None, "stopped": None, "handler": None}


def job_spec(
    cfg: RunConfig,
    out: Path,
    *,
    overrides: Iterable[str],
    includes: Iterable[str],
    checkpoint_every: int,
    opts: LauncherOptions,
) -> dict[str, Any]:
    """Everything a job needs, as plain data: the run's request (rebuilt and hash-checked in the job), where its
    results go, its plug-ins and how it waits."""
    from gapt_bench.launch.plan import run_key

    return {
        "out": str(Path(out).absolute()),
        "includes": [str(Path(p).absolute()) for p in includes],
        "task": cfg.task,
        "method": cfg.method,
        "seed": cfg.seed,
        "preset": cfg.preset,
        "overrides": list(overrides),
        "config_hash": cfg.config_hash(),
        "key": list(run_key(cfg)),
        "checkpoint_every": checkpoint_every,
        "threads": opts.threads(),
        "reference_wait_s": opts.reference_wait_min * 60,
        "poll_s": opts.poll_s,
    }


def config_of(spec: dict) -> RunConfig:
    """The run a job trains, planned again from its request; LaunchError if the hash differs from the submitter's
    (other code, presets or plug-ins on the job's machine)."""
    from gapt_bench.launch.plan import make_plan

    plan = make_plan([spec["task"]], [spec["method"]], [spec["seed"]], spec["preset"], spec["overrides"])
    for cfg in plan:
        if cfg.config_hash() == spec["config_hash"]:
            cfg.train.threads = int(spec.get("threads") or 1)
            return cfg
    raise LaunchError(
        f"run {spec['task']}/{spec['method']}/seed{spec['seed']} (config {spec['config_hash']}) is not "
        "in the plan rebuilt in the job: the code, presets or plug-ins differ from the submitter's"
    )


def torch_dist_env() -> dict[str, str]:
    """The torch.distributed variables of the current submitit job's task (RANK, WORLD_SIZE, LOCAL_RANK,
    LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), from submitit's TorchDistributedEnvironment. A single-node job
    meets on 127.0.0.1; several nodes on the job's first node."""
    from submitit.helpers import TorchDistributedEnvironment

    d = TorchDistributedEnvironment()
    addr = "127.0.0.1" if d._job_env.num_nodes == 1 else d.master_addr
    return {
        "MASTER_ADDR": str(addr),
        "MASTER_PORT": str(d.master_port),
        "RANK": str(d.rank),
        "WORLD_SIZE": str(d.world_size),
        "LOCAL_RANK": str(d.local_rank),
        "LOCAL_WORLD_SIZE": str(d.local_world_size),
    }


class JobInterrupted(RuntimeError):
    """A job stopped by a signal that does not requeue it; its run's checkpoint is kept."""


def _job_environment():
    try:
        from submitit import JobEnvironment

        return JobEnvironment()
    except Exception:  # not inside a submitit job (a test calling the job directly)
        return None


def _usr_signal() -> int:
    try:
        from submitit.core.job_environment import JobEnvironment

        return JobEnvironment._usr_sig()
    except Exception:
        return signal.SIGUSR2


class RunJob(_Checkpointable):
    """One run as a submitit job; requeued (checkpoint, then the same call again) on preemption and time limits.

    Stateless on purpose: everything is in the spec (`job_spec`), so the requeued call is the same call."""

    def __call__(self, spec: dict) -> dict:
        from gapt_bench.launch import execute
        from gapt_bench.launch.plugins import load_plugins

        threads = str(int(spec.get("threads") or 1))
        os.environ.setdefault("OMP_NUM_THREADS", threads)
        os.environ.setdefault("MKL_NUM_THREADS", threads)
        env = _job_environment()
        rank = 0
        if env is not None:
            os.environ[JOB_ENV] = str(env.job_id)
            if env.num_tasks > 1:
                os.environ.update(torch_dist_env())
            rank = env.global_rank
        self._install_signals()
        load_plugins(spec.get("includes") or [])
        cfg = config_of(spec)
        out = Path(spec["out"])
        poll = float(spec.get("poll_s") or 10.0)
        self._wait_for_reference(cfg, out, spec, poll)
        while True:
            outcome = execute.execute(
                cfg, out, checkpoint_every=int(spec.get("checkpoint_every") or 0), resume=True, quiet=False
            )  # the run's log lines also go to the job's log
            if not (outcome.skipped and outcome.message.startswith("running in")):
                break
            self._idle(poll)  # trained elsewhere right now: wait for its record (or for its claim to go stale)
        if outcome.interrupted:
            self._after_stop(outcome.message, rank)
            return {"key": spec["key"], "record": None, "skipped": False, "requeued": True, "message": outcome.message}
        if outcome.error:
            raise RuntimeError(outcome.message)
        return {
            "key": spec["key"],
            "record": outcome.record,
            "skipped": outcome.skipped,
            "message": outcome.message,
            "requeued": False,
        }

    def checkpoint(self, *args: Any, **kwargs: Any):
        """Called by submitit on preemption/timeout, once the run has written its checkpoint (see `_after_stop`):
        the requeued job is this same call, which resumes from that checkpoint."""
        from gapt_bench.launch import execute

        execute.request_stop()  # in case a caller reaches here first: the trainer checkpoints at its next step
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(type(self)(), *args, **kwargs)

    # -- signals: the run stops at a step boundary, then submitit requeues ------------------------------------------

    @staticmethod
    def _install_signals() -> None:
        from gapt_bench.launch import execute

        execute.clear_stop()
        usr = _usr_signal()
        _JOB["handler"] = signal.getsignal(usr)  # submitit's checkpoint-and-requeue handler

        def preempted(signum, frame) -> None:
            _JOB["preempted"] = signum
            execute.request_stop()

        def stopped(signum, frame) -> None:
            _JOB["stopped"] = signum
            execute.request_stop()

        signal.signal(usr, preempted)
        signal.signal(signal.SIGTERM, stopped)
        signal.signal(signal.SIGINT, stopped)

    def _after_stop(self, message: str, rank: int) -> None:
        """The run has checkpointed: requeue through submitit (rank 0; the other ranks just end), or fail loudly."""
        signum, handler = _JOB["preempted"], _JOB["handler"]
        if signum is not None and callable(handler):
            handler(signum, None)  # submitit: has it timed out? checkpoint() -> requeue -> exit; returns on rank > 0
            if rank != 0:
                return
        how = signal.Signals(_JOB["stopped"] or signum or signal.SIGTERM).name
        raise JobInterrupted(f"stopped by {how}: {message}; submit the same command again to resume it")

    def _idle(self, seconds: float) -> None:
        from gapt_bench.launch import execute

        end = time.time() + seconds
        while time.time() < end:
            if execute.stop_requested():
                self._after_stop("stopped while waiting (nothing to checkpoint)", _rank())
                raise JobInterrupted("requeued by the main task")
            time.sleep(min(0.2, seconds))

    def _wait_for_reference(self, cfg: RunConfig, out: Path, spec: dict, poll: float) -> None:
        """A matched control starts after the run it copies has a record (any status: a failed one fails it)."""
        from gapt_bench.launch.plan import reference_config, run_key

        ref = reference_config(cfg)
        if ref is None:
            return
        key = run_key(ref)
        deadline = time.time() + float(spec.get("reference_wait_s") or 0)
        while not (has_results(out) and any(_key(r) == key for r in iter_raw_records(out, warn=False))):
            if time.time() > deadline:
                raise LaunchError(
                    f"no record of the {ref.method} run (seed {ref.seed}) that this {cfg.method} run "
                    f"copies appeared in {out} within {spec.get('reference_wait_s', 0) / 60:g} min; "
                    "submit the sweep again once it has finished"
                )
            self._idle(poll)


def _key(rec: dict) -> tuple:
    return (rec["task"], rec["method"], rec["config_hash"], rec["seed"])


def _rank() -> int:
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def preempt(job) -> list[int]:
    """Simulate a preemption of a running local submitit job: send its task processes the signal Slurm sends
    (USR2 by default). (submitit's LocalJob._interrupt signals the job's controller, which does not forward it.)
    Returns the signalled pids."""
    pids = _task_pids(job)
    for pid in pids:
        os.kill(pid, _usr_signal())
    return pids


def _task_pids(job) -> list[int]:
    """The task processes of a local job: the children of its controller process."""
    controller = int(job.job_id)
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == controller:
            pids.append(int(stat.parent.name))
    return pids
