"""Command line: argument parsing, printing and exit codes only (no science here).

Exit codes: 0 ok; 1 a gate found a regression, runs failed, `status` found runs not done, `doctor --gpu` found no
CUDA or a failing part, or work failed after it began (a sweep half submitted, an export or a site build that
failed midway); 2 bad input (one line on stderr naming the problem and the fix; nothing written); 3 inconclusive
gate under --strict; 130 interrupted.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Sequence

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from gapt_bench import analysis
from gapt_bench.analysis import ReportError
from gapt_bench.config import ConfigError
from gapt_bench.registry import METHODS, TASKS, RegistryError, load_plugins, plugin_errors
from gapt_bench.runner import check_matches, make_plan, parse_names, parse_seeds, run_plan
from gapt_bench.site.content import report_with_analyses  # the report with each task's analyses (site shows it)
from gapt_bench.store import DiskFullError, StoreError, check_writable, read_records
from gapt_bench.text import DataError

DEFAULT_TASKS = "all"
DEFAULT_METHODS = "baseline,gapt"


class UsageError(Exception):
    """Bad command-line input; printed as one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of argparse's usage block
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _progress_enabled(flag: bool) -> bool:
    return flag and sys.stdout.isatty() and not os.environ.get("CI") and not os.environ.get("TQDM_DISABLE")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="gapt-bench", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="verb", parser_class=_Parser)

    def plan_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--tasks", default=DEFAULT_TASKS, help="comma list of tasks, or 'all' (default)")
        sp.add_argument("--methods", default=DEFAULT_METHODS, help=f"comma list (default {DEFAULT_METHODS})")
        sp.add_argument("--seeds", default="0-2", help="seeds as a range or list: 0-2, 0,3,5 (default 0-2)")
        sp.add_argument("--preset", default="quick", help="preset name from tasks/<task>/presets.yaml (default quick)")
        sp.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config value, type-checked (repeatable)")
        include_arg(sp)

    def include_arg(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--include", action="append", default=[], metavar="PATH",
                        help="load tasks/methods from a .py file or a folder of them (repeatable)")

    r = sub.add_parser("run", help="train and evaluate a plan of runs; append records to OUT/runs.jsonl")
    plan_args(r)
    r.add_argument("--out", default="results", help="results folder (default results/)")
    r.add_argument("--workers", type=int, default=None, help="parallel runs, one CPU thread each (default: cores on CPU, 1 on GPU)")
    r.add_argument("--checkpoint-every", type=int, default=0, metavar="STEPS", help="checkpoint interval (0 = off)")
    r.add_argument("--resume", action="store_true", help="continue interrupted runs, skip finished ones")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument("--no-report", action="store_true", help="do not print the summary report at the end")
    r.add_argument("--track", action="append", default=[], type=_track_target, metavar="KIND:WHERE",
                   help="also send each run's curve to tensorboard:DIR, wandb:PROJECT or trackio:PROJECT (repeatable; "
                        "optional packages; on Slurm with --wait)")
    lg = r.add_argument_group("cluster launchers (submitit: one job per run; see gapt_bench/launch.py)")
    lg.add_argument("--launcher", choices=("local", "submitit", "submitit-local"), default=None,
                    help="local (default: this process and its workers); submitit (Slurm job arrays where srun "
                         "exists, else local jobs); submitit-local (submitit's local executor: one process per run)")
    lg.add_argument("--launcher-config", metavar="FILE.yaml", default=None,
                    help="launcher options from a YAML file (keys as the flags below, e.g. partition: gpu; "
                         "slurm: {constraint: a100}); flags given here override it")
    lg.add_argument("--partition", default=None, help="Slurm partition")
    lg.add_argument("--account", default=None, help="Slurm account")
    lg.add_argument("--qos", default=None, help="Slurm quality of service")
    lg.add_argument("--timeout-min", type=int, default=None, metavar="MIN",
                    help="time limit of one job (default 240 on Slurm); longer runs are requeued from a checkpoint")
    lg.add_argument("--nodes", type=int, default=None, help="nodes per job (one run across nodes: DDP)")
    lg.add_argument("--gpus-per-node", type=int, default=None, metavar="N", help="GPUs per node for each job")
    lg.add_argument("--tasks-per-node", type=int, default=None, metavar="N",
                    help="processes (DDP ranks) per node (default: one per GPU, else 1)")
    lg.add_argument("--cpus-per-task", type=int, default=None, metavar="N",
                    help="CPUs per process, also its torch threads (default 1)")
    lg.add_argument("--mem-gb", type=float, default=None, metavar="GB", help="memory per node")
    lg.add_argument("--array-parallelism", type=int, default=None, metavar="N",
                    help="at most N jobs at once (Slurm array %%N; local: default the cores)")
    lg.add_argument("--max-timeouts", type=int, default=None, metavar="N",
                    help="requeues after hitting the time limit (default 3; preemptions do not count)")
    lg.add_argument("--slurm-opt", action="append", default=[], metavar="KEY=VALUE",
                    help="any other sbatch option, passed through (repeatable), e.g. constraint=a100")
    lg.add_argument("--setup", action="append", default=[], metavar="CMD",
                    help="shell line run before each job (repeatable), e.g. 'source .venv/bin/activate'")
    lg.add_argument("--wait", action="store_true", default=None,
                    help="Slurm: stay until every job has ended and print the results (local jobs always do)")
    lg.add_argument("--dry-run", action="store_true",
                    help="print the jobs and the sbatch file that would be submitted; submit nothing")

    st = sub.add_parser("status", help="which runs of a plan are done, running, failed, diverged or missing")
    st.add_argument("results", nargs="?", default="results")
    plan_args(st)
    st.add_argument("--compact", action="store_true",
                    help="first rewrite RESULTS/runs.jsonl from every record (drops damaged lines; keeps a .bak)")

    v = sub.add_parser("validate", help="resolve and print the run plan without training")
    plan_args(v)
    v.add_argument("--show-config", action="store_true", help="print each resolved config as JSON")

    ls = sub.add_parser("ls", help="list tasks, methods and presets, and where each comes from")
    ls.add_argument("what", nargs="?", default="all", choices=("all", "tasks", "methods", "presets"))
    include_arg(ls)

    rep = sub.add_parser("report", help="statistics over seeds, one table per task")
    rep.add_argument("results", nargs="?", default="results")
    rep.add_argument("--format", default="rich", choices=("rich", "md", "json"))
    rep.add_argument("--reference", default="baseline")
    rep.add_argument("--plots", metavar="DIR", default=None, help="also write PNG plots to DIR")
    rep.add_argument("--include-layers", action="store_true", help="also show per-layer metrics (rich/md)")

    pa = sub.add_parser("paper", help="the papers' claims side by side with what the results show")
    pa.add_argument("results", nargs="?", default="results")
    pa.add_argument("--format", default="rich", choices=("rich", "md", "json"))

    lb = sub.add_parser("leaderboard", help="methods ranked on each task's primary metrics by significant wins")
    lb.add_argument("results", nargs="*", default=["results"])
    lb.add_argument("--format", default="rich", choices=("rich", "md", "json"))
    lb.add_argument("--include-layers", action="store_true", help="also show per-layer diagnostics (rich/md)")

    cp = sub.add_parser("compare", help="how results B differ from results A (two-sided tests, Holm)")
    cp.add_argument("a")
    cp.add_argument("b")
    cp.add_argument("--tolerance", type=float, default=0.05,
                    help="mark changes past this fraction that are not significant with ~ (default 0.05)")
    cp.add_argument("--alpha", type=float, default=0.05)
    cp.add_argument("--format", default="rich", choices=("rich", "md", "json"))

    g = sub.add_parser("gate", help="regression gate: exit 1 on a significant regression past the tolerance")
    g.add_argument("--baseline", required=True, help="reference results (e.g. baselines/cpu-quick.jsonl)")
    g.add_argument("--candidate", required=True, help="candidate results folder or runs.jsonl")
    g.add_argument("--tolerance", type=float, default=0.05, help="relative tolerance (default 0.05)")
    g.add_argument("--alpha", type=float, default=0.05)
    g.add_argument("--min-n", type=int, default=3)
    g.add_argument("--strict", action="store_true", help="inconclusive verdicts exit 3")
    g.add_argument("--format", default="rich", choices=("rich", "md", "json"))

    dr = sub.add_parser("doctor", help="the environment; with --gpu, the prepared GPU check (CUDA paths, speed, MFU)")
    dr.add_argument("--gpu", action="store_true", help="run the GPU check (needs CUDA; about 8 minutes)")
    dr.add_argument("--out", default="results/gpu", help="folder for gpu_check.json and gpu_check.md")
    dr.add_argument("--budget", type=float, default=480.0, metavar="SECONDS", help="time budget (default 480)")

    pl = sub.add_parser("plot", help="write PNG plots of a results folder")
    pl.add_argument("results", nargs="?", default="results")
    pl.add_argument("--out", default=None, help="folder for the PNGs (default RESULTS/plots)")

    si = sub.add_parser("site", help="a static HTML site: leaderboard, papers' claims, a page per task, every run")
    si.add_argument("results", nargs="?", default="results")
    si.add_argument("-o", "--out", required=True, metavar="DIR", help="folder for the site (index.html and pages)")
    si.add_argument("--reference", default="baseline")
    si.add_argument("--no-figures", action="store_true", help="skip the matplotlib figures (faster; run curves stay)")
    include_arg(si)

    ex = sub.add_parser("export", help="training curves to TensorBoard event files, W&B or trackio (optional packages)")
    ex.add_argument("results", nargs="?", default="results")
    ex.add_argument("--tensorboard", metavar="DIR", help="one event folder per run: DIR/<run_id>/")
    ex.add_argument("--wandb", metavar="PROJECT", help="one W&B run per run, in PROJECT")
    ex.add_argument("--trackio", metavar="PROJECT", help="one trackio run per run, in PROJECT")
    return p


