"""One run, start to record: claim its key, build the task and method, train, evaluate, write the run folder and
the record.

- a run already recorded as finished (ok or diverged, both deterministic) is never trained again;
- the process that trains a run holds its claim (`run_claims.try_claim`), so concurrent sweeps of one plan share
  the work;
- `resume=True` continues a run left unfinished (a folder whose state is "running") from its checkpoint;
- a matched control (e.g. periodic matched to gapt) receives the record summary of the run it copies.

The local pool (`gapt_bench.launch.local`) and cluster jobs (`gapt_bench.launch.cluster`) both call `execute`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gapt_bench.config import (
    RunConfig,
)
from gapt_bench.data.claims import holder, try_claim
from gapt_bench.data.files import DiskFullError, is_disk_full
from gapt_bench.launch.plan import matched_summary, run_key
from gapt_bench.methods import METHODS
from gapt_bench.results.store import SCHEMA_VERSION, RunRecord, append_record, finished_keys
from gapt_bench.tasks import TASKS
from gapt_bench.training.runtime import CHECKPOINT

STATE_FILE = "state.json"


@dataclass
class RunOutcome:
    record: dict[str, Any] | None
    skipped: bool = False
    interrupted: bool = False
    error: bool = False  # could not run (e.g. a corrupt checkpoint); no record was written
    message: str = ""


def find_unfinished(out: Path, cfg: RunConfig) -> Path | None:
    """The newest run folder of the same key left by an interrupted run (state "running")."""
    root = out / "runs"
    if not root.exists():
        return None
    key = list(run_key(cfg))
    found = []
    for state_path in root.glob(f"*/{STATE_FILE}"):
        try:
            state = json.loads(state_path.read_text())
        except (OSError, ValueError):
            continue
        if state.get("key") == key and state.get("status") == "running":
            found.append((state_path.stat().st_mtime, state_path.parent))
    return max(found)[1] if found else None


_STOP = {"flag": False}
_WORKER = {"parent": None, "in_run": False}


def _request_stop(signum, frame) -> None:
    _STOP["flag"] = True
    if _WORKER["parent"] is not None and not _WORKER["in_run"] and os.getppid() != _WORKER["parent"]:
        os._exit(143)  # an idle worker whose parent died: nothing to save


def install_signal_handlers() -> None:
    signal.signal(signal.SIGTERM, _request_stop)
    signal.signal(signal.SIGINT, _request_stop)


def request_stop() -> None:
    """Ask the run executing in this process to finish its step, checkpoint and return interrupted (no record);
    what a launcher's own signal handler calls (e.g. a cluster job told it is about to be preempted)."""
    _STOP["flag"] = True


def stop_requested() -> bool:
    return _STOP["flag"]


def clear_stop() -> None:
    _STOP["flag"] = False


def _new_run_dir(out: Path, cfg: RunConfig) -> Path:
    run_id = f"{cfg.task}-{cfg.method}-s{cfg.seed}-{cfg.config_hash()[:8]}-{uuid.uuid4().hex[:6]}"
    run_dir = out / "runs" / run_id
    try:
        run_dir.mkdir(parents=True, exist_ok=False)
        (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2, default=str))
        _write_state(run_dir, cfg, "running")
    except OSError:
        _remove_tree(run_dir)
        raise
    return run_dir


def execute(
    cfg: RunConfig,
    out: Path,
    *,
    checkpoint_every: int = 0,
    resume: bool = False,
    progress: Callable[..., None] | None = None,
    quiet: bool = True,
) -> RunOutcome:
    """Train and evaluate one run and append its record, unless it is finished or claimed elsewhere.

    Interrupted runs leave a checkpoint and no record. A full disk raises DiskFullError after removing what this
    attempt wrote (a new run folder, a temporary checkpoint); a resumable checkpoint is kept.
    """
    from gapt_bench.training import distributed

    dist = distributed.setup()
    claim, decision = None, None
    if dist.is_main:
        decision, claim = _claim(cfg, out)
    if dist.enabled:
        decision = distributed.broadcast_object(decision)
    if decision is not None:
        return decision
    try:
        return _execute_claimed(cfg, out, dist, checkpoint_every, resume, progress, quiet)
    finally:
        if claim is not None:
            claim.release()


