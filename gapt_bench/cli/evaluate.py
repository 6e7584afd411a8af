"""`gapt-bench eval`: measure a saved model and print what it measured (the record goes to OUT/runs.jsonl)."""

from __future__ import annotations

import sys
from pathlib import Path

from gapt_bench.cli.common import UsageError
from gapt_bench.cli.progress import interactive


def _config(args):
    from gapt_bench.evaluation.evaluate import MEASURES, EvalConfig
    from gapt_bench.evaluation.load import ModelError, parse_model_args

    measures = tuple(m.strip() for m in args.measure.split(",") if m.strip())
    unknown = [m for m in measures if m not in MEASURES]
    if not measures or unknown:
        raise UsageError(f"--measure {args.measure!r}: unknown {unknown or 'empty'}; choose from {', '.join(MEASURES)}")
    for flag, value, low in (
        ("--seq-len", args.seq_len, 2),
        ("--batch-size", args.batch_size, 1),
        ("--max-tokens", args.max_tokens, 1),
        ("--mbe-windows", args.mbe_windows, 1),
        ("--patch-size", args.patch_size, 2),
        ("--member-tokens", args.member_tokens, 2),
    ):
        if value < low:
            raise UsageError(f"{flag} must be >= {low}, got {value}")
    if not 0 < args.min_k <= 1:
        raise UsageError(f"--min-k must lie in (0, 1], got {args.min_k}")
    if not 0 < args.val_fraction < 1:
        raise UsageError(f"--val-fraction must lie in (0, 1), got {args.val_fraction}")
    if not 0 < args.calib_fraction < 1:
        raise UsageError(f"--calib-fraction must lie in (0, 1), got {args.calib_fraction}")
    try:
        prefixes = tuple(int(p) for p in args.prefix_lengths.split(",") if p.strip())
    except ValueError:
        raise UsageError(f"--prefix-lengths {args.prefix_lengths!r} is not a comma list of integers") from None
    reference = None
    if args.reference_args:
        try:
            parsed = vars(parse_model_args(args.reference_args, "--reference-args"))
            given = {part.split("=", 1)[0].strip() for part in args.reference_args.split(",")}
            reference = {k: v for k, v in parsed.items() if k in given}  # device, dtype: the model's unless given
        except ModelError as e:
            raise UsageError(str(e)) from None
    return EvalConfig(
        measures=measures,
        data=args.data,
        data_name=args.data_name,
        split=args.split,
        val_fraction=args.val_fraction,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        max_tokens=args.max_tokens,
        windowing=args.windowing,
        alpha=args.alpha,
        patch_size=args.patch_size,
        mbe_windows=args.mbe_windows,
        members=args.members,
        nonmembers=args.nonmembers,
        member_tokens=args.member_tokens,
        prefix_lengths=prefixes,
        min_k=args.min_k,
        calib_fraction=args.calib_fraction,
        reference=reference,
    )


def _progress(quiet: bool):
    if quiet:
        return None
    live = interactive()
    shown = {"stage": None}

    def show(stage: str, done: int, total: int) -> None:
        if live:
            print(f"\r{stage}: {done}/{total} batches", end="" if done < total else "\n", file=sys.stderr, flush=True)
        elif shown["stage"] != stage:
            shown["stage"] = stage
            print(f"{stage}: {total} batches", file=sys.stderr, flush=True)

    return show


def cmd_eval(args) -> int:
    from gapt_bench.data import DataError
    from gapt_bench.evaluation.evaluate import run_evaluation
    from gapt_bench.evaluation.load import ModelError, parse_model_args
    from gapt_bench.evaluation.memorization import OverlapError
    from gapt_bench.launch.environment import capture
    from gapt_bench.results.analysis import render
    from gapt_bench.results.analysis.evaluations import evaluation_result
    from gapt_bench.results.store import check_writable

    cfg = _config(args)
    try:
        model_args = parse_model_args(args.model_args)
    except ModelError as e:
        raise UsageError(str(e)) from None
    out = Path(args.out)
    check_writable(out)
    try:
        record, note = run_evaluation(
            model_args,
            cfg,
            out,
            resume=args.resume,
            log_samples=args.log_samples,
            progress=_progress(args.quiet),
            env=capture(model_args.device),
        )
    except (ModelError, OverlapError, DataError) as e:
        raise UsageError(str(e)) from None
    except ValueError as e:  # bad settings found while reading the corpus or the sets: nothing was written
        raise UsageError(str(e)) from None
    if record is None:
        print(note)
        return 0
    text = render(evaluation_result([record]), args.format)
    if text is not None:
        print(text)
    if args.format == "rich":
        print(note)
    return 0
