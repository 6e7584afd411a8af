"""From a request (tasks x methods x seeds x preset x overrides) to a validated plan, and from a plan to records.

Everything that can be wrong with a request is found while planning, before any folder is created: unknown names,
bad types or values, impossible combinations, unusable devices or data sources. Execution then writes one run folder
and one record per run key (task, method, config, seed):

- a run already recorded as finished (ok or diverged, both deterministic) is never trained again;
- the process that trains a run holds its claim (`store.try_claim`), so concurrent sweeps of one plan share the work;
- `resume=True` continues a run left unfinished (a folder whose state is "running") from its checkpoint;
- a matched control (e.g. periodic matched to gapt) runs after the run it copies, whose record summary it receives;
- parallel workers load the same plug-ins as the parent, and die with it: they checkpoint at the next step and
  exit, and append nothing.

`run_plan` executes a plan in this process or a local pool of workers; `gapt_bench.launch` submits the same runs as
cluster jobs (submitit: Slurm job arrays or local processes), each job calling `execute` for one run.
"""
from __future__ import annotations

import copy
import ctypes
import dataclasses
import datetime as dt
import json
import os
import signal
import threading
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from gapt_bench.config import (ConfigError, RunConfig, apply_overrides, build_run_config, expand_grid,
                               resolve_preset)
from gapt_bench.registry import METHODS, TASKS, included, load_plugins
from gapt_bench.store import (CHECKPOINT, SCHEMA_VERSION, DiskFullError, RunRecord, StoreError, append_record, finished_keys,
                              has_results, is_disk_full, iter_raw_records, ok_keys, try_claim)
from gapt_bench.store import run_key as record_key

STATE_FILE = "state.json"
MAX_SEED = 2**32 - 1  # seeds land in JSON records read by pandas/numpy: stay well inside int64
MAX_SEEDS = 10_000
MAX_PLAN_RUNS = 100_000


def parse_seeds(text: str) -> list[int]:
    """'0-2' -> [0, 1, 2]; '0,3,5' -> [0, 3, 5]; ranges and lists combine ('0-2,7'). Bounded: at most MAX_SEEDS
    seeds, each in [0, MAX_SEED] (checked before any list is built)."""
    spans: list[tuple[int, int]] = []
    for part in [p.strip() for p in str(text).split(",")]:
        try:
            if "-" in part[1:]:
                a, b = part.split("-", 1) if not part.startswith("-") else (part, "")
                lo, hi = int(a), int(b)
                if hi < lo:
                    raise ValueError
            else:
                lo = hi = int(part)
        except ValueError:
            raise ConfigError(f"bad seeds '{text}': use a list or range of non-negative integers like 0-2 or 0,3,5")
        if lo < 0:
            raise ConfigError(f"bad seeds '{text}': seeds must be non-negative")
        if hi > MAX_SEED:
            raise ConfigError(f"bad seeds '{text}': seeds must be at most {MAX_SEED}")
        spans.append((lo, hi))
    if not spans:
        raise ConfigError("no seeds given: use e.g. --seeds 0-2")
    count = sum(hi - lo + 1 for lo, hi in spans)
    if count > MAX_SEEDS:
        raise ConfigError(f"bad seeds '{text}': {count:,} seeds requested, at most {MAX_SEEDS:,}; split the sweep")
    seeds = [s for lo, hi in spans for s in range(lo, hi + 1)]
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"bad seeds '{text}': a seed is listed twice")
    return seeds


def parse_names(text: str, what: str) -> list[str]:
    names = [n.strip() for n in str(text).split(",") if n.strip()]
    if not names:
        raise ConfigError(f"empty {what} list: name at least one (see `gapt-bench ls`)")
    if len(set(names)) != len(names):
        raise ConfigError(f"{what} list '{text}' names one twice")
    return names


