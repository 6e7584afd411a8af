"""Where a sweep stands: runs done, each running run's step and speed, and an ETA from the work left.

The ETA is the remaining planned work over the measured throughput, never the run count: each run's work is its
planned optimizer steps (a run that may stop early, e.g. on convergence, counts its whole budget: an upper bound),
plus any work it reports inside itself (a reference model's training) once it starts; each step costs the seconds
per step measured on that run, else on the task's other runs (finished runs: wall time over steps, so start-up
and evaluation count too), else on the sweep's. With W workers the sweep ends no sooner than its longest run and
no sooner than the total over W.

`SweepProgress` is fed by the launcher (`run_plan(on_progress=..., on_done=...)`), from any thread; the CLI draws it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gapt_bench.config import RunConfig
from gapt_bench.launch.plan import run_key

TRAIN = "train"  # the stage of a run's own training; others (e.g. "reference") are work inside the run


def planned_steps(cfg: RunConfig) -> int | None:
    """The optimizer steps a run plans (its budget), as its task declares them; None when the task does not say."""
    from gapt_bench.tasks import TASKS

    try:
        steps = TASKS.get(cfg.task).planned_steps(cfg)
    except Exception:  # a plug-in task whose estimate fails: the ETA does without it
        return None
    return int(steps) if steps else None


def tokens_per_step(cfg: RunConfig) -> int | None:
    """Tokens of one optimizer step of an LM task (progress shows tokens/s); None where a task counts steps."""
    from gapt_bench.tasks import TASKS, LMTask

    try:
        lm = issubclass(TASKS.get(cfg.task), LMTask)
    except Exception:
        return None
    return cfg.train.batch_size * cfg.train.seq_len if lm else None


@dataclass
class RunState:
    """One run of the sweep as progress sees it."""

    cfg: RunConfig
    name: str
    planned: int | None  # its own training's planned steps
    tokens_per_step: int | None
    started: float | None = None
    finished: float | None = None
    status: str = ""
    stages: dict[str, list[int]] = field(default_factory=dict)  # stage -> [step, total]
    last: float | None = None  # time of the last step reported
    first: tuple[float, int] | None = None  # (time, steps done) at its first step: training speed from here
    rate_mark: tuple[float, int] | None = None  # (time, steps done) a while ago: the recent speed

    @property
    def done_steps(self) -> int:
        return sum(step for step, _ in self.stages.values())

    @property
    def total_steps(self) -> int | None:
        """Planned steps of every stage known so far (the run's own budget until it reports its total)."""
        own = self.stages.get(TRAIN, [0, self.planned or 0])[1] or self.planned
        if own is None:
            return None
        return own + sum(total for stage, (_, total) in self.stages.items() if stage != TRAIN)

    @property
    def stage(self) -> str:
        """The stage that reported last (the one running now)."""
        return next(reversed(self.stages), TRAIN) if self.stages else TRAIN

    def elapsed(self, now: float) -> float:
        return 0.0 if self.started is None else (self.finished or now) - self.started

    def seconds_per_step(self, now: float) -> float | None:
        """A finished run: its wall time per step (start-up and evaluation included). A running one: its training
        speed since its first step (None before three steps)."""
        done = self.done_steps
        if self.finished is not None:
            return self.elapsed(now) / done if done else None
        if self.first is None or self.last is None or done - self.first[1] < 3:
            return None
        return (self.last - self.first[0]) / (done - self.first[1])


class SweepProgress:
    """Thread-safe state of a sweep; `clock` is injectable for tests."""

    def __init__(
        self,
        plan: Sequence[RunConfig],
        workers: int = 1,
        names: Callable[[RunConfig], str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock
        self.workers = max(1, workers)
        self.lock = threading.Lock()
        self.started = clock()
        self.runs: dict[tuple, RunState] = {}
        for cfg in plan:
            name = names(cfg) if names else f"{cfg.task}/{cfg.method}/seed{cfg.seed}"
            self.runs[run_key(cfg)] = RunState(cfg, name, planned_steps(cfg), tokens_per_step(cfg))
        self.updates = 0  # how many events changed the state (the display redraws on them)

    # -- events --------------------------------------------------------------------------------------------------
    def step(self, cfg: RunConfig, step: int, total: int, stage: str = TRAIN) -> None:
        """A run reported `step` of `total` steps of `stage` (step 0: it started)."""
        with self.lock:
            r = self.runs.get(run_key(cfg))
            if r is None:
                return
            now = self.clock()
            if r.started is None:
                r.started = now
            if total or stage != TRAIN:
                r.stages.pop(stage, None)  # the stage that reported last goes last: the one shown as running
                r.stages[stage] = [step, total]
            r.last = now
            done = r.done_steps
            if r.first is None and done > 0:
                r.first = r.rate_mark = (now, done)
            elif r.rate_mark is not None and now - r.rate_mark[0] > 10.0:
                r.rate_mark = (now, done)
            self.updates += 1

    def finish(self, cfg: RunConfig, status: str, steps: int | None = None) -> None:
        """A run ended (status ok/failed/diverged/skip/stop); `steps` it trained, when known."""
        with self.lock:
            r = self.runs.get(run_key(cfg))
            if r is None:
                return
            now = self.clock()
            r.finished, r.status = now, status
            if r.started is None:
                r.started = now if status == "skip" else self.started
            if steps and not r.stages:
                r.stages[TRAIN] = [steps, steps]
            self.updates += 1

    # -- views ---------------------------------------------------------------------------------------------------
    def counts(self) -> tuple[int, int, int]:
        """(finished, running, total) runs."""
        with self.lock:
            done = sum(1 for r in self.runs.values() if r.finished is not None)
            running = sum(1 for r in self.runs.values() if r.started is not None and r.finished is None)
            return done, running, len(self.runs)

    def running(self) -> list[RunState]:
        with self.lock:
            return [r for r in self.runs.values() if r.started is not None and r.finished is None]

    def _measured(self, now: float) -> tuple[dict[str, float], float | None]:
        """Seconds per step: per task and over the sweep, from finished runs (wall time, start-up and evaluation
        included) and running ones."""
        per_task: dict[str, list[tuple[float, int]]] = {}
        for r in self.runs.values():
            sps = None if r.status == "skip" else r.seconds_per_step(now)
            if sps is not None:
                per_task.setdefault(r.cfg.task, []).append((sps * r.done_steps, r.done_steps))
        rates = {t: sum(s for s, _ in v) / sum(n for _, n in v) for t, v in per_task.items()}
        every = [x for v in per_task.values() for x in v]
        overall = sum(s for s, _ in every) / sum(n for _, n in every) if every else None
        return rates, overall

    def eta(self) -> float | None:
        """Seconds until the sweep ends, from the work left and the measured speed; None until something was
        measured, or while a run's planned work is unknown and nothing of its task has finished."""
        with self.lock:
            now = self.clock()
            rates, overall = self._measured(now)
            durations: dict[str, list[float]] = {}
            for r in self.runs.values():
                if r.finished is not None and r.status not in ("skip", "stop"):
                    durations.setdefault(r.cfg.task, []).append(r.elapsed(now))
            left = []
            for r in self.runs.values():
                if r.finished is not None:
                    continue
                total = r.total_steps
                own = r.seconds_per_step(now)
                sps = own if own is not None else rates.get(r.cfg.task, overall)
                if total is not None and sps is not None:
                    left.append(max(total - r.done_steps, 0) * sps)
                elif r.cfg.task in durations:  # no step count: a finished run of the task, its wall time
                    mean = sum(durations[r.cfg.task]) / len(durations[r.cfg.task])
                    left.append(max(mean - r.elapsed(now), 0.0))
                else:
                    return None
            if not left:
                return 0.0
            return max(max(left), sum(left) / min(self.workers, len(left)))

    def speed(self, r: RunState) -> str:
        """'1.2k tok/s' (an LM task's own training) or '35 steps/s', over the last ten seconds or so."""
        with self.lock:
            if r.rate_mark is None or r.last is None:
                return ""
            t0, n0 = r.rate_mark
            dt, dn = r.last - t0, r.done_steps - n0
            if (dt < 0.5 or dn <= 0) and r.first is not None:
                dt, dn = r.last - r.first[0], r.done_steps - r.first[1]
            if dt <= 0 or dn <= 0:
                return ""
            steps_s = dn / dt
            if r.tokens_per_step and r.stage == TRAIN:
                return f"{_si(steps_s * r.tokens_per_step)} tok/s"
            return f"{_si(steps_s)} steps/s"


def _si(x: float) -> str:
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def fmt_duration(seconds: float | None) -> str:
    """'1h 02m', '3m 20s', '45s'; '?' when unknown."""
    if seconds is None:
        return "?"
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s}s"
