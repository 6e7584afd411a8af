"""What `gapt-bench run` shows while it runs.

On a terminal, a live display: runs done / total with the ETA (`launch.progress`: the planned work left over the
measured speed), and each run in progress with its step and tokens/s (steps/s where a task counts steps), work
inside a run (a reference model's training) shown as its own stage; finished runs scroll above it, one line each.
Elsewhere (CI, a log file), one line per finished run, and every PROGRESS_EVERY_S seconds one line per run that
has been going for longer than that. `--no-progress` keeps the per-run lines without the rest; `--quiet` shows
neither.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from gapt_bench.config import RunConfig
from gapt_bench.launch.progress import TRAIN, RunState, SweepProgress, fmt_duration

PROGRESS_EVERY_S = float(os.environ.get("GAPT_BENCH_PROGRESS_EVERY_S", "60"))  # off a terminal


def interactive() -> bool:
    """A live display only on a terminal, never under CI (CI=true) or TQDM_DISABLE."""
    return sys.stdout.isatty() and not os.environ.get("CI") and not os.environ.get("TQDM_DISABLE")


def run_line(r: RunState) -> tuple[str, str]:
    """(name, where it is): 'step 120/400 (30%)', or a stage of work inside the run: 'reference 200/1600'."""
    step, total = r.stages.get(r.stage, [0, 0])
    if r.stage != TRAIN:
        return r.name, f"{r.stage} {step}/{total}"
    if total:
        return r.name, f"step {step}/{total} ({100 * step // max(total, 1)}%)"
    return r.name, "starting"


def fit_line(head: str, metrics: list[str], tail: str, width: int) -> str:
    """`head: m1, m2, ...tail` with as many metrics as fit `width` (at least the first); cut with … if still wide."""
    for k in range(len(metrics), 0, -1):
        line = f"{head}: {', '.join(metrics[:k])}{tail}" if metrics else f"{head}{tail}"
        if len(line) <= width or k == 1:
            break
    else:
        line = f"{head}{tail}"
    return line if len(line) <= width else line[: max(width - 1, 0)] + "…"


class Display:
    """Progress of one sweep: `step` and `done` are what the launcher calls; `say` prints a line above the live
    part (or plainly off a terminal)."""

    def __init__(self, tracker: SweepProgress, mode: str, say: Callable[[str], None], console: Any = None) -> None:
        self.tracker, self.mode, self._say = tracker, mode, say  # mode: live | lines | plain | quiet
        self.console = console
        self.live: Any = None
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    # -- what the launcher calls -------------------------------------------------------------------------------
    def step(self, cfg: RunConfig, step: int, total: int, stage: str = TRAIN) -> None:
        self.tracker.step(cfg, step, total, stage)

    def done(
        self, cfg: RunConfig, status: str, line: str, steps: int | None = None, metrics: Sequence[str] = ()
    ) -> None:
        """A run ended: its line (`line`, then as many of `metrics` as fit the width; off a terminal, the sweep's
        count and ETA after them)."""
        self.tracker.finish(cfg, status, steps)
        if self.mode == "quiet":
            return
        tail = ""
        if self.mode == "lines" and status != "skip":
            done, _, total = self.tracker.counts()
            tail = f"  [{done}/{total}, ETA {fmt_duration(self.tracker.eta())}]"
        self.say(fit_line(line, list(metrics), tail, self.width()))

    def width(self) -> int:
        if self.live is not None:
            return int(self.live.console.width)
        return shutil.get_terminal_size((100, 24)).columns  # COLUMNS, else the terminal, else 100

    def say(self, line: str) -> None:
        if self.live is not None:
            self.live.console.print(line, overflow="ellipsis", no_wrap=True, crop=True, highlight=False)
        else:
            self._say(line)

    # -- the live part ---------------------------------------------------------------------------------------------
    def header(self) -> str:
        done, running, total = self.tracker.counts()
        return f"runs {done}/{total} done, {running} running, ETA {fmt_duration(self.tracker.eta())}"

    def status_lines(self) -> list[str]:
        lines = []
        for r in self.tracker.running():
            name, where = run_line(r)
            speed = self.tracker.speed(r)
            elapsed = fmt_duration(r.elapsed(self.tracker.clock()))
            lines.append(f"  {name}  {where}" + (f"  {speed}" if speed else "") + f"  {elapsed}")
        return lines

    def _renderable(self) -> Any:
        from rich.text import Text

        text = Text(self.header(), style="bold")
        for line in self.status_lines():
            text.append("\n" + line, style="")
        text.no_wrap = True
        text.overflow = "ellipsis"
        return text

    @contextlib.contextmanager
    def running(self) -> Iterator[Display]:
        """The live display (a terminal) or the periodic lines (off a terminal) while the sweep runs."""
        if self.mode == "live":
            from rich.live import Live

            class _Redraw:
                def __init__(self, display: Display) -> None:
                    self.display = display

                def __rich__(self) -> Any:
                    return self.display._renderable()

            with Live(_Redraw(self), console=self.console, refresh_per_second=4, transient=True) as live:
                self.live = live
                try:
                    yield self
                finally:
                    self.live = None
            return
        if self.mode == "lines":
            self._ticker = threading.Thread(target=self._tick, name="gapt-bench-progress-lines", daemon=True)
            self._ticker.start()
        try:
            yield self
        finally:
            self._stop.set()

    def _tick(self) -> None:
        """Off a terminal: every PROGRESS_EVERY_S, one line per run that has been going longer than that."""
        while not self._stop.wait(PROGRESS_EVERY_S):
            now = self.tracker.clock()
            long = [r for r in self.tracker.running() if r.elapsed(now) >= PROGRESS_EVERY_S]
            if not long:
                continue
            done, _, total = self.tracker.counts()
            eta = fmt_duration(self.tracker.eta())
            for r in long:
                name, where = run_line(r)
                speed = self.tracker.speed(r)
                speed = f", {speed}" if speed else ""
                head = f"...   {name}: {where}{speed}, {fmt_duration(r.elapsed(now))}"
                self._say(fit_line(head, [], f"  [{done}/{total}, ETA {eta}]", self.width()))
