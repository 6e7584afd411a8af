"""Each task's own analyses over its records (capacity: alpha per model; text memorization: double descent, the
membership law), and the report with them (what `gapt-bench report` prints).

The built-in tasks' analyses live in this package (`capacity`, `text_memorization`); a plug-in task brings its own
through `Task.analyses`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from gapt_bench.results.analysis.capacity import analyse_capacity
from gapt_bench.results.analysis.comparisons import build_report
from gapt_bench.results.analysis.paper import CAPACITY_TASK, MEMORIZATION_TASK
from gapt_bench.results.analysis.text_memorization import analyse_memorization
from gapt_bench.tasks import TASKS

BUILT_IN: dict[str, Callable[[Sequence[dict], str], dict[str, Any]]] = {
    CAPACITY_TASK: lambda records, reference: {"capacity": analyse_capacity(records, reference=reference)},
    MEMORIZATION_TASK: lambda records, reference: {"memorization": analyse_memorization(records, reference=reference)},
}


def task_analyses(task: str, records: Sequence[dict], reference: str = "baseline") -> dict[str, Any]:
    """The analyses of one task's records, keyed by name; {} for a plug-in task not loaded here."""
    if task in BUILT_IN:
        return BUILT_IN[task](records, reference)
    if task in TASKS:
        return TASKS.get(task).analyses(records, reference)
    return {}


def report_with_analyses(records: Sequence[dict], reference: str = "baseline") -> tuple[dict, dict[str, list[str]]]:
    """`build_report` plus each task's analyses, and which analyses belong to which task."""
    rep = build_report(records, reference=reference)
    rep["analyses"] = {}
    owned: dict[str, list[str]] = {}
    for task in sorted({r["task"] for r in records}):
        extra = task_analyses(task, [r for r in records if r["task"] == task], reference)
        rep["analyses"].update(extra)
        owned[task] = list(extra)
    return rep, owned
