"""The one-screen summary of a results folder (what `gapt-bench run` prints at the end; `report --summary`).

Per task, each method's primary metrics against the reference (relative change, its 95% CI, the verdict in words;
a task with many setups, e.g. the text-memorization sweep, is one line per method and metric with the verdicts
counted); the papers' claims the records touch, one line each; the leaderboard's top rows; and where the rest is.
The numbers are the report's, the paper table's and the leaderboard's: this module only selects and condenses.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from gapt_bench.results.analysis.claims import paper_table
from gapt_bench.results.analysis.common import ReportError, clean, unique
from gapt_bench.results.analysis.groups import controls_by_method, method_order
from gapt_bench.results.analysis.leaderboard import leaderboard

MAX_SETUPS = 2  # a task with more setups than this is condensed to one line per (method, metric)


def pick_reference(records: Sequence[dict], reference: str = "baseline") -> tuple[str, str | None]:
    """The reference to compare against: `reference` when it has runs, else the first method present (the order
    of every table), with a note that says so; (reference, None) when nothing needs saying."""
    methods = {str(r.get("method")) for r in records}
    if reference in methods or not methods:
        return reference, None
    first = method_order(methods, reference, controls_by_method(records))[0]
    return first, (
        f"no {reference!r} runs in these results: tables against {first!r}, the first method present "
        f"(methods: {', '.join(sorted(methods))})"
    )


def _short_setup(label: str) -> str:
    """'batch_layout=grouped' reads 'grouped'; a label of several keys stays as it is."""
    if label and "," not in label and label.count("=") == 1:
        return label.split("=", 1)[1]
    return label


def _task_rows(rep: dict, task: str, primary: list[str], reference: str) -> list[dict]:
    comps = [
        c
        for c in rep["comparisons"]
        if c["task"] == task and c["metric"] in primary and c.get("reference") == reference
    ]
    by: dict[tuple, list[dict]] = {}
    for c in comps:
        by.setdefault((c["label"], c["metric"]), []).append(c)
    rows = []
    for (label, metric), cs in sorted(by.items(), key=lambda kv: (primary.index(kv[0][1]), kv[0][0])):
        if len(cs) <= MAX_SETUPS:
            rows += [
                {
                    "metric": metric,
                    "direction": c["direction"],
                    "setup": _short_setup(c.get("setup") or ""),
                    "method": label,
                    "n": c.get("n"),
                    "rel": c.get("rel_delta"),
                    "rel_ci": [c.get("rel_ci_low"), c.get("rel_ci_high")],
                    "verdict": c["verdict"],
                    "n_setups": 1,
                }
                for c in cs
            ]
            continue
        rels = [c["rel_delta"] for c in cs if c.get("rel_delta") is not None]
        counts = Counter(c["verdict"] for c in cs)
        rows.append(
            {
                "metric": metric,
                "direction": cs[0]["direction"],
                "setup": f"{len(cs)} setups",
                "method": label,
                "n": min((c.get("n") or 0) for c in cs),
                "rel_range": [min(rels), max(rels)] if rels else None,
                "verdict": next(iter(counts)) if len(counts) == 1 else None,
                "verdict_counts": dict(counts.most_common()),
                "n_setups": len(cs),
            }
        )
    return rows


def summary(records: Sequence[dict], reference: str = "baseline", *, results: str | None = None, top: int = 3) -> dict:
    """The summary result (kind "summary"); `results` is the folder the "where the rest is" lines name."""
    if not records:
        raise ReportError("no run records to summarise; run `gapt-bench run` first or point at a results folder")
    reference, note = pick_reference(records, reference)
    notes = [note] if note else []
    from gapt_bench.results.analysis.task_analyses import report_with_analyses  # the tasks (torch): when used

    rep, _ = report_with_analyses(records, reference)
    tasks = []
    for task in sorted({r["task"] for r in records}):
        recs = [r for r in records if r["task"] == task]
        primary = unique(m for r in recs for m in (r.get("primary_metrics") or []))
        methods = method_order({r["method"] for r in recs}, reference, controls_by_method(recs))
        status = Counter(str(r.get("status")) for r in recs)
        rows = _task_rows(rep, task, primary, reference)
        if not primary:
            why = "not ranked (a property)"
        elif reference not in methods:
            why = f"no {reference} runs"
        elif len(methods) == 1:
            why = f"only {reference} here"
        elif not rows:
            why = "nothing to compare"
        else:
            why = ""
        tasks.append(
            {
                "task": task,
                "primary_metrics": primary,
                "methods": methods,
                "n_runs": len(recs),
                "status": dict(status),
                "rows": rows,
                "why_empty": why,
            }
        )
    claims = []
    try:
        paper = paper_table(rep)
    except ReportError:
        paper = {"rows": []}
    for r in paper["rows"]:
        if r["role"] != "claim" or r["verdict"] == "no runs":
            continue
        claims.append(
            {
                "claim": r.get("claim_short") or r["claim"],
                "setup": _short_setup(r.get("setup") or ""),
                "kind": r["kind"],
                "claimed": r["claimed"],
                "measured": r["measured"],
                "ci": [r["ci_low"], r["ci_high"]],
                "n": r["n"],
                "verdict": r["verdict"],
            }
        )
    board_rows, n_ranked = [], 0
    try:
        board = leaderboard(records, reference=reference)
        n_ranked = len(board["rows"])
        board_rows = [
            {k: r[k] for k in ("rank", "method", "win_rate", "wins", "losses", "ties", "n_tasks")}
            for r in board["rows"][:top]
        ]
    except ReportError:
        pass
    status = Counter(str(r.get("status")) for r in records)
    return clean(
        {
            "kind": "summary",
            "reference": reference,
            "results": results,
            "n_runs": len(records),
            "status": dict(status),
            "tasks": tasks,
            "claims": claims,
            "leaderboard": board_rows,
            "n_ranked": n_ranked,
            "notes": notes + list(rep.get("notes") or []),
        }
    )