# ----------------------------------------------------------------------------------------------------------------


def _plan_from(args) -> list:
    tasks = TASKS.names() if args.tasks == "all" else parse_names(args.tasks, "task")
    methods = parse_names(args.methods, "method")
    return make_plan(tasks, methods, parse_seeds(args.seeds), args.preset, args.overrides)


def cmd_ls(args) -> int:
    if args.what in ("all", "tasks", "presets"):
        print("tasks:")
        for name in TASKS.names():
            cls = TASKS.get(name)
            try:
                presets = ", ".join(cls.load_presets()) if args.what != "tasks" else ""
            except ConfigError as e:  # a plug-in with broken presets must not hide the others
                presets = f"cannot load presets: {e}"
            print(f"  {name:<24} v{cls.version}  {cls.description}" + (f"  [presets: {presets}]" if presets else ""))
            print(f"  {'':<24} from {TASKS.origin(name)}")
    if args.what in ("all", "methods"):
        print("methods:")
        for name in METHODS.names():
            cls = METHODS.get(name)
            controls = f"  [controls: {', '.join(cls.controls)}]" if cls.controls else ""
            print(f"  {name:<24} {cls.description}{controls}")
            print(f"  {'':<24} from {METHODS.origin(name)}")
    for error in plugin_errors():
        print(f"broken plug-in: {error}")
    return 0