def make_plan(tasks: Iterable[str], methods: Iterable[str], seeds: Iterable[int], preset: str,
              overrides: Iterable[str] = ()) -> list[RunConfig]:
    """Every run of the request as a validated RunConfig. Each (task, grid point, method) is resolved and checked
    once; its seeds are copies that differ only in the seed. Grid points that overrides make identical give one
    run each (a plan never holds a run key twice)."""
    tasks, methods, seeds, overrides = list(tasks), list(methods), list(seeds), list(overrides)
    if not tasks:
        raise ConfigError("empty task list: name at least one task (see `gapt-bench ls`)")
    for name in methods:
        if name not in METHODS:
            raise ConfigError(METHODS.unknown_message(name))
    plan: list[RunConfig] = []
    seen: set[tuple[str, str]] = set()
    for task in tasks:
        if task not in TASKS:
            raise ConfigError(TASKS.unknown_message(task))
        task_cls = TASKS.get(task)
        sections = resolve_preset(task, preset)
        points = expand_grid(sections)
        size = len(plan) + len(points) * len(methods) * len(seeds) * (len(tasks) - tasks.index(task))
        if size > MAX_PLAN_RUNS:
            raise ConfigError(f"the plan would have over {MAX_PLAN_RUNS:,} runs; use fewer seeds, methods or grid points")
        for point in points:
            point = apply_overrides(point, overrides)
            for method in methods:
                first = build_run_config(task, method, seeds[0], preset, point, task_cls.Options)
                task_cls.finalize(first)
                task_cls.check_ignored(first)
                check_run(first)
                if (task, first.config_hash()) in seen:
                    continue
                seen.add((task, first.config_hash()))
                for seed in seeds:
                    cfg = first if seed == seeds[0] else copy.deepcopy(first)
                    cfg.seed = seed
                    plan.append(cfg)
    return plan


def check_run(cfg: RunConfig) -> None:
    """Cross-field checks every task shares."""
    m, t = cfg.model, cfg.train
    if m.n_embd % m.n_head:
        raise ConfigError(f"model.n_embd={m.n_embd} is not divisible by model.n_head={m.n_head}; change one of them")
    from gapt_bench.runtime import steps_for_budget
    from gapt_bench.task import LMTask

    lm = issubclass(TASKS.get(cfg.task), LMTask)
    if lm and t.seq_len % cfg.mbe.patch_size:
        raise ConfigError(f"train.seq_len={t.seq_len} is not a multiple of mbe.patch_size={cfg.mbe.patch_size}; "
                          "change one so MBE patches tile the sequence")
    if t.batch_size % t.grad_accum:
        raise ConfigError(f"train.batch_size={t.batch_size} is not divisible by train.grad_accum={t.grad_accum}")
    if lm and t.warmup_steps and t.warmup_steps >= steps_for_budget(cfg):
        raise ConfigError(f"train.warmup_steps={t.warmup_steps} is not below the run's steps; lower it or raise train.tokens")
    if t.optimizer == "muon":
        check_muon()
    check_device(t.device)


def check_muon() -> None:
    """train.optimizer=muon builds torch.optim.Muon(adjust_lr_fn=...), which torch 2.1-2.8 lack."""
    import inspect

    import torch

    muon = getattr(torch.optim, "Muon", None)
    if muon is None or "adjust_lr_fn" not in inspect.signature(muon).parameters:
        raise ConfigError(f"train.optimizer=muon needs torch.optim.Muon with adjust_lr_fn (torch >= 2.9), but this is "
                          f"torch {torch.__version__}; upgrade torch or use train.optimizer=adamw")


def check_device(spec: str) -> None:
    """train.device must name a device this machine has: auto, cpu, cuda or cuda:<index>."""
    import re

    if spec in ("auto", "cpu"):
        return
    m = re.fullmatch(r"cuda(?::(\d+))?", spec)
    if m is None:
        raise ConfigError(f"train.device='{spec}' is not auto, cpu, cuda or cuda:<index>")
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(f"train.device={spec} but this machine has no CUDA device; use train.device=auto or cpu")
    if m.group(1) is not None and int(m.group(1)) >= torch.cuda.device_count():
        raise ConfigError(f"train.device={spec} but only {torch.cuda.device_count()} CUDA device(s) are visible")


def reference_config(cfg: RunConfig) -> RunConfig | None:
    """The config of the run a matched control copies (same task, setup, seed and method sections), or None."""
    name = METHODS.get(cfg.method).matches(cfg)
    return None if name is None else dataclasses.replace(cfg, method=name)


