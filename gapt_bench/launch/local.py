"""Run a plan in this process or a local pool of one-thread workers.

Parallel workers load the same plug-ins as the parent and die with it: they checkpoint at the next step and exit,
and append nothing. `gapt_bench.launch.cluster` submits the same runs as cluster jobs instead.
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gapt_bench.config import (
    RunConfig,
)
from gapt_bench.data.files import DiskFullError, StoreError
from gapt_bench.launch.execute import (
    _STOP,
    _WORKER,
    RunOutcome,
    execute,
    execute_group,
    install_signal_handlers,
)
from gapt_bench.launch.plan import batch_groups, reference_config, run_key
from gapt_bench.launch.plugins import included, load_plugins
from gapt_bench.results.store import finished_keys, ok_keys


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


# Progress from a worker: (index of the run in the pool's list, step, total, stage) on this queue (or None).
_PROGRESS: dict[str, Any] = {"queue": None}
PROGRESS_EVERY_S = 0.25  # a worker sends at most this often per run (and always a stage's last step)


def _init_worker(gpu_queue, parent: int, includes: list[str], progress_queue=None) -> None:
    """Load the parent's plug-ins, pin each worker to its own GPU (round robin), tie its life to the parent's."""
    install_signal_handlers()
    _die_with_parent(parent)
    load_plugins(includes)
    _PROGRESS["queue"] = progress_queue
    if gpu_queue is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu_queue.get())


def throttled(send: Callable[[int, int, str], None], every: float = PROGRESS_EVERY_S) -> Callable[..., None]:
    """A progress callback (step, total[, stage]) that passes on at most one report per `every` seconds per
    stage, plus every stage's first and last step."""
    last: dict[str, float] = {}

    def report(step: int, total: int, stage: str = "train") -> None:
        now = time.monotonic()
        if step in (0, 1) or step >= total or now - last.get(stage, 0.0) >= every:
            last[stage] = now
            send(step, total, stage)

    return report