def cmd_validate(args) -> int:
    plan = _plan_from(args)
    print(f"plan: {len(plan)} runs")
    for cfg in plan:
        print(f"  {cfg.task:<22} {cfg.method:<10} seed={cfg.seed:<3} hash={cfg.config_hash()} setup={cfg.setup_hash()} "
              f"{TASKS.get(cfg.task).plan_summary(cfg)}")
        if args.show_config:
            print(json.dumps(cfg.to_dict(), indent=2, default=str))
    return 0


def cmd_run(args) -> int:
    from gapt_bench import launch
    from gapt_bench.registry import included

    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    if args.checkpoint_every < 0:
        raise UsageError(f"--checkpoint-every must be >= 0, got {args.checkpoint_every}")
    try:
        given = {name: getattr(args, name) for name in (
            "partition", "account", "qos", "timeout_min", "nodes", "gpus_per_node", "tasks_per_node", "cpus_per_task",
            "mem_gb", "array_parallelism", "max_timeouts", "setup", "wait")}
        given["slurm"] = launch.parse_key_values(args.slurm_opt, "--slurm-opt")
        launcher, lopts = launch.resolve_launcher(args.launcher, args.launcher_config, given)
        cluster = launch.detect_cluster() if launcher != "local" else "local"  # submitit installed: checked early
    except launch.LaunchError as e:
        raise UsageError(str(e)) from None
    if args.track and launcher == "submitit" and cluster == "slurm" and not lopts.wait:  # returns before runs end
        t = args.track[0]
        raise UsageError(f"--track needs the runs to end before the command does, and a Slurm submission returns "
                         f"once queued: add --wait, or drop --track and later run `gapt-bench export {args.out} "
                         f"--{t.kind} {t.where}`")
    if launcher != "local" and args.workers is not None:
        raise UsageError("--workers applies to --launcher local; submitit runs one job per run: cap how many run at "
                         "once with --array-parallelism")
    if args.dry_run and launcher == "local":
        raise UsageError("--dry-run applies to --launcher submitit or submitit-local")
    plan = _plan_from(args)
    out = Path(args.out)
    check_matches(plan, out)
    if args.dry_run:
        try:
            for line in launch.dry_run_lines(plan, out, launcher, lopts):
                print(line)
        except launch.LaunchError as e:
            raise UsageError(str(e)) from None
        return 0
    check_writable(out)
    workers = 1 if launcher != "local" else (args.workers or _default_workers(plan))
    plan_argv = launch.plan_argv(args.tasks, args.methods, args.seeds, args.preset, args.overrides, args.include)
    status_cmd = shlex.join(["gapt-bench", "status", str(out), *plan_argv])
    say = _Say()
    how = f"{workers} worker{'s' if workers > 1 else ''}" if launcher == "local" else f"launcher {launcher}"
    say(f"gapt-bench run: {len(plan)} runs -> {out}/runs.jsonl ({how})")
    rows: list[tuple] = []
    problems: list[str] = []
    progress = None
    runs_bar = None
    if _progress_enabled(not args.no_progress):
        progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                            TimeRemainingColumn())
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
            outcomes = run_plan(plan, out, workers=workers, checkpoint_every=args.checkpoint_every,
                                resume=args.resume, on_done=on_done, progress_factory=factory)
        else:  # one submitit job per run; every job resumes what an earlier one left
            sub = launch.submit_plan(plan, out, launcher, lopts, overrides=args.overrides, includes=included(),
                                     checkpoint_every=args.checkpoint_every, on_done=on_done, say=say)
            outcomes = sub.outcomes
    except launch.SubmissionError as e:  # an array is queued already: say which and how to follow it, exit 1
        print(f"gapt-bench: error: {e}; follow them with `{status_cmd}` and resubmit the rest with the command it "
              "prints", file=sys.stderr)
        return 1
    except launch.LaunchError as e:
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
        print(f"interrupted: checkpoints kept; continue with the same command plus --resume "
              f"(gapt-bench run ... --out {out} --resume)", file=sys.stderr)
        return 130
    with say.guard():
        _print_run_table(rows)
        if not args.no_report and rows:
            _print_result(report_with_analyses(read_records(out))[0], "rich")
    _track(out, [r for _, r in rows], args.track)
    bad = [r for _, r in rows if r["status"] != "ok"]
    if bad:
        print(f"gapt-bench: {len(bad)} run(s) did not finish ok: "
              + ", ".join(f"{r['run_id']} ({r['status']})" for r in bad), file=sys.stderr)
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

    if any(c.train.device.startswith("cuda") for c in plan) or (torch.cuda.is_available() and any(c.train.device == "auto" for c in plan)):
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