def _claim(cfg: RunConfig, out: Path):
    """(skip outcome or None, claim or None): a finished or elsewhere-running run is skipped."""
    key = run_key(cfg)
    if key in finished_keys(out):
        return RunOutcome(None, skipped=True, message="already recorded"), None
    claim, owner = try_claim(out, key)
    if claim is None:
        return RunOutcome(None, skipped=True, message=f"running in {holder(owner)}"), None
    if key in finished_keys(out):  # finished between the first check and the claim
        claim.release()
        return RunOutcome(None, skipped=True, message="already recorded"), None
    return None, claim


@dataclass
class _OpenRun:
    """A claimed run with its folder, log and context, before training."""

    run_dir: Path
    created: bool
    logger: Any
    ctx: Any
    started: dt.datetime
    t0: float


def _open_run(cfg, out, dist, checkpoint_every, resume, progress, quiet) -> _OpenRun:
    """The run's folder (new, or the unfinished one to resume), log and RunContext."""
    import torch

    from gapt_bench.training import distributed
    from gapt_bench.training.runtime import RunContext, resolve_device

    torch.set_num_threads(cfg.train.threads)
    # DDP (torchrun): rank 0 alone creates and writes the run folder; the others learn its path by broadcast.
    run_dir, resuming, created = None, False, False
    if dist.is_main:
        run_dir = find_unfinished(out, cfg) if resume else None
        resuming = run_dir is not None
        if run_dir is None:
            try:
                run_dir, created = _new_run_dir(out, cfg), True
            except OSError as e:
                if is_disk_full(e):
                    raise DiskFullError(
                        f"disk full while creating a run folder in {out}; free space, then rerun "
                        "the same command with --resume"
                    ) from e
                raise
    if dist.enabled:
        run_dir, resuming = distributed.broadcast_object((run_dir, resuming))
    logger = _RunLog(run_dir / "log.txt" if dist.is_main else None, echo=not quiet and dist.is_main)
    device = resolve_device(cfg.train.device, dist.local_rank if dist.enabled else None)
    ctx = RunContext(
        run_dir=run_dir,
        device=device,
        checkpoint_every=checkpoint_every,
        resume=resuming,
        progress=progress,
        stop_requested=lambda: _STOP["flag"],
        log=logger.write,
        rank=dist.rank,
        world_size=dist.world_size,
    )
    ranks = f", world_size={dist.world_size}" if dist.enabled else ""
    logger.write(f"start {run_dir.name} on {device} (resume={resuming}{ranks})")
    return _OpenRun(run_dir, created, logger, ctx, dt.datetime.now(dt.timezone.utc), time.perf_counter())


def _execute_claimed(cfg, out, dist, checkpoint_every, resume, progress, quiet) -> RunOutcome:
    run = _open_run(cfg, out, dist, checkpoint_every, resume, progress, quiet)

    def train():
        run.ctx.matched = matched_summary(cfg, out)
        return TASKS.get(cfg.task)(cfg).run(METHODS.get(cfg.method), run.ctx)

    return _finish_run(cfg, out, dist, run, train)


