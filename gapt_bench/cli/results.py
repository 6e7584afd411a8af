"""The reading verbs: `report`, `paper`, `leaderboard`, `compare`, `regression`, `plot`, `site`, `export`."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from gapt_bench.cli.common import (
    USER_ERRORS,
    UsageError,
    check_regression_args,
    load_all,
    load_records,
    print_result,
    resolve_reference,
    write_markdown,
)
from gapt_bench.data.files import StoreError
from gapt_bench.results import analysis
from gapt_bench.results.analysis.task_analyses import report_with_analyses
from gapt_bench.results.store import check_writable


def cmd_report(args) -> int:
    evaluations: list[dict] = []
    records = load_records(args.results, evaluations)
    if args.plots:  # refused before the report is printed, not after
        check_writable(Path(args.plots), flag="--plots")
    if evaluations:
        from gapt_bench.results.analysis.evaluations import evaluation_result

        shown = evaluation_result(evaluations)
        if not records:  # evaluations only
            write_markdown(args.markdown, shown, args.include_layers)
            print_result(shown, args.format, args.include_layers)
            return 0
    reference, notes = resolve_reference(records, args.reference)
    if args.summary:
        result = analysis.summary(records, reference, results=args.results)
        result["notes"] = notes + list(result.get("notes") or [])
    else:
        result = report_with_analyses(records, reference)[0]
        result["notes"] = notes + list(result.get("notes") or [])
    write_markdown(args.markdown, result, args.include_layers)
    if args.runs:
        print_result(analysis.runs_table(records, reference, args.include_layers), args.format, args.include_layers)
    print_result(result, args.format, args.include_layers)
    if evaluations:
        print_result(shown, args.format, args.include_layers)
    if args.plots:
        _write_plots(args.results, Path(args.plots), "--plots")
    return 0


def cmd_paper(args) -> int:
    records = load_records(args.results)
    reference, notes = resolve_reference(records, None)
    paper = analysis.paper_table(report_with_analyses(records, reference)[0])
    paper["notes"] = notes + list(paper.get("notes") or [])
    print_result(paper, args.format)
    return 0


def cmd_leaderboard(args) -> int:
    records = load_all(args.results)
    reference, notes = resolve_reference(records, None)
    board = analysis.leaderboard(records, reference=reference)
    board["notes"] = notes + list(board.get("notes") or [])
    print_result(board, args.format, args.include_layers)
    return 0


def cmd_compare(args) -> int:
    """Two-sided: how B differs from A (better/worse for B); exit 0 whatever it finds."""
    check_regression_args(args)
    print_result(
        analysis.compare(load_records(args.a), load_records(args.b), alpha=args.alpha, tolerance=args.tolerance),
        args.format,
    )
    return 0


def cmd_regression(args) -> int:
    """Exit 1 on a significant regression of the candidate against the baseline (0 pass, 3 inconclusive under
    --strict)."""
    from gapt_bench.results.analysis.evaluations import evaluation_changes

    check_regression_args(args)
    base_evals: list[dict] = []
    cand_evals: list[dict] = []
    baseline, candidate = load_records(args.baseline, base_evals), load_records(args.candidate, cand_evals)
    changes = evaluation_changes(base_evals, cand_evals)
    if not baseline or not candidate:  # evaluations only: shown, nothing to test
        if not changes["rows"]:
            raise StoreError(
                "no training runs to check and no model evaluated in both sets with the same settings; "
                "point --baseline and --candidate at results of the same plan"
            )
        write_markdown(args.markdown, changes)
        print_result(changes, args.format)
        return 0
    res = analysis.regression(
        baseline, candidate, tolerance=args.tolerance, alpha=args.alpha, min_n=args.min_n, strict=args.strict
    )
    write_markdown(args.markdown, res)
    print_result(res, args.format)
    if changes["rows"]:
        print_result(changes, args.format)
    return res["exit_code"]


def cmd_plot(args) -> int:
    load_records(args.results)
    _write_plots(args.results, Path(args.out) if args.out else Path(args.results) / "plots", "--out")
    return 0


def _write_plots(results: str, out: Path, flag: str) -> None:
    from gapt_bench.results import plots  # matplotlib: only when plotting

    check_writable(out, flag=flag)
    try:
        paths = plots.plot_all(Path(results), out)
    except OSError as e:
        raise StoreError(f"cannot write plots to {out} ({e.strerror or e}); pick another {flag}") from e
    for path in paths:
        print(f"wrote {path}")


def cmd_site(args) -> int:
    """The static site of a results folder (gapt_bench/results/site/)."""
    from gapt_bench.results.site import build_site

    evaluations: list[dict] = []
    records = load_records(args.results, evaluations)
    if not records:
        raise StoreError(
            f"{args.results} holds only evaluations of saved models; the site needs training runs beside them "
            f"(`gapt-bench report {args.results}` shows the evaluations)"
        )
    reference, notes = resolve_reference(records, args.reference)
    for note in notes:
        print(f"gapt-bench: note: {note}", file=sys.stderr)
    out = Path(args.out)
    check_writable(out, flag="-o")
    command = ["gapt-bench", "site", args.results, "-o", args.out]
    command += ["--reference", args.reference] if args.reference else []
    command += [x for path in args.include for x in ("--include", path)] + (["--no-figures"] if args.no_figures else [])
    try:
        site = build_site(
            args.results,
            out,
            records=records,
            reference=reference,
            command=shlex.join(command),
            figures=not args.no_figures,
            evaluations=evaluations,
        )
    except USER_ERRORS:
        raise
    except Exception as e:
        why = (str(e).strip().splitlines() or [""])[0][:200]
        print(
            f"gapt-bench: error: site not built ({type(e).__name__}: {why}); {out} still holds its previous pages",
            file=sys.stderr,
        )
        return 1
    print(
        f"wrote {len(site.pages)} pages ({site.n_runs} runs, {site.n_figures} figures) to {out}; "
        f"open {out / 'index.html'}"
    )
    return 0


def cmd_export(args) -> int:
    from gapt_bench.results import tracking

    given = [(kind, getattr(args, kind)) for kind in tracking.BACKENDS if getattr(args, kind)]
    if not given:
        raise UsageError("name where the curves go: --tensorboard DIR, --wandb PROJECT or --trackio PROJECT")
    try:
        targets = [tracking.parse_target(f"{kind}:{where}") for kind, where in given]
    except tracking.TrackingError as e:
        raise UsageError(str(e)) from None
    records = load_records(args.results)
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