def check_matches(plan: list[RunConfig], out: Path) -> None:
    """Every matched control needs the run it copies recorded ok in `out`, or planned and not yet recorded
    (ConfigError otherwise): a diverged run is never trained again and has no schedule to copy."""
    planned, finished, ok = {run_key(c) for c in plan}, finished_keys(out), ok_keys(out)
    for cfg in plan:
        ref = reference_config(cfg)
        if ref is None or run_key(ref) in ok:
            continue
        which = f"the {ref.method} run of the same task, setup and seed (task {cfg.task}, seed {cfg.seed})"
        if run_key(ref) in finished:
            raise ConfigError(f"{cfg.method} is matched to {which}, which is recorded as diverged in {out} and has "
                              f"no schedule to copy; set {cfg.method}.match=none or leave {cfg.method} out")
        if run_key(ref) not in planned:
            raise ConfigError(f"{cfg.method} is matched to {which}, which is neither planned nor in {out}; add "
                              f"{ref.method} to --methods or set {cfg.method}.match=none")


def matched_summary(cfg: RunConfig, out: Path) -> dict | None:
    """The record (run_id and summary) of the run `cfg` copies; RuntimeError if it is missing or did not finish ok."""
    ref = reference_config(cfg)
    if ref is None:
        return None
    key = run_key(ref)
    rec = next((r for r in iter_raw_records(out, warn=False) if record_key(r) == key and r["status"] == "ok"),
               None) if has_results(out) else None
    if rec is None:
        raise RuntimeError(f"the {ref.method} run this {cfg.method} run is matched to (seed {cfg.seed}) has no ok "
                           f"record in {out}; run it first, or set {cfg.method}.match=none")
    return {"run_id": rec["run_id"], "summary": rec.get("summary") or {}}


# ----------------------------------------------------------------------------------------------------------------
# Execution


@dataclass
class RunOutcome:
    record: dict[str, Any] | None
    skipped: bool = False
    interrupted: bool = False
    error: bool = False  # could not run (e.g. a corrupt checkpoint); no record was written
    message: str = ""


def run_key(cfg: RunConfig) -> tuple:
    """The store's key of a run: (task, method, config_hash, seed)."""
    return (cfg.task, cfg.method, cfg.config_hash(), cfg.seed)


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


def execute(cfg: RunConfig, out: Path, *, checkpoint_every: int = 0, resume: bool = False,
            progress: Callable[[int, int], None] | None = None, quiet: bool = True) -> RunOutcome:
    """Train and evaluate one run and append its record, unless it is finished or claimed elsewhere.

    Interrupted runs leave a checkpoint and no record. A full disk raises DiskFullError after removing what this
    attempt wrote (a new run folder, a temporary checkpoint); a resumable checkpoint is kept.
    """
    from gapt_bench import distributed

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
        where = f"pid {owner.get('pid')} on {owner.get('host')}" if owner else "another process"
        return RunOutcome(None, skipped=True, message=f"running in {where}"), None
    if key in finished_keys(out):  # finished between the first check and the claim
        claim.release()
        return RunOutcome(None, skipped=True, message="already recorded"), None
    return None, claim