def _finish_run(cfg, out, dist, run: _OpenRun, train: Callable[[], Any], wall: float | None = None) -> RunOutcome:
    """Train (`train()` returns the TaskResult), then write the record; a diverged or failed run is recorded, an
    interrupted one is not. `wall`: the run's share of a batched group's time (default: this call's)."""
    from gapt_bench.launch import environment as envmod
    from gapt_bench.training import distributed
    from gapt_bench.training.runtime import CheckpointError, Diverged, Interrupted

    run_dir, logger, log, run_id = run.run_dir, run.logger, run.logger.write, run.run_dir.name
    status, error, result = "ok", None, None
    try:
        result = train()
    except Interrupted as e:
        log(str(e))
        logger.close()
        return RunOutcome(None, interrupted=True, message=f"{run_id}: {e}")
    except CheckpointError as e:
        log(str(e))
        logger.close()
        return RunOutcome(
            None,
            error=True,
            message=f"{run_id}: {e}; to start that run over: rm -r {run_dir} and rerun the same command with --resume",
        )
    except Diverged as e:
        status, error = "diverged", {"step": e.step, "message": str(e)}
        log(str(e))
    except OSError as e:
        if not is_disk_full(e):
            status, error = "failed", {"message": f"{type(e).__name__}: {e}"}
            log(traceback.format_exc())
        else:
            logger.close()
            _clean_after_disk_full(run_dir, run.created)
            raise DiskFullError(
                f"disk full while training {run_id} (in {out}); free space, then rerun the same command with --resume"
            ) from e
    except Exception as e:  # a failed run is recorded, the sweep goes on
        status, error = "failed", {"message": f"{type(e).__name__}: {e}"}
        log(traceback.format_exc())
    wall = time.perf_counter() - run.t0 if wall is None else wall
    task_cls = TASKS.get(cfg.task)
    record = _make_record(
        cfg, task_cls, run_id, status, error, result, wall, run.started, envmod.capture(run.ctx.device)
    )
    if dist.is_main:
        try:
            append_record(out, record)
        except DiskFullError:
            logger.close()
            _clean_after_disk_full(run_dir, run.created)
            raise
        _write_state(run_dir, cfg, "done")
        (run_dir / CHECKPOINT).unlink(missing_ok=True)
        log(f"end status={status} wall={wall:.1f}s")
        logger.close()
    distributed.barrier(long=True)  # DDP: the record exists before any rank moves on
    return RunOutcome(record)


def execute_group(
    cfgs: list[RunConfig],
    out: Path,
    *,
    checkpoint_every: int = 0,
    resume: bool = False,
    progress: list[Callable[..., None] | None] | None = None,
    quiet: bool = True,
) -> list[RunOutcome]:
    """Train runs that differ only in their seed as one batched model (`Task.run_group`; see
    `gapt_bench.launch.plan.batch_groups`), each with its own folder, curve, log and record, as if run alone; a
    record's `summary.batch_members` says how many trained together and its wall time is its share of the group's.
    Finished or elsewhere-claimed members are skipped. When the group cannot train as one (a member diverges, a
    matched control has no reference, any error) its folders are removed and every member runs alone, so what is
    recorded is what separate runs record."""
    from gapt_bench.training import distributed

    dist = distributed.setup()
    progress = progress or [None] * len(cfgs)
    outcomes: list[RunOutcome | None] = [None] * len(cfgs)
    claims, members = [], []
    try:
        for i, cfg in enumerate(cfgs):
            decision, claim = _claim(cfg, out)
            if decision is not None:
                outcomes[i] = decision
            else:
                claims.append(claim)
                members.append(i)
        alone = len(members) < 2 or dist.enabled or any(resume and find_unfinished(out, cfgs[i]) for i in members)
        if not alone:
            outcomes_group = _train_group([cfgs[i] for i in members], out, dist, [progress[i] for i in members])
            if outcomes_group is not None:
                for i, o in zip(members, outcomes_group):
                    outcomes[i] = o
                members = []
        for i in members:  # alone: a group of one, a resumed member, or a group that could not train as one
            outcomes[i] = _execute_claimed(cfgs[i], out, dist, checkpoint_every, resume, progress[i], quiet)
    finally:
        for claim in claims:
            claim.release()
    return [o for o in outcomes if o is not None]


