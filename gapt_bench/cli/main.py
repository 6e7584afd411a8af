"""Command line: argument parsing, printing and exit codes only (no science here).

Exit codes: 0 ok; 1 the regression check found a regression, runs failed, `status` found runs not done, `doctor --gpu` found no
CUDA or a failing part, or work failed after it began (a sweep half submitted, an export or a site build that
failed midway); 2 bad input (one line on stderr naming the problem and the fix; nothing written); 3 inconclusive
regression check under --strict; 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Sequence

from gapt_bench.cli.common import USER_ERRORS, _Parser
from gapt_bench.data.files import DiskFullError

DEFAULT_TASKS = "all"


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="gapt-bench", description=__doc__.splitlines()[0])
    p.add_argument(
        "--debug",
        action="store_true",
        help="Python tracebacks and full warnings (anywhere on the command line; default: one line each)",
    )
    sub = p.add_subparsers(dest="verb", parser_class=_Parser)

    def plan_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--tasks", default=DEFAULT_TASKS, help="comma list of tasks, or 'all' (default)")
        sp.add_argument(
            "--methods", default=None, help="comma list (default: the preset's `methods:`, else baseline,gapt)"
        )
        sp.add_argument(
            "--seeds",
            default=None,
            help="seeds as a range or list: 0-2, 0,3,5 (default: the preset's `seeds:`, else 0-2)",
        )
        sp.add_argument("--preset", default="quick", help="preset name from tasks/<task>/presets.yaml (default quick)")
        sp.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="SECTION.KEY=VALUE",
            help="override a config value, type-checked (repeatable)",
        )
        include_arg(sp)

    def include_arg(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--include",
            action="append",
            default=[],
            metavar="PATH",
            help="load tasks/methods from a .py file or a folder of them (repeatable)",
        )

    def markdown_arg(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--markdown",
            metavar="FILE",
            default=None,
            help="also write the table(s) as Markdown to FILE (what --format md prints; e.g. for $GITHUB_STEP_SUMMARY)",
        )

    r = sub.add_parser("run", help="train and evaluate a plan of runs; append records to OUT/runs.jsonl")
    plan_args(r)
    r.add_argument("--out", default="results", help="results folder (default results/)")
    r.add_argument(
        "--workers", type=int, default=None, help="parallel runs, one CPU thread each (default: cores on CPU, 1 on GPU)"
    )
    r.add_argument("--checkpoint-every", type=int, default=0, metavar="STEPS", help="checkpoint interval (0 = off)")
    r.add_argument("--resume", action="store_true", help="continue interrupted runs, skip finished ones")
    r.add_argument(
        "--save-model",
        action="store_true",
        help="save each trained model in its run folder (runs/<id>/model/: a transformers folder with its tokenizer, "
        "for `gapt-bench eval`; = --set train.save_model=true)",
    )
    r.add_argument(
        "--no-batch",
        action="store_true",
        help="train every run alone (default: the seeds of a task that supports it, today the forgetting MLP, train "
        "as one batched model on CPU; = --set train.batched=false)",
    )
    r.add_argument(
        "--no-progress", action="store_true", help="no live display or periodic lines: one line per finished run"
    )
    r.add_argument("--quiet", action="store_true", help="no progress at all; only the summary (and errors)")
    r.add_argument("--no-report", action="store_true", help="do not print the summary at the end")
    r.add_argument(
        "--full", action="store_true", help="end with every table (per-run tables and the full report), not the summary"
    )
    r.add_argument(
        "--track",
        action="append",
        default=[],
        type=_track_target,
        metavar="KIND:WHERE",
        help="also send each run's curve to tensorboard:DIR, wandb:PROJECT or trackio:PROJECT (repeatable; "
        "optional packages; on Slurm with --wait)",
    )
    lg = r.add_argument_group("cluster launchers (submitit: one job per run; see gapt_bench/launch/cluster.py)")
    lg.add_argument(
        "--launcher",
        choices=("local", "submitit", "submitit-local"),
        default=None,
        help="local (default: this process and its workers); submitit (Slurm job arrays where srun "
        "exists, else local jobs); submitit-local (submitit's local executor: one process per run)",
    )
    lg.add_argument(
        "--launcher-config",
        metavar="FILE.yaml",
        default=None,
        help="launcher options from a YAML file (keys as the flags below, e.g. partition: gpu; "
        "slurm: {constraint: a100}); flags given here override it",
    )
    lg.add_argument("--partition", default=None, help="Slurm partition")
    lg.add_argument("--account", default=None, help="Slurm account")
    lg.add_argument("--qos", default=None, help="Slurm quality of service")
    lg.add_argument(
        "--timeout-min",
        type=int,
        default=None,
        metavar="MIN",
        help="time limit of one job (default 240 on Slurm); longer runs are requeued from a checkpoint",
    )
    lg.add_argument("--nodes", type=int, default=None, help="nodes per job (one run across nodes: DDP)")
    lg.add_argument("--gpus-per-node", type=int, default=None, metavar="N", help="GPUs per node for each job")
    lg.add_argument(
        "--tasks-per-node",
        type=int,
        default=None,
        metavar="N",
        help="processes (DDP ranks) per node (default: one per GPU, else 1)",
    )
    lg.add_argument(
        "--cpus-per-task",
        type=int,
        default=None,
        metavar="N",
        help="CPUs per process, also its torch threads (default 1)",
    )
    lg.add_argument("--mem-gb", type=float, default=None, metavar="GB", help="memory per node")
    lg.add_argument(
        "--array-parallelism",
        type=int,
        default=None,
        metavar="N",
        help="at most N jobs at once (Slurm array %%N; local: default the cores)",
    )
    lg.add_argument(
        "--max-timeouts",
        type=int,
        default=None,
        metavar="N",
        help="requeues after hitting the time limit (default 3; preemptions do not count)",
    )
    lg.add_argument(
        "--signal-delay-s",
        type=int,
        default=None,
        metavar="S",
        help="Slurm sends the stop signal (USR2) S seconds before the time limit (default 90; Slurm may send it up "
        "to 60 s earlier): keep it under --timeout-min",
    )
    lg.add_argument(
        "--slurm-opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other sbatch option, passed through (repeatable), e.g. constraint=a100",
    )
    lg.add_argument(
        "--setup",
        action="append",
        default=[],
        metavar="CMD",
        help="shell line run before each job (repeatable), e.g. 'source .venv/bin/activate'",
    )
    lg.add_argument(
        "--wait",
        action="store_true",
        default=None,
        help="Slurm: stay until every job has ended and print the results (local jobs always do)",
    )
    lg.add_argument(
        "--dry-run",
        action="store_true",
        help="print the jobs and the sbatch file that would be submitted; submit nothing",
    )

    st = sub.add_parser("status", help="which runs of a plan are done, running, failed, diverged or missing")
    st.add_argument("results", nargs="?", default="results")
    plan_args(st)
    st.add_argument(
        "--compact",
        action="store_true",
        help="first rewrite RESULTS/runs.jsonl from every record (drops damaged lines; keeps a .bak)",
    )

    v = sub.add_parser("validate", help="resolve and print the run plan without training")
    plan_args(v)
    v.add_argument("--show-config", action="store_true", help="print each resolved config as JSON")

    ls = sub.add_parser("ls", help="list tasks, methods and presets, and where each comes from")
    ls.add_argument("what", nargs="?", default="all", choices=("all", "tasks", "methods", "presets"))
    include_arg(ls)

    rep = sub.add_parser("report", help="statistics over seeds, one table per task")
    rep.add_argument("results", nargs="?", default="results")
    rep.add_argument("--format", default="rich", choices=("rich", "md", "json"))
    rep.add_argument(
        "--reference",
        default=None,
        help="the method others are compared with (default: baseline, or the first method present, with a note)",
    )
    rep.add_argument("--plots", metavar="DIR", default=None, help="also write PNG plots to DIR")
    rep.add_argument("--include-layers", action="store_true", help="also show per-layer metrics (rich/md)")
    markdown_arg(rep)
    rep.add_argument(
        "--summary", action="store_true", help="the one-screen summary that `run` ends with, instead of every table"
    )
    rep.add_argument(
        "--runs", action="store_true", help="also one table per task with a row per run (the setup fields that vary)"
    )

    ev = sub.add_parser(
        "eval", help="measure a saved model (any transformers causal LM): CE, bits/byte, MBE, memorization"
    )
    ev.add_argument("--model", default="hf", choices=("hf",), help="model type (hf: transformers, as lm-eval's)")
    ev.add_argument(
        "--model-args",
        required=True,
        metavar="pretrained=DIR_OR_NAME[,dtype=..,device=..,revision=..,tokenizer=..,label=..]",
        help="the model: a save_pretrained folder or a hub id; dtype auto (as saved)|float32|bfloat16|float16; "
        "trust_remote_code=true runs the model's own code (off by default)",
    )
    ev.add_argument(
        "--measure", default="ce,bpb,mbe", help="comma list of ce, bpb, mbe, memorization (default ce,bpb,mbe)"
    )
    ev.add_argument(
        "--data",
        default="offline",
        help="corpus as run's data.source: offline (bundled), a local "
        "parquet/jsonl file or folder with a text column, or a datasets hub id (default offline)",
    )
    ev.add_argument("--data-name", default=None, help="the hub dataset's config name (e.g. sample-10BT)")
    ev.add_argument(
        "--split",
        default="val",
        choices=("val", "train", "all"),
        help="the suite's document split (val: what suite runs never train on; default val)",
    )
    ev.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="share of documents that are validation candidates in the split (a run's data.val_fraction; default 0.1)",
    )
    ev.add_argument("--seq-len", type=int, default=256, help="tokens per window (default 256)")
    ev.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (default 8)")
    ev.add_argument("--max-tokens", type=int, default=65_536, help="corpus tokens to evaluate (default 65536)")
    ev.add_argument(
        "--windowing",
        default="chunks",
        choices=("chunks", "rolling", "both"),
        help="chunks: a run's validation (token stream, fixed windows); rolling: lm-eval's per-document "
        "rolling log-likelihood; both (default chunks; docs/evaluate.md)",
    )
    ev.add_argument("--alpha", type=float, default=2.0, help="MBE's Renyi order (default 2)")
    ev.add_argument("--patch-size", type=int, default=8, help="MBE's tokens per patch (default 8)")
    ev.add_argument("--mbe-windows", type=int, default=64, help="windows MBE is measured on (default 64)")
    mg = ev.add_argument_group("memorization (--measure memorization)")
    mg.add_argument(
        "--members", metavar="FILE", help="texts the model was trained on (.txt one per line, .jsonl, .parquet)"
    )
    mg.add_argument("--non-members", dest="nonmembers", metavar="FILE", help="texts it never saw (same formats)")
    mg.add_argument(
        "--reference-args",
        metavar="pretrained=...",
        default=None,
        help="a reference model (same tokenizer) for unintended memorization and the reference score",
    )
    mg.add_argument("--member-tokens", type=int, default=64, help="tokens per member/non-member sequence (default 64)")
    mg.add_argument("--prefix-lengths", default="8,16,32", help="k-extractability prefixes (default 8,16,32)")
    mg.add_argument("--min-k", type=float, default=0.2, help="Min-K%% and Min-K%%++ fraction (default 0.2)")
    mg.add_argument(
        "--calib-fraction",
        type=float,
        default=0.5,
        help="share of each set that calibrates the F1 threshold (default 0.5)",
    )
    ev.add_argument("--out", default="results", help="results folder (default results/)")
    ev.add_argument("--resume", action="store_true", help="skip an evaluation already in --out with these settings")
    ev.add_argument(
        "--log-samples",
        action="store_true",
        help="also write per-example numbers to runs/<id>/samples.jsonl (recompute AUCs, ROCs from them)",
    )
    ev.add_argument("--format", default="rich", choices=("rich", "md", "json"))
    ev.add_argument("--quiet", action="store_true", help="no progress bar")

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
    cp.add_argument(
        "--tolerance",
        type=float,
        default=0.05,
        help="mark changes past this fraction that are not significant with ~ (default 0.05)",
    )
    cp.add_argument("--alpha", type=float, default=0.05)
    cp.add_argument("--format", default="rich", choices=("rich", "md", "json"))

    g = sub.add_parser("regression", help="regression check: exit 1 on a significant regression past the tolerance")
    g.add_argument("--baseline", required=True, help="reference results (e.g. baselines/cpu-quick.jsonl)")
    g.add_argument("--candidate", required=True, help="candidate results folder or runs.jsonl")
    g.add_argument("--tolerance", type=float, default=0.05, help="relative tolerance (default 0.05)")
    g.add_argument("--alpha", type=float, default=0.05)
    g.add_argument("--min-n", type=int, default=3)
    g.add_argument("--strict", action="store_true", help="inconclusive verdicts exit 3")
    g.add_argument("--format", default="rich", choices=("rich", "md", "json"))
    markdown_arg(g)

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
    si.add_argument(
        "--reference",
        default=None,
        help="the method others are compared with (default: baseline, or the first present)",
    )
    si.add_argument("--no-figures", action="store_true", help="skip the matplotlib figures (faster; run curves stay)")
    include_arg(si)

    ex = sub.add_parser("export", help="training curves to TensorBoard event files, W&B or trackio (optional packages)")
    ex.add_argument("results", nargs="?", default="results")
    ex.add_argument("--tensorboard", metavar="DIR", help="one event folder per run: DIR/<run_id>/")
    ex.add_argument("--wandb", metavar="PROJECT", help="one W&B run per run, in PROJECT")
    ex.add_argument("--trackio", metavar="PROJECT", help="one trackio run per run, in PROJECT")
    return p


# ----------------------------------------------------------------------------------------------------------------


# verb -> "module:function" of gapt_bench.cli, imported when the verb runs: a reading verb never pays for torch.
COMMANDS = {
    "run": "run:cmd_run",
    "eval": "evaluate:cmd_eval",
    "status": "plans:cmd_status",
    "validate": "plans:cmd_validate",
    "ls": "plans:cmd_ls",
    "report": "results:cmd_report",
    "paper": "results:cmd_paper",
    "leaderboard": "results:cmd_leaderboard",
    "compare": "results:cmd_compare",
    "regression": "results:cmd_regression",
    "plot": "results:cmd_plot",
    "site": "results:cmd_site",
    "export": "results:cmd_export",
    "doctor": "doctor:cmd_doctor",
}


def command(verb: str):
    module, function = COMMANDS[verb].split(":")
    return getattr(importlib.import_module(f"gapt_bench.cli.{module}"), function)


def _track_target(text: str):
    """argparse type of run's --track (checked before any training)."""
    from gapt_bench.cli.run import _track_target as parse

    return parse(text)


