"""From a request (tasks x methods x seeds x preset x overrides) to a validated plan, and from a plan to records.

Everything that can be wrong with a request is found while planning, before any folder is created: unknown names,
bad types or values, impossible combinations. Execution then writes one run folder and one record per run.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import signal
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from gapt_bench.config import (ConfigError, RunConfig, apply_overrides, build_run_config, expand_grid,
                               resolve_preset)
from gapt_bench.registry import METHODS, TASKS
from gapt_bench.store import SCHEMA_VERSION, append_record, read_records, runs_file

STATE_FILE = "state.json"


def parse_seeds(text: str) -> list[int]:
    """'0-2' -> [0, 1, 2]; '0,3,5' -> [0, 3, 5]; ranges and lists combine ('0-2,7')."""
    seeds: list[int] = []
    for part in [p.strip() for p in str(text).split(",")]:
        try:
            if "-" in part[1:]:
                a, b = part.split("-", 1) if not part.startswith("-") else (part, "")
                lo, hi = int(a), int(b)
                if hi < lo:
                    raise ValueError
                seeds.extend(range(lo, hi + 1))
            else:
                seeds.append(int(part))
        except ValueError:
            raise ConfigError(f"bad seeds '{text}': use a list or range of non-negative integers like 0-2 or 0,3,5")
    if not seeds:
        raise ConfigError("no seeds given: use e.g. --seeds 0-2")
    if any(s < 0 for s in seeds):
        raise ConfigError(f"bad seeds '{text}': seeds must be non-negative")
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
    tasks, methods, seeds, overrides = list(tasks), list(methods), list(seeds), list(overrides)
    if not tasks:
        raise ConfigError("empty task list: name at least one task (see `gapt-bench ls`)")
    for name in methods:
        if name not in METHODS:
            raise ConfigError(METHODS.unknown_message(name))
    plan: list[RunConfig] = []
    for task in tasks:
        if task not in TASKS:
            raise ConfigError(TASKS.unknown_message(task))
        task_cls = TASKS.get(task)
        sections = resolve_preset(task, preset)
        for point in expand_grid(sections):
            point = apply_overrides(point, overrides)
            for method in methods:
                for seed in seeds:
                    cfg = build_run_config(task, method, seed, preset, point, task_cls.Options)
                    task_cls.finalize(cfg)
                    check_run(cfg)
                    plan.append(cfg)
    return plan


def check_run(cfg: RunConfig) -> None:
    """Cross-field checks every task shares."""
    m, t = cfg.model, cfg.train
    if m.n_embd % m.n_head:
        raise ConfigError(f"model.n_embd={m.n_embd} is not divisible by model.n_head={m.n_head}; change one of them")
    from gapt_bench.tasks.base import LMTask

    lm = issubclass(TASKS.get(cfg.task), LMTask)
    if lm and t.seq_len % cfg.mbe.patch_size:
        raise ConfigError(f"train.seq_len={t.seq_len} is not a multiple of mbe.patch_size={cfg.mbe.patch_size}; "
                          "change one so MBE patches tile the sequence")
    if t.batch_size % t.grad_accum:
        raise ConfigError(f"train.batch_size={t.batch_size} is not divisible by train.grad_accum={t.grad_accum}")
    if lm and t.warmup_steps and t.warmup_steps >= max(1, t.tokens // (t.batch_size * t.seq_len)):
        raise ConfigError(f"train.warmup_steps={t.warmup_steps} is not below the run's steps; lower it or raise train.tokens")
    if t.precision == "bf16" and t.device == "cpu":
        pass  # allowed (slow) so CPU tests can exercise the bf16 path
    if not (t.device in ("auto", "cpu") or t.device.startswith("cuda")):
        raise ConfigError(f"train.device='{t.device}' is not auto, cpu or cuda[:i]")


# ----------------------------------------------------------------------------------------------------------------
# Execution


@dataclass
class RunOutcome:
    record: dict[str, Any] | None
    skipped: bool = False
    interrupted: bool = False
    message: str = ""


def run_key(cfg: RunConfig) -> tuple:
    return (cfg.task, cfg.method, cfg.seed, cfg.config_hash())


def finished_keys(out: Path) -> set[tuple]:
    if not runs_file(out).exists():
        return set()
    return {(r["task"], r["method"], r["seed"], r["config_hash"]) for r in read_records(out, warn=False)
            if r.get("status") == "ok"}


def find_unfinished(out: Path, cfg: RunConfig) -> Path | None:
    """A run folder of the same (task, method, seed, config hash) left by an interrupted run."""
    root = out / "runs"
    if not root.exists():
        return None
    key = list(run_key(cfg))
    for state_path in sorted(root.glob(f"*/{STATE_FILE}")):
        try:
            state = json.loads(state_path.read_text())
        except (OSError, ValueError):
            continue
        if state.get("key") == key and state.get("status") == "running":
            return state_path.parent
    return None


_STOP = {"flag": False}


def _request_stop(signum, frame) -> None:
    _STOP["flag"] = True


def install_signal_handlers() -> None:
    signal.signal(signal.SIGTERM, _request_stop)
    signal.signal(signal.SIGINT, _request_stop)


def execute(cfg: RunConfig, out: Path, *, checkpoint_every: int = 0, resume: bool = False,
            progress: Callable[[int, int], None] | None = None, quiet: bool = True) -> RunOutcome:
    """Train and evaluate one run, append its record. Interrupted runs leave a checkpoint and no record."""
    import torch

    from gapt_bench import distributed
    from gapt_bench import env as envmod
    from gapt_bench.train import Diverged, Interrupted, RunContext, resolve_device

    torch.set_num_threads(cfg.train.threads)
    # DDP (torchrun): rank 0 alone creates and writes the run folder; the others learn its path by broadcast.
    dist = distributed.setup()
    run_dir, resuming = None, False
    if dist.is_main:
        run_dir = find_unfinished(out, cfg) if resume else None
        resuming = run_dir is not None
        if run_dir is None:
            run_id = f"{cfg.task}-{cfg.method}-s{cfg.seed}-{cfg.config_hash()[:8]}-{uuid.uuid4().hex[:6]}"
            run_dir = out / "runs" / run_id
            run_dir.mkdir(parents=True, exist_ok=False)
            (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2, default=str))
            _write_state(run_dir, cfg, "running")
    if dist.enabled:
        run_dir, resuming = distributed.broadcast_object((run_dir, resuming))
    run_id = run_dir.name
    log_file = open(run_dir / "log.txt", "a") if dist.is_main else None

    def log(msg: str) -> None:
        if log_file is not None:
            log_file.write(f"{dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')} {msg}\n")
            log_file.flush()
        if not quiet and dist.is_main:
            print(msg, flush=True)

    device = distributed.device_for(cfg.train.device) if dist.enabled else resolve_device(cfg.train.device)
    ctx = RunContext(run_dir=run_dir, device=device, checkpoint_every=checkpoint_every, resume=resuming,
                     progress=progress, stop_requested=lambda: _STOP["flag"], log=log, rank=dist.rank,
                     world_size=dist.world_size)
    task_cls, method_cls = TASKS.get(cfg.task), METHODS.get(cfg.method)
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.perf_counter()
    log(f"start {run_id} on {device} (resume={resuming})")
    status, error, result = "ok", None, None
    try:
        result = task_cls(cfg).run(method_cls, ctx)
    except Interrupted as e:
        log(str(e))
        if log_file is not None:
            log_file.close()
        return RunOutcome(None, interrupted=True, message=f"{run_id}: {e}")
    except Diverged as e:
        status, error = "diverged", {"step": e.step, "message": str(e)}
        log(str(e))
    except Exception as e:  # a failed run is recorded, the sweep goes on
        status, error = "failed", {"message": f"{type(e).__name__}: {e}"}
        log(traceback.format_exc())
    wall = time.perf_counter() - t0
    metrics = result.metrics if result else {}
    tokens = result.tokens if result else 0
    train_time = (result.summary.get("train_time_s") if result else None) or wall
    record = {
        "schema_version": SCHEMA_VERSION, "run_id": run_id, "task": cfg.task, "task_version": task_cls.version,
        "method": cfg.method, "seed": cfg.seed, "preset": cfg.preset, "config": cfg.to_dict(),
        "config_hash": cfg.config_hash(), "setup_hash": cfg.setup_hash(), "metrics": metrics,
        "metric_directions": task_cls.metric_directions(metrics), "status": status, "error": error,
        "n_params": result.n_params if result else None, "tokens": tokens, "steps": result.steps if result else None,
        "stop_reason": result.stop_reason if result else None, "wall_time_s": round(wall, 3),
        "tokens_per_s": round(tokens / train_time, 1) if tokens and train_time else None,
        "summary": result.summary if result else {}, "env": envmod.capture(device),
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if dist.is_main:
        append_record(out, record)
        _write_state(run_dir, cfg, "done")
        ckpt = run_dir / "checkpoint.pt"
        if ckpt.exists():
            ckpt.unlink()
        log(f"end status={status} wall={wall:.1f}s")
        log_file.close()
    distributed.barrier(long=True)  # DDP: the record exists before any rank moves on
    return RunOutcome(record)


def _write_state(run_dir: Path, cfg: RunConfig, status: str) -> None:
    tmp = run_dir / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps({"key": list(run_key(cfg)), "status": status}))
    os.replace(tmp, run_dir / STATE_FILE)


def _init_worker(gpu_queue) -> None:
    """Pin each worker process to its own GPU (round robin), so `--workers N` on N GPUs runs one run per GPU."""
    if gpu_queue is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu_queue.get())


def _worker(cfg: RunConfig, out: str, checkpoint_every: int, resume: bool) -> RunOutcome:
    install_signal_handlers()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    return execute(cfg, Path(out), checkpoint_every=checkpoint_every, resume=resume)


def run_plan(plan: list[RunConfig], out: Path, *, workers: int = 1, checkpoint_every: int = 0, resume: bool = False,
             on_done: Callable[[RunConfig, RunOutcome], None] | None = None,
             progress_factory: Callable[[RunConfig], Callable[[int, int], None] | None] | None = None) -> list[RunOutcome]:
    """Execute a plan (skipping finished runs when resuming). One torch thread per worker when parallel."""
    done = finished_keys(out) if resume else set()
    outcomes: list[RunOutcome] = []
    todo = []
    for cfg in plan:
        if run_key(cfg) in done:
            o = RunOutcome(None, skipped=True, message="already finished")
            outcomes.append(o)
            if on_done:
                on_done(cfg, o)
        else:
            todo.append(cfg)
    install_signal_handlers()
    from gapt_bench.distributed import launched

    if launched():  # under torchrun every process is one rank of each run: no pool of workers
        workers = 1
    if workers <= 1:
        for cfg in todo:
            if _STOP["flag"]:
                break
            o = execute(cfg, out, checkpoint_every=checkpoint_every, resume=resume,
                        progress=progress_factory(cfg) if progress_factory else None)
            outcomes.append(o)
            if on_done:
                on_done(cfg, o)
        return outcomes
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    for cfg in todo:
        cfg.train.threads = 1  # execution-only field: not part of the config hash
    ctx = mp.get_context("spawn")
    gpu_queue = None
    import torch

    n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n_gpus:
        gpu_queue = ctx.Queue()
        for i in range(workers):
            gpu_queue.put(i % n_gpus)
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(gpu_queue,)) as pool:
        def forward_stop(signum, frame) -> None:  # workers finish their step, checkpoint and return
            _STOP["flag"] = True
            for fut in futures:
                fut.cancel()
            for proc in list(getattr(pool, "_processes", {}).values()):
                if proc.is_alive():
                    os.kill(proc.pid, signal.SIGTERM)

        signal.signal(signal.SIGTERM, forward_stop)
        futures = {pool.submit(_worker, cfg, str(out), checkpoint_every, resume): cfg for cfg in todo}
        try:
            for fut in as_completed(futures):
                o = fut.result()
                outcomes.append(o)
                if on_done:
                    on_done(futures[fut], o)
        except KeyboardInterrupt:
            _STOP["flag"] = True
    return outcomes
