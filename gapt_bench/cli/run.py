"""`gapt-bench run`: train and evaluate a plan (locally or as cluster jobs), then print what it found."""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from gapt_bench.cli.common import UsageError, plan_from, print_result
from gapt_bench.launch.local import run_plan
from gapt_bench.launch.plan import check_matches
from gapt_bench.results import analysis
from gapt_bench.results.analysis.task_analyses import report_with_analyses
from gapt_bench.results.store import check_writable, read_records


def _progress_enabled(flag: bool) -> bool:
    return flag and sys.stdout.isatty() and not os.environ.get("CI") and not os.environ.get("TQDM_DISABLE")


def cmd_run(args) -> int:
    from gapt_bench.launch import cluster, options
    from gapt_bench.launch import status as launch_status
    from gapt_bench.launch.plugins import included

    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    if args.checkpoint_every < 0:
        raise UsageError(f"--checkpoint-every must be >= 0, got {args.checkpoint_every}")
    try:
        given = {
            name: getattr(args, name)
            for name in (
                "partition",
                "account",
                "qos",
                "timeout_min",
                "nodes",
                "gpus_per_node",
                "tasks_per_node",
                "cpus_per_task",
                "mem_gb",
                "array_parallelism",
                "max_timeouts",
                "signal_delay_s",
                "setup",
                "wait",
            )
        }
        given["slurm"] = options.parse_key_values(args.slurm_opt, "--slurm-opt")
        launcher, lopts = options.resolve_launcher(args.launcher, args.launcher_config, given)
        scheduler = cluster.detect_cluster() if launcher != "local" else "local"  # submitit installed: checked early
    except options.LaunchError as e:
        raise UsageError(str(e)) from None
    if args.track and launcher == "submitit" and scheduler == "slurm" and not lopts.wait:  # returns before runs end
        t = args.track[0]
        raise UsageError(
            f"--track needs the runs to end before the command does, and a Slurm submission returns "
            f"once queued: add --wait, or drop --track and later run `gapt-bench export {args.out} "
            f"--{t.kind} {t.where}`"
        )
    if launcher != "local" and args.workers is not None:
        raise UsageError(
            "--workers applies to --launcher local; submitit runs one job per run: cap how many run at "
            "once with --array-parallelism"
        )
    if args.dry_run and launcher == "local":
        raise UsageError("--dry-run applies to --launcher submitit or submitit-local")
    plan = plan_from(args)
    out = Path(args.out)
    check_matches(plan, out)
    if args.dry_run:
        try:
            for line in cluster.dry_run_lines(plan, out, launcher, lopts):
                print(line)
        except options.LaunchError as e:
            raise UsageError(str(e)) from None
        return 0
    check_writable(out)
    workers = 1 if launcher != "local" else (args.workers or _default_workers(plan))
    plan_argv = launch_status.plan_argv(args.tasks, args.methods, args.seeds, args.preset, args.overrides, args.include)
    status_cmd = shlex.join(["gapt-bench", "status", str(out), *plan_argv])
    say = _Say()
    how = f"{workers} worker{'s' if workers > 1 else ''}" if launcher == "local" else f"launcher {launcher}"
    say(f"gapt-bench run: {len(plan)} runs -> {out}/runs.jsonl ({how})")
    rows: list[tuple] = []
    problems: list[str] = []
    progress = None
    runs_bar = None
    if _progress_enabled(not args.no_progress):
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeRemainingColumn(),
        )
        progress.start()
        runs_bar = progress.add_task("runs", total=len(plan))

    def factory(cfg):
        if progress is None or workers > 1:  # step bars only for the run in this process
            return None
        tid = progress.add_task(f"{cfg.task}/{cfg.method}/s{cfg.seed}", total=None)

        def update(step: int, total: int) -> None:
            progress.update(tid, completed=step, total=total)

        return update

    def on_done(cfg, outcome) -> None:
        name = f"{cfg.task}/{cfg.method}/seed{cfg.seed}"
        if outcome.skipped:
            line = f"skip  {name}: {outcome.message}"
        elif outcome.interrupted:
            line = f"stop  {outcome.message}"
        elif outcome.error:
            line = f"error {name}: {outcome.message}"
            problems.append(outcome.message)
        else:
            rec = outcome.record
            rows.append((cfg, rec))
            shown = ", ".join(f"{k}={_fmt(v)}" for k, v in list(rec["metrics"].items())[:6])
            extra = f" {rec['error']['message']}" if rec.get("error") else ""
            line = f"{rec['status']:<5} {name} ({rec['wall_time_s']:.0f}s): {shown}{extra}"
        if progress:
            say.rich(progress.console, line)
            progress.advance(runs_bar)
        else:
            say(line)

    sub = None
    try:
        if launcher == "local":
            outcomes = run_plan(
                plan,
                out,
                workers=workers,
                checkpoint_every=args.checkpoint_every,
                resume=args.resume,
                on_done=on_done,
                progress_factory=factory,
            )
        else:  # one submitit job per run; every job resumes what an earlier one left
            sub = cluster.submit_plan(
                plan,
                out,
                launcher,
                lopts,
                overrides=args.overrides,
                includes=included(),
                checkpoint_every=args.checkpoint_every,
                on_done=on_done,
                say=say,
            )
            outcomes = sub.outcomes
    except options.SubmissionError as e:  # an array is queued already: say which and how to follow it, exit 1
        print(
            f"gapt-bench: error: {e}; follow them with `{status_cmd}` and resubmit the rest with the command it prints",
            file=sys.stderr,
        )
        return 1
    except options.LaunchError as e:
        raise UsageError(str(e)) from None
    finally:
        if progress:
            progress.stop()
    if sub is not None:
        if not sub.waited:  # a Slurm submission: the jobs run on; say where to look
            for line in sub.describe(status_cmd):
                say(line)
            return 0
        if sub.jobs:
            say(f"job logs: {sub.folder}/<job id>_0_log.out and .err; state of the sweep: {status_cmd}")
    if any(o.interrupted for o in outcomes) or len(outcomes) < len(plan):
        print(
            f"interrupted: checkpoints kept; continue with the same command plus --resume "
            f"(gapt-bench run ... --out {out} --resume)",
            file=sys.stderr,
        )
        return 130
    with say.guard():
        _print_run_table(rows)
        if not args.no_report and rows:
            print_result(report_with_analyses(read_records(out))[0], "rich")
    _track(out, [r for _, r in rows], args.track)
    if rows:
        worker_s = sum(r.get("wall_time_s") or 0.0 for _, r in rows)
        say(f"{len(rows)} runs trained in {worker_s:,.0f} worker-seconds ({worker_s / 60:.1f} worker-minutes)")
    bad = [r for _, r in rows if r["status"] != "ok"]
    if bad:
        print(
            f"gapt-bench: {len(bad)} run(s) did not finish ok: "
            + ", ".join(f"{r['run_id']} ({r['status']})" for r in bad),
            file=sys.stderr,
        )
    for message in problems:
        print(f"gapt-bench: {message}", file=sys.stderr)
    return 1 if bad or problems else 0


