"""`gapt-bench run`: train and evaluate a plan (locally or as cluster jobs), then print what it found."""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from gapt_bench.cli import progress
from gapt_bench.cli.common import UsageError, plan_from, print_result
from gapt_bench.launch.local import run_plan
from gapt_bench.launch.plan import check_matches, run_key
from gapt_bench.launch.progress import SweepProgress
from gapt_bench.results import analysis
from gapt_bench.results.analysis.task_analyses import report_with_analyses
from gapt_bench.results.store import check_writable, read_records, split_kinds


def cmd_run(args) -> int:
    from gapt_bench.launch import cluster, options
    from gapt_bench.launch import status as launch_status

    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    if args.checkpoint_every < 0:
        raise UsageError(f"--checkpoint-every must be >= 0, got {args.checkpoint_every}")
    if getattr(args, "save_model", False):
        args.overrides = [*args.overrides, "train.save_model=true"]
    if getattr(args, "no_batch", False):
        args.overrides = [*args.overrides, "train.batched=false"]
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
    if not args.quiet:
        say(f"gapt-bench run: {len(plan)} runs -> {out}/runs.jsonl ({how})")
    rows: list[tuple] = []
    problems: list[str] = []
    names = run_names(plan)
    tracker = SweepProgress(plan, workers, names=lambda c: names[run_key(c)])
    if args.quiet:
        mode = "quiet"
    elif args.no_progress:
        mode = "plain"
    else:
        mode = "live" if progress.interactive() else "lines"
    display = progress.Display(tracker, mode, say)

    def on_done(cfg, outcome) -> None:
        name = names.get(run_key(cfg), f"{cfg.task}/{cfg.method}/seed{cfg.seed}")
        steps, metrics = None, []
        if outcome.skipped:
            status, line = "skip", f"skip  {name}: {outcome.message}"
        elif outcome.interrupted:
            status, line = "stop", f"stop  {outcome.message}"
        elif outcome.error:
            status, line = "error", f"error {name}: {outcome.message}"
            problems.append(outcome.message)
        else:
            rec = outcome.record
            rows.append((cfg, rec))
            status, steps = rec["status"], rec.get("steps")
            line = f"{rec['status']:<5} {name} ({rec['wall_time_s']:.0f}s)"
            metrics = _headline(rec) + ([str(rec["error"]["message"])] if rec.get("error") else [])
        display.done(cfg, status, line, steps, metrics)

    sub = None
    try:
        with display.running():
            outcomes, sub = _launch(plan, out, launcher, lopts, workers, args, on_done, display, say)
    except options.SubmissionError as e:  # an array is queued already: say which and how to follow it, exit 1
        print(
            f"gapt-bench: error: {e}; follow them with `{status_cmd}` and resubmit the rest with the command it prints",
            file=sys.stderr,
        )
        return 1
    except options.LaunchError as e:
        raise UsageError(str(e)) from None
    return _finish(args, out, plan, outcomes, sub, rows, problems, status_cmd, say)


def _launch(plan, out, launcher, lopts, workers, args, on_done, display, say):
    """Run the plan locally or as cluster jobs: (outcomes, the cluster submission or None)."""
    from gapt_bench.launch import cluster
    from gapt_bench.launch.plugins import included

    if launcher == "local":
        outcomes = run_plan(
            plan,
            out,
            workers=workers,
            checkpoint_every=args.checkpoint_every,
            resume=args.resume,
            on_done=on_done,
            on_progress=display.step,
        )
        return outcomes, None
    # one submitit job per run; every job resumes what an earlier one left
    sub = cluster.submit_plan(
        plan,
        out,
        launcher,
        lopts,
        overrides=args.overrides,
        includes=included(),
        checkpoint_every=args.checkpoint_every,
        on_done=on_done,
        say=display.say,
    )
    return sub.outcomes, sub


def _finish(args, out, plan, outcomes, sub, rows, problems, status_cmd, say) -> int:
    """After the runs: where cluster jobs are, or the summary (`--full`: every table) and the exit code."""
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
        if rows and args.full:
            print_result(analysis.runs_table([r for _, r in rows]), "rich")
            print_result(report_with_analyses(split_kinds(read_records(out))[0])[0], "rich")
        elif rows and not args.no_report:
            print()
            print_result(analysis.summary(split_kinds(read_records(out))[0], results=str(out)), "rich")
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


def run_names(plan: list) -> dict[tuple, str]:
    """Each run's name in the progress lines: task/method/seedN, plus the setup fields that vary across the plan's
    runs of its task ([layout=grouped], [model=L1/d16, N=64]), so no two lines read the same."""
    from gapt_bench.results.analysis.runs import setup_columns

    names: dict[tuple, str] = {}
    for task in {c.task for c in plan}:
        cfgs = [c for c in plan if c.task == task]
        cols, values = setup_columns([{"config": c.to_dict()} for c in cfgs])
        for c, v in zip(cfgs, values):
            setup = ", ".join(f"{h}={v[k]}" if k != "model" else v[k] for k, h in cols)
            names[run_key(c)] = f"{c.task}/{c.method}/seed{c.seed}" + (f" [{setup}]" if setup else "")
    return names


def _headline(rec: dict) -> list[str]:
    """The metrics a finished-run line shows: the task's primary metrics, else its first three."""
    metrics = rec.get("metrics") or {}
    keys = [m for m in rec.get("primary_metrics") or [] if m in metrics] or list(metrics)[:3]
    return [f"{k}={_fmt(metrics[k])}" for k in keys]


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
