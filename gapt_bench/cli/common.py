"""What the CLI verbs share: usage errors, loading records, printing an analysis result."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from gapt_bench.config import ConfigError
from gapt_bench.config.registry import RegistryError
from gapt_bench.data import DataError
from gapt_bench.data.files import StoreError
from gapt_bench.results import analysis
from gapt_bench.results.analysis import ReportError
from gapt_bench.results.store import read_records, split_kinds


class UsageError(Exception):
    """Bad command-line input; printed as one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of argparse's usage block
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def load_records(path: str, evaluations: list[dict] | None = None) -> list[dict]:
    """The training runs at `path`; none at all is an error (nothing to report on is not a result). Evaluations of
    saved models (`gapt-bench eval`) never enter the analyses of runs: they are appended to `evaluations` when a
    list is given (a verb that shows them), else left out."""
    records = read_records(path)
    runs, evals = split_kinds(records)
    if evaluations is not None:
        evaluations.extend(evals)
    if not records:
        raise StoreError(f"no run records in {path}; point at a results folder that `gapt-bench run --out` filled")
    if not runs and evaluations is None:
        raise StoreError(
            f"{path} holds only evaluations of saved models, no training runs: `gapt-bench report {path}` shows them"
        )
    return runs


def resolve_reference(records: list[dict], reference: str | None) -> tuple[str, list[str]]:
    """The reference the tables compare against, and the notes to print with them. Not given (None): "baseline" when
    it has runs, else the first method present, with a note that says so (something can still be shown). Given
    (`--reference NAME`) but without runs: bad input, exit 2, naming the methods present."""
    if reference is not None:
        methods = sorted({r["method"] for r in records})
        if reference not in methods:
            raise UsageError(
                f"--reference {reference!r} has no runs in these results; methods present: {', '.join(methods)}"
            )
        return reference, []
    ref, note = analysis.pick_reference(records, "baseline")
    return ref, [note] if note else []


def check_regression_args(args) -> None:
    if args.tolerance < 0:
        raise UsageError(f"--tolerance must be >= 0 (a fraction, 0.05 = 5%), got {args.tolerance}")
    if not 0 < args.alpha < 1:
        raise UsageError(f"--alpha must be between 0 and 1 (e.g. 0.05), got {args.alpha}")
    if getattr(args, "min_n", 2) < 2:
        raise UsageError(f"--min-n must be >= 2 (a test needs two seeds), got {args.min_n}")


def load_all(paths: Sequence[str]) -> list[dict]:
    """The records of several results locations, each run once: a run_id seen earlier (the same folder passed
    twice, a file and its folder) is dropped, so it cannot count as another seed. One stderr line says how many."""
    seen: set[str] = set()
    records = []
    dropped = 0
    for path in paths:
        for r in load_records(path):
            if r["run_id"] in seen:
                dropped += 1
                continue
            seen.add(r["run_id"])
            records.append(r)
    if dropped:
        print(
            f"gapt-bench: {dropped} duplicate record(s) dropped (a run_id in more than one of the results "
            "given); each run counts once",
            file=sys.stderr,
        )
    return records


def print_result(result: dict, fmt: str, include_layers: bool = False) -> None:
    """Any analysis result in the chosen format (rich prints itself)."""
    text = analysis.render(result, fmt, include_layers=include_layers)
    if text is not None:
        print(text)


def write_markdown(path: str | None, result: dict, include_layers: bool = False) -> None:
    """`--markdown FILE`: the result's tables as Markdown (what `--format md` prints), written to FILE; its folder
    is created. A path that cannot be written is bad input (StoreError, exit 2)."""
    if not path:
        return
    text = analysis.render(result, "md", include_layers=include_layers)
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(f"{text}\n")
    except OSError as e:
        raise StoreError(f"cannot write --markdown {path} ({e.strerror or e}); pick another path") from e


USER_ERRORS = (UsageError, ConfigError, RegistryError, StoreError, ReportError, DataError)  # exit 2


def plan_from(args) -> list:
    """The validated plan of a command's --tasks/--methods/--seeds/--preset/--set (imports the tasks: torch)."""
    from gapt_bench.launch.plan import make_plan, parse_names, parse_seeds
    from gapt_bench.tasks import TASKS

    tasks = TASKS.names() if args.tasks == "all" else parse_names(args.tasks, "task")
    methods = None if args.methods is None else parse_names(args.methods, "method")
    seeds = None if args.seeds is None else parse_seeds(args.seeds)
    return make_plan(tasks, methods, seeds, args.preset, args.overrides)