class _Say:
    """Progress lines to stdout that survive a closed pipe (`gapt-bench run | head -1`): once stdout is gone the
    sweep goes on silently and the exit code still reports it."""

    def __init__(self) -> None:
        self.closed = False

    def __call__(self, line: str) -> None:
        with self.guard():
            print(line, flush=True)

    def rich(self, console, line: str) -> None:
        with self.guard():
            console.print(line)

    @contextlib.contextmanager
    def guard(self):
        try:
            yield
        except BrokenPipeError:
            if not self.closed:
                self.closed = True
                return_devnull()


def return_devnull() -> None:
    """Point stdout at /dev/null (after a closed pipe) so later prints and the interpreter's flush stay quiet."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except OSError:
        pass


def _default_workers(plan) -> int:
    import torch  # loaded by the tasks anyway; not needed by the reading verbs

    if any(c.train.device.startswith("cuda") for c in plan) or (
        torch.cuda.is_available() and any(c.train.device == "auto" for c in plan)
    ):
        return 1
    return max(1, min(os.cpu_count() or 1, len(plan)))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _print_run_table(rows: list[tuple]) -> None:
    """Per-run metrics of this sweep, one table per task: primary metrics first, per-layer diagnostics left out."""
    for task in sorted({c.task for c, _ in rows}):
        recs = [r for c, r in rows if c.task == task]
        primary = [m for m in recs[0].get("primary_metrics") or [] if any(m in r["metrics"] for r in recs)]
        others = sorted({k for r in recs for k in r["metrics"] if k not in primary and not analysis.is_layer_metric(k)})
        names = primary + others
        table = Table(title=f"{task}: per-run metrics", show_lines=False)
        for col in ("method", "seed", "status", *names):
            table.add_column(col, justify="right" if col not in ("method", "status") else "left")
        for r in sorted(recs, key=lambda r: (r["method"], r["seed"])):
            table.add_row(r["method"], str(r["seed"]), r["status"], *[_fmt(r["metrics"].get(n, "")) for n in names])
        Console(width=200).print(table)


def _track_target(text: str):
    """argparse type of --track: refused before any training when the kind is unknown or its package missing."""
    from gapt_bench.results import tracking

    try:
        return tracking.parse_target(text)
    except tracking.TrackingError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _track(out: Path, records: list[dict], targets: list) -> None:
    """After a sweep: its runs' curves to the --track destinations; a failure there leaves the records intact."""
    from gapt_bench.results import tracking

    if not targets or not records:
        return
    try:
        for line in tracking.export(out, records, targets):
            print(line)
    except Exception as e:
        print(
            f"gapt-bench: curves not exported ({type(e).__name__}: {e}); the runs are saved, export them with "
            f"`gapt-bench export {out} --{targets[0].kind} {targets[0].where}`",
            file=sys.stderr,
        )