# Renamed verbs: the old name keeps working for one release, with a one-line note on stderr.
DEPRECATED_VERBS = {"gate": "regression"}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(argv) if argv is not None else sys.argv[1:]
    debug = "--debug" in argv  # global: accepted before or after the verb
    argv = [a for a in argv if a != "--debug"]
    previous_format = warnings.formatwarning
    if not debug:  # the format only: whoever records warnings (a test, a caller) still receives them
        warnings.formatwarning = _one_line_warning
    try:
        return _main(parser, argv, debug)
    finally:
        warnings.formatwarning = previous_format


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """A warning as the user sees it: one line, its message only (no Python source path or line)."""
    text = (str(message).strip().splitlines() or [category.__name__])[0]
    return f"gapt-bench: warning: {text}\n"


def _main(parser: argparse.ArgumentParser, argv: list[str], debug: bool) -> int:
    if argv and argv[0] in DEPRECATED_VERBS:
        new = DEPRECATED_VERBS[argv[0]]
        print(
            f"gapt-bench: note: `{argv[0]}` is now `{new}`; the old name goes away in the next release", file=sys.stderr
        )
        argv = [new, *argv[1:]]
    try:
        args = parser.parse_args(argv)
        verb = args.verb or "run"
        if args.verb is None:
            args = parser.parse_args(["run", *argv])
        if hasattr(args, "include"):
            from gapt_bench.launch.plugins import load_plugins

            load_plugins(args.include, strict=verb != "ls")
        return command(verb)(args)
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
    except Exception as e:  # a bug or an environment problem: one line, the traceback under --debug
        if debug:
            raise
        why = (str(e).strip().splitlines() or [""])[0][:300]
        print(f"gapt-bench: error: {type(e).__name__}: {why} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1