def _load(path: str) -> list[dict]:
    """The records at `path`; none at all is an error (nothing to report on is not a result)."""
    records = read_records(path)
    if not records:
        raise StoreError(f"no run records in {path}; point at a results folder that `gapt-bench run --out` filled")
    return records


def _check_reference(records: list[dict], reference: str) -> None:
    methods = sorted({r["method"] for r in records})
    if reference not in methods:
        raise UsageError(f"--reference {reference!r} has no runs in these results; methods present: {', '.join(methods)}")


def _check_gate_args(args) -> None:
    if args.tolerance < 0:
        raise UsageError(f"--tolerance must be >= 0 (a fraction, 0.05 = 5%), got {args.tolerance}")
    if not 0 < args.alpha < 1:
        raise UsageError(f"--alpha must be between 0 and 1 (e.g. 0.05), got {args.alpha}")
    if getattr(args, "min_n", 2) < 2:
        raise UsageError(f"--min-n must be >= 2 (a test needs two seeds), got {args.min_n}")


def cmd_report(args) -> int:
    records = _load(args.results)
    _check_reference(records, args.reference)
    if args.plots:  # refused before the report is printed, not after
        check_writable(Path(args.plots), flag="--plots")
    _print_result(report_with_analyses(records, args.reference)[0], args.format, args.include_layers)
    if args.plots:
        _write_plots(args.results, Path(args.plots), "--plots")
    return 0