def _worker(cfgs: list[RunConfig], out: str, checkpoint_every: int, resume: bool, first: int = -1) -> list[RunOutcome]:
    """One unit of the plan in a pool worker: a run alone, or a batched group of seeds (`plan.batch_groups`);
    `first` is the index of its first run in the pool's list (progress reports name runs by index)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _WORKER["in_run"] = True
    queue = _PROGRESS["queue"]
    progress: list = [None] * len(cfgs)
    if queue is not None and first >= 0:

        def sender(index: int) -> Callable[[int, int, str], None]:
            def send(step: int, total: int, stage: str) -> None:
                try:
                    queue.put_nowait((index, step, total, stage))
                except Exception:  # a full or closed queue costs the display a report, never the run
                    pass

            return send

        progress = []
        for i in range(len(cfgs)):
            send = sender(first + i)
            send(0, 0, "train")  # started
            progress.append(throttled(send))
    try:
        return _execute_unit(cfgs, Path(out), checkpoint_every, resume, progress)
    finally:
        _WORKER["in_run"] = False
        if _WORKER["parent"] is not None and os.getppid() != _WORKER["parent"]:
            os._exit(143)  # orphaned: the run has checkpointed; nobody is left to read a result


def _execute_unit(cfgs: list[RunConfig], out: Path, checkpoint_every: int, resume: bool, progress: list):
    if len(cfgs) == 1:
        return [execute(cfgs[0], out, checkpoint_every=checkpoint_every, resume=resume, progress=progress[0])]
    return execute_group(cfgs, out, checkpoint_every=checkpoint_every, resume=resume, progress=progress)


def run_plan(
    plan: list[RunConfig],
    out: Path,
    *,
    workers: int = 1,
    checkpoint_every: int = 0,
    resume: bool = False,
    on_done: Callable[[RunConfig, RunOutcome], None] | None = None,
    on_progress: Callable[[RunConfig, int, int, str], None] | None = None,
) -> list[RunOutcome]:
    """Execute a plan. Finished runs are skipped; one torch thread per worker when parallel. A full disk stops the
    sweep (DiskFullError).

    `on_progress(cfg, step, total, stage)` hears each run's training as it goes, from this process or from the
    workers (through a queue, at most a few reports a second per run): step 0 when a run starts, then its optimizer
    steps of each stage ("train", or work inside the run such as "reference"). It is called from a helper thread
    when the runs are parallel."""
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
    from gapt_bench.training.distributed import launched

    if launched():  # under torchrun every process is one rank of each run: no pool of workers
        workers = 1
    # Two waves: matched controls run after every run they could copy has finished.
    waves = [[c for c in todo if reference_config(c) is None], [c for c in todo if reference_config(c) is not None]]
    for number, wave in enumerate(waves):
        if _STOP["flag"] or not wave:
            continue
        if number == 1:
            wave = _controls_with_reference(wave, out, outcomes, on_done)
        units = batch_groups(wave, workers)
        if workers <= 1:
            for unit in units:
                if _STOP["flag"]:
                    break
                progress: list = [None] * len(unit)
                if on_progress is not None:
                    for i, cfg in enumerate(unit):
                        on_progress(cfg, 0, 0, "train")
                        progress[i] = throttled(
                            lambda step, total, stage, cfg=cfg: on_progress(cfg, step, total, stage)
                        )
                unit_outcomes = _execute_unit(unit, out, checkpoint_every, resume, progress)
                outcomes += unit_outcomes
                if on_done:
                    for cfg, o in zip(unit, unit_outcomes):
                        on_done(cfg, o)
        else:
            outcomes += _run_pool(units, out, workers, checkpoint_every, resume, on_done, on_progress)
    return outcomes


def _controls_with_reference(wave: list[RunConfig], out: Path, outcomes: list, on_done) -> list[RunConfig]:
    """The matched controls whose reference run is recorded ok. The others are not run and leave no record: skipped
    while a concurrent sweep trains their reference (that sweep runs them after it), else an error outcome, so the
    sweep exits non-zero (their reference diverged, failed or was stopped; `--resume` runs them once it is ok),
    instead of a failed record per control."""
    from gapt_bench.data.claims import holder, live_claim

    ok = ok_keys(out)
    ready = []
    for cfg in wave:
        ref = reference_config(cfg)
        if ref is None or run_key(ref) in ok:
            ready.append(cfg)
            continue
        owner = live_claim(out, run_key(ref))
        if owner is not None:  # a concurrent sweep trains the reference; its second wave runs this control
            o = RunOutcome(None, skipped=True, message=f"waits for its {ref.method} run, training in {holder(owner)}")
        else:
            o = RunOutcome(
                None,
                error=True,
                message=f"{cfg.task} {cfg.method} seed {cfg.seed} not run: the {ref.method} run it is matched to has "
                f"no ok record in {out} (it diverged, failed or was stopped); it runs once that run is recorded ok, "
                f"or set {cfg.method}.match=none",
            )
        outcomes.append(o)
        if on_done:
            on_done(cfg, o)
    return ready


def _forward_progress(queue, todo: list[RunConfig], on_progress, stop: threading.Event) -> None:
    """The pool's progress reports, from the workers' queue to `on_progress` (a helper thread of the parent)."""
    import queue as queue_mod

    while not stop.is_set():
        try:
            index, step, total, stage = queue.get(timeout=0.2)
        except queue_mod.Empty:
            continue
        except (EOFError, OSError, ValueError):
            return
        try:
            on_progress(todo[index], step, total, stage)
        except Exception:  # the display's problem is never the sweep's
            pass


def _run_pool(units, out, workers, checkpoint_every, resume, on_done, on_progress=None) -> list[RunOutcome]:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    import torch

    todo = [cfg for unit in units for cfg in unit]
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
    progress_queue = ctx.Queue() if on_progress is not None else None
    stop_forwarding = threading.Event()
    if progress_queue is not None:
        threading.Thread(
            target=_forward_progress,
            args=(progress_queue, todo, on_progress, stop_forwarding),
            name="gapt-bench-progress",
            daemon=True,
        ).start()
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=ctx,
        initializer=_init_worker,
        initargs=(gpu_queue, os.getpid(), included(), progress_queue),
    ) as pool:

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
            first = 0
            for unit in units:
                futures[pool.submit(_worker, unit, str(out), checkpoint_every, resume, first)] = unit
                first += len(unit)
            for fut in as_completed(futures):
                if fut.cancelled():
                    continue
                unit_outcomes = fut.result()
                outcomes += unit_outcomes
                if on_done:
                    for cfg, o in zip(futures[fut], unit_outcomes):
                        on_done(cfg, o)
        except (DiskFullError, StoreError):
            forward_stop(signal.SIGTERM, None)
            raise
        finally:
            for sig, handler in previous.items():
                if handler is not None:  # None: set outside Python, cannot be put back
                    signal.signal(sig, handler)
            stop_forwarding.set()
    return outcomes