def _train_group(cfgs: list[RunConfig], out: Path, dist, progress: list) -> list[RunOutcome] | None:
    """The members trained as one; None (their folders removed) when the group cannot train as one."""
    from gapt_bench.training.runtime import Interrupted

    runs = [_open_run(cfg, out, dist, 0, False, p, True) for cfg, p in zip(cfgs, progress)]
    try:
        for cfg, run in zip(cfgs, runs):
            run.ctx.matched = matched_summary(cfg, out)
        t0 = time.perf_counter()
        results = TASKS.get(cfgs[0].task)(cfgs[0]).run_group(METHODS.get(cfgs[0].method), cfgs, [r.ctx for r in runs])
        share = (time.perf_counter() - t0) / len(cfgs)
    except Interrupted as e:  # stopped: nothing recorded, nothing to resume from (a group keeps no checkpoint)
        for run in runs:
            run.logger.write(str(e))
            run.logger.close()
            _remove_tree(run.run_dir)
        return [RunOutcome(None, interrupted=True, message=f"{run.run_dir.name}: {e}") for run in runs]
    except Exception as e:  # every member again, alone: a diverged member is then recorded as it would be alone
        for run in runs:
            run.logger.write(f"the batched group of {len(cfgs)} could not train as one ({type(e).__name__}: {e})")
            run.logger.close()
            _remove_tree(run.run_dir)
        return None
    return [_finish_run(cfg, out, dist, run, lambda r=r: r, wall=share) for cfg, run, r in zip(cfgs, runs, results)]


def _make_record(cfg, task_cls, run_id, status, error, result, wall, started, env) -> RunRecord:
    metrics = result.metrics if result else {}
    tokens = result.tokens if result else 0
    train_time = (result.summary.get("train_time_s") if result else None) or wall
    summary = dict(result.summary) if result else {}
    if cfg.about:
        summary["preset_about"] = cfg.about
    return RunRecord(
        schema_version=SCHEMA_VERSION,
        kind="training",
        run_id=run_id,
        task=cfg.task,
        task_version=task_cls.version,
        method=cfg.method,
        seed=cfg.seed,
        preset=cfg.preset,
        config=cfg.to_dict(),
        config_hash=cfg.config_hash(),
        setup_hash=cfg.setup_hash(),
        metrics=metrics,
        metric_directions=task_cls.metric_directions(metrics),
        primary_metrics=list(task_cls.primary),
        controls=list(METHODS.get(cfg.method).controls),
        status=status,
        error=error,
        n_params=result.n_params if result else None,
        tokens=tokens,
        steps=result.steps if result else None,
        stop_reason=result.stop_reason if result else None,
        wall_time_s=round(wall, 3),
        tokens_per_s=round(tokens / train_time, 1) if tokens and train_time else None,
        summary=summary,
        env=env,
        started_at=started.isoformat(timespec="seconds"),
        finished_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )


class _RunLog:
    """The run's log.txt; best effort: a full disk stops the log, never the run (the run's own writes report it)."""

    def __init__(self, path: Path | None, echo: bool) -> None:
        self.file = None
        self.echo = echo
        if path is not None:
            try:
                self.file = open(path, "a")
            except OSError:
                self.file = None

    def write(self, msg: str) -> None:
        if self.file is not None:
            try:
                self.file.write(f"{dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')} {msg}\n")
                self.file.flush()
            except OSError:
                self.close()
        if self.echo:
            print(msg, flush=True)

    def close(self) -> None:
        if self.file is not None:
            try:
                self.file.close()
            except OSError:
                pass
            self.file = None


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _clean_after_disk_full(run_dir: Path, created: bool) -> None:
    """No debris: drop temporary checkpoints; drop the run folder unless it holds a checkpoint to resume from."""

    for tmp in run_dir.glob("*.tmp"):
        tmp.unlink(missing_ok=True)
    if created and not (run_dir / CHECKPOINT).exists():
        _remove_tree(run_dir)


def _write_state(run_dir: Path, cfg: RunConfig, status: str) -> None:
    tmp = run_dir / (STATE_FILE + ".tmp")
    try:
        tmp.write_text(json.dumps({"key": list(run_key(cfg)), "status": status}))
        os.replace(tmp, run_dir / STATE_FILE)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