def cmd_paper(args) -> int:
    _print_result(analysis.paper_table(report_with_analyses(_load(args.results))[0]), args.format)
    return 0


def _load_all(paths: Sequence[str]) -> list[dict]:
    """The records of several results locations, each run once: a run_id seen earlier (the same folder passed
    twice, a file and its folder) is dropped, so it cannot count as another seed. One stderr line says how many."""
    seen: set[str] = set()
    records = []
    dropped = 0
    for path in paths:
        for r in _load(path):
            if r["run_id"] in seen:
                dropped += 1
                continue
            seen.add(r["run_id"])
            records.append(r)
    if dropped:
        print(f"gapt-bench: {dropped} duplicate record(s) dropped (a run_id in more than one of the results "
              "given); each run counts once", file=sys.stderr)
    return records


def cmd_leaderboard(args) -> int:
    records = _load_all(args.results)
    _print_result(analysis.leaderboard(records), args.format, args.include_layers)
    return 0


def cmd_compare(args) -> int:
    """Two-sided: how B differs from A (better/worse for B); exit 0 whatever it finds."""
    _check_gate_args(args)
    _print_result(analysis.compare(_load(args.a), _load(args.b), alpha=args.alpha, tolerance=args.tolerance),
                  args.format)
    return 0


def cmd_gate(args) -> int:
    _check_gate_args(args)
    res = analysis.gate(_load(args.baseline), _load(args.candidate), tolerance=args.tolerance, alpha=args.alpha,
                        min_n=args.min_n, strict=args.strict)
    _print_result(res, args.format)
    return res["exit_code"]


def _print_result(result: dict, fmt: str, include_layers: bool = False) -> None:
    """Any analysis result in the chosen format (rich prints itself)."""
    text = analysis.render(result, fmt, include_layers=include_layers)
    if text is not None:
        print(text)


def cmd_plot(args) -> int:
    _load(args.results)
    _write_plots(args.results, Path(args.out) if args.out else Path(args.results) / "plots", "--out")
    return 0


def _write_plots(results: str, out: Path, flag: str) -> None:
    from gapt_bench import plots  # matplotlib: only when plotting

    check_writable(out, flag=flag)
    try:
        paths = plots.plot_all(Path(results), out)
    except OSError as e:
        raise StoreError(f"cannot write plots to {out} ({e.strerror or e}); pick another {flag}") from e
    for path in paths:
        print(f"wrote {path}")


def cmd_status(args) -> int:
    """Which runs of the plan are done, running, queued, failed, diverged or missing; exit 0 only when all are
    done."""
    from gapt_bench import launch
    from gapt_bench.store import compact, has_results

    out = Path(args.results)
    plan = _plan_from(args)
    if args.compact:
        n, backup = compact(out)
        print(f"compacted {out}/runs.jsonl: {n} record(s)" + (f" (previous file kept as {backup})" if backup else ""))
    states = launch.plan_status(plan, out)
    argv = launch.plan_argv(args.tasks, args.methods, args.seeds, args.preset, args.overrides, args.include)
    if not has_results(out):
        print(f"(no results in {out} yet)")
    for line in launch.status_lines(states, out, launch.resubmit_command(argv, out)):
        print(line)
    return 0 if all(s.state == "done" for s in states) else 1


def cmd_site(args) -> int:
    """The static site of a results folder (gapt_bench/site/)."""
    from gapt_bench.site import build_site

    records = _load(args.results)
    _check_reference(records, args.reference)
    out = Path(args.out)
    check_writable(out, flag="-o")
    command = ["gapt-bench", "site", args.results, "-o", args.out]
    command += (["--reference", args.reference] if args.reference != "baseline" else [])
    command += [x for path in args.include for x in ("--include", path)] + (["--no-figures"] if args.no_figures else [])
    try:
        site = build_site(args.results, out, records=records, reference=args.reference,
                          command=shlex.join(command), figures=not args.no_figures)
    except USER_ERRORS:
        raise
    except Exception as e:  # noqa: BLE001 (a page or figure failed, a full disk: the old site is still whole)
        why = (str(e).strip().splitlines() or [""])[0][:200]
        print(f"gapt-bench: error: site not built ({type(e).__name__}: {why}); {out} still holds its previous "
              "pages", file=sys.stderr)
        return 1
    print(f"wrote {len(site.pages)} pages ({site.n_runs} runs, {site.n_figures} figures) to {out}; "
          f"open {out / 'index.html'}")
    return 0