def _execute_claimed(cfg, out, dist, checkpoint_every, resume, progress, quiet) -> RunOutcome:
    import torch

    from gapt_bench import distributed
    from gapt_bench import env as envmod
    from gapt_bench.runtime import CheckpointError, Diverged, Interrupted, RunContext, resolve_device

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
                    raise DiskFullError(f"disk full while creating a run folder in {out}; free space, then rerun "
                                        "the same command with --resume") from e
                raise
    if dist.enabled:
        run_dir, resuming = distributed.broadcast_object((run_dir, resuming))
    run_id = run_dir.name
    logger = _RunLog(run_dir / "log.txt" if dist.is_main else None, echo=not quiet and dist.is_main)
    log = logger.write

    device = resolve_device(cfg.train.device, dist.local_rank if dist.enabled else None)
    ctx = RunContext(run_dir=run_dir, device=device, checkpoint_every=checkpoint_every, resume=resuming,
                     progress=progress, stop_requested=lambda: _STOP["flag"], log=log, rank=dist.rank,
                     world_size=dist.world_size)
    task_cls, method_cls = TASKS.get(cfg.task), METHODS.get(cfg.method)
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.perf_counter()
    ranks = f", world_size={dist.world_size}" if dist.enabled else ""
    log(f"start {run_id} on {device} (resume={resuming}{ranks})")
    status, error, result = "ok", None, None
    try:
        ctx.matched = matched_summary(cfg, out)
        result = task_cls(cfg).run(method_cls, ctx)
    except Interrupted as e:
        log(str(e))
        logger.close()
        return RunOutcome(None, interrupted=True, message=f"{run_id}: {e}")
    except CheckpointError as e:
        log(str(e))
        logger.close()
        return RunOutcome(None, error=True, message=f"{run_id}: {e}; to start that run over: rm -r {run_dir} and "
                                                     f"rerun the same command with --resume")
    except Diverged as e:
        status, error = "diverged", {"step": e.step, "message": str(e)}
        log(str(e))
    except OSError as e:
        if not is_disk_full(e):
            status, error = "failed", {"message": f"{type(e).__name__}: {e}"}
            log(traceback.format_exc())
        else:
            logger.close()
            _clean_after_disk_full(run_dir, created)
            raise DiskFullError(f"disk full while training {run_id} (in {out}); free space, then rerun the same "
                                "command with --resume") from e
    except Exception as e:  # a failed run is recorded, the sweep goes on
        status, error = "failed", {"message": f"{type(e).__name__}: {e}"}
        log(traceback.format_exc())
    wall = time.perf_counter() - t0
    record = _make_record(cfg, task_cls, run_id, status, error, result, wall, started, envmod.capture(device))
    if dist.is_main:
        try:
            append_record(out, record)
        except DiskFullError:
            logger.close()
            _clean_after_disk_full(run_dir, created)
            raise
        _write_state(run_dir, cfg, "done")
        (run_dir / CHECKPOINT).unlink(missing_ok=True)
        log(f"end status={status} wall={wall:.1f}s")
        logger.close()
    distributed.barrier(long=True)  # DDP: the record exists before any rank moves on
    return RunOutcome(record)


def _make_record(cfg, task_cls, run_id, status, error, result, wall, started, env) -> RunRecord:
    metrics = result.metrics if result else {}
    tokens = result.tokens if result else 0
    train_time = (result.summary.get("train_time_s") if result else None) or wall
    summary = dict(result.summary) if result else {}
    if cfg.about:
        summary["preset_about"] = cfg.about
    return RunRecord(
        schema_version=SCHEMA_VERSION, run_id=run_id, task=cfg.task, task_version=task_cls.version,
        method=cfg.method, seed=cfg.seed, preset=cfg.preset, config=cfg.to_dict(),
        config_hash=cfg.config_hash(), setup_hash=cfg.setup_hash(), metrics=metrics,
        metric_directions=task_cls.metric_directions(metrics), primary_metrics=list(task_cls.primary),
        controls=list(METHODS.get(cfg.method).controls), status=status, error=error,
        n_params=result.n_params if result else None, tokens=tokens, steps=result.steps if result else None,
        stop_reason=result.stop_reason if result else None, wall_time_s=round(wall, 3),
        tokens_per_s=round(tokens / train_time, 1) if tokens and train_time else None,
        summary=summary, env=env, started_at=started.isoformat(timespec="seconds"),
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


# ----------------------------------------------------------------------------------------------------------------
# Parallel workers


def _die_with_parent(parent: int) -> None:
    """Linux: SIGTERM this worker when its parent dies (prctl PR_SET_PDEATHSIG); everywhere: a watchdog thread
    that notices the parent is gone. Either way the run checkpoints at its next step and the worker exits."""
    _WORKER["parent"] = parent
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                _STOP["flag"] = True
                if not _WORKER["in_run"]:
                    os._exit(143)
            time.sleep(0.5)

    threading.Thread(target=watch, name="gapt-bench-parent-watch", daemon=True).start()
    if os.getppid() != parent:  # the parent died before the watch began
        os._exit(143)


def _init_worker(gpu_queue, parent: int, includes: list[str]) -> None:
    """Load the parent's plug-ins, pin each worker to its own GPU (round robin), tie its life to the parent's."""
    install_signal_handlers()
    _die_with_parent(parent)
    load_plugins(includes)
    if gpu_queue is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu_queue.get())