def _track_target(text: str):
    """argparse type of --track: refused before any training when the kind is unknown or its package missing."""
    from gapt_bench import tracking

    try:
        return tracking.parse_target(text)
    except tracking.TrackingError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _track(out: Path, records: list[dict], targets: list) -> None:
    """After a sweep: its runs' curves to the --track destinations; a failure there leaves the records intact."""
    from gapt_bench import tracking

    if not targets or not records:
        return
    try:
        for line in tracking.export(out, records, targets):
            print(line)
    except Exception as e:  # noqa: BLE001 (a logger's own error must not hide that the runs finished)
        print(f"gapt-bench: curves not exported ({type(e).__name__}: {e}); the runs are saved, export them with "
              f"`gapt-bench export {out} --{targets[0].kind} {targets[0].where}`", file=sys.stderr)


def cmd_export(args) -> int:
    from gapt_bench import tracking

    given = [(kind, getattr(args, kind)) for kind in tracking.BACKENDS if getattr(args, kind)]
    if not given:
        raise UsageError("name where the curves go: --tensorboard DIR, --wandb PROJECT or --trackio PROJECT")
    try:
        targets = [tracking.parse_target(f"{kind}:{where}") for kind, where in given]
    except tracking.TrackingError as e:
        raise UsageError(str(e)) from None
    records = _load(args.results)
    if args.tensorboard:
        check_writable(Path(args.tensorboard), flag="--tensorboard")
    try:
        lines = tracking.export(args.results, records, targets)
    except tracking.ExportError as e:
        print(f"gapt-bench: error: {e}", file=sys.stderr)
        return 1
    for line in lines:
        print(line)
    return 0


def cmd_doctor(args) -> int:
    """The environment; with --gpu the GPU check (on a machine without CUDA: what it would run, then exit 1)."""
    from gapt_bench import doctor

    if args.budget < 60:
        raise UsageError(f"--budget must be at least 60 seconds, got {args.budget}")
    env = doctor.environment()
    print(f"gapt_bench {env['gapt_bench']} ({env['git_sha']}), torch {env['torch']}, CUDA {env['cuda']}, "
          f"machine class {env['machine_class']}")
    if not args.gpu:
        return 0
    print("\n".join(doctor.plan(args.budget)), flush=True)
    try:
        result = doctor.run_check(Path(args.out), args.budget)
    except doctor.NoCuda as e:
        print(f"gapt-bench: error: {e}", file=sys.stderr)
        return 1
    print(doctor.markdown(result))
    print(f"wrote {Path(args.out) / 'gpu_check.json'} and {Path(args.out) / 'gpu_check.md'}")
    failed = result["tests"].get("failed") or result["tests"].get("errors") or any(
        result[p].get("error") for p in ("tests", "throughput", "capacity"))
    return 1 if failed else 0


COMMANDS = {"doctor": cmd_doctor, "run": cmd_run, "status": cmd_status, "validate": cmd_validate, "ls": cmd_ls, "report": cmd_report, "paper": cmd_paper,
            "leaderboard": cmd_leaderboard, "compare": cmd_compare, "gate": cmd_gate, "plot": cmd_plot,
            "site": cmd_site, "export": cmd_export}


USER_ERRORS = (UsageError, ConfigError, RegistryError, StoreError, ReportError, DataError)  # exit 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
        verb = args.verb or "run"
        if args.verb is None:
            args = parser.parse_args(["run", *(argv if argv is not None else sys.argv[1:])])
        if hasattr(args, "include"):
            load_plugins(args.include, strict=verb != "ls")
        return COMMANDS[verb](args)
    except DiskFullError as e:  # not bad input: the run failed, and nothing partial was left behind
        print(f"gapt-bench: error: {e}", file=sys.stderr)
        return 1
    except USER_ERRORS as e:
        print(f"gapt-bench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gapt-bench: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `gapt-bench validate | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