def _worker(cfg: RunConfig, out: str, checkpoint_every: int, resume: bool) -> RunOutcome:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _WORKER["in_run"] = True
    try:
        return execute(cfg, Path(out), checkpoint_every=checkpoint_every, resume=resume)
    finally:
        _WORKER["in_run"] = False
        if _WORKER["parent"] is not None and os.getppid() != _WORKER["parent"]:
            os._exit(143)  # orphaned: the run has checkpointed; nobody is left to read a result


def run_plan(plan: list[RunConfig], out: Path, *, workers: int = 1, checkpoint_every: int = 0, resume: bool = False,
             on_done: Callable[[RunConfig, RunOutcome], None] | None = None,
             progress_factory: Callable[[RunConfig], Callable[[int, int], None] | None] | None = None) -> list[RunOutcome]:
    """Execute a plan. Finished runs are skipped; one torch thread per worker when parallel. A full disk stops the
    sweep (DiskFullError)."""
    done = finished_keys(out)
    outcomes: list[RunOutcome] = []
    todo = []
    for cfg in plan:
        if run_key(cfg) in done:
            o = RunOutcome(None, skipped=True, message="already recorded")
            outcomes.append(o)
            if on_done:
                on_done(cfg, o)
        else:
            todo.append(cfg)
    install_signal_handlers()
    from gapt_bench.distributed import launched

    if launched():  # under torchrun every process is one rank of each run: no pool of workers
        workers = 1
    # Two waves: matched controls run after every run they could copy has finished.
    waves = [[c for c in todo if reference_config(c) is None], [c for c in todo if reference_config(c) is not None]]
    for wave in waves:
        if _STOP["flag"] or not wave:
            continue
        if workers <= 1:
            for cfg in wave:
                if _STOP["flag"]:
                    break
                o = execute(cfg, out, checkpoint_every=checkpoint_every, resume=resume,
                            progress=progress_factory(cfg) if progress_factory else None)
                outcomes.append(o)
                if on_done:
                    on_done(cfg, o)
        else:
            outcomes += _run_pool(wave, out, workers, checkpoint_every, resume, on_done)
    return outcomes


def _run_pool(todo, out, workers, checkpoint_every, resume, on_done) -> list[RunOutcome]:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    import torch

    for cfg in todo:
        cfg.train.threads = 1  # execution-only field: not part of the config hash
    ctx = mp.get_context("spawn")
    gpu_queue = None
    n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n_gpus:
        gpu_queue = ctx.Queue()
        for i in range(workers):
            gpu_queue.put(i % n_gpus)
    outcomes: list[RunOutcome] = []
    futures: dict = {}
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(gpu_queue, os.getpid(), included())) as pool:
        def forward_stop(signum, frame) -> None:  # workers finish their step, checkpoint and return
            _STOP["flag"] = True
            for fut in list(futures):
                fut.cancel()
            for proc in list((getattr(pool, "_processes", None) or {}).values()):
                if proc.is_alive():
                    os.kill(proc.pid, signal.SIGTERM)

        # SIGTERM and SIGINT (run_plan's handlers only set this process's flag) reach the workers while the pool
        # runs; the handlers before it are back afterwards, when there is no pool left to forward to.
        previous = {sig: signal.signal(sig, forward_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            for cfg in todo:
                futures[pool.submit(_worker, cfg, str(out), checkpoint_every, resume)] = cfg
            for fut in as_completed(futures):
                if fut.cancelled():
                    continue
                o = fut.result()
                outcomes.append(o)
                if on_done:
                    on_done(futures[fut], o)
        except (DiskFullError, StoreError):
            forward_stop(signal.SIGTERM, None)
            raise
        finally:
            for sig, handler in previous.items():
                if handler is not None:  # None: set outside Python, cannot be put back
                    signal.signal(sig, handler)
    return outcomes
