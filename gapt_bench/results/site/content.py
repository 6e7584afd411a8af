"""What the site shows, computed once: the report (with each task's own analyses), the papers' claims, the
leaderboard, and the records split by task and by configuration.

The numbers are the ones `gapt-bench report/paper/leaderboard --format json` print: the same analysis calls on the
same records. A task page shows its slice of the one report (so p-values keep the report's Holm family).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gapt_bench.results import analysis
from gapt_bench.results.analysis import ReportError
from gapt_bench.results.analysis.task_analyses import report_with_analyses
from gapt_bench.results.site.names import runs_page
from gapt_bench.tasks import TASKS


@dataclass
class RunGroup:
    """The records of one (task, task version, method, config hash), every status included."""

    task: str
    task_version: str
    method: str
    config_hash: str
    label: str = ""
    setup: str = ""
    records: list[dict] = field(default_factory=list)

    @property
    def page(self) -> str:
        return runs_page(self.task, self.task_version, self.config_hash)


@dataclass
class Content:
    reference: str
    report: dict
    paper: dict | None
    leaderboard: dict | None
    errors: dict[str, str]  # "paper" / "leaderboard" -> why it could not be computed
    analyses_of: dict[str, list[str]]  # task -> keys of report["analyses"] that are its own
    groups: dict[str, list[RunGroup]]  # task -> its groups in report order

    @property
    def tasks(self) -> list[str]:
        return sorted(self.groups)

    def records_of(self, task: str) -> list[dict]:
        return [r for g in self.groups[task] for r in g.records]


def task_report(rep: dict, task: str, keys: Sequence[str]) -> dict:
    """The report restricted to one task (its groups, comparisons, analyses and notes); the statistics untouched."""
    return {
        **rep,
        "groups": [g for g in rep["groups"] if g["task"] == task],
        "comparisons": [c for c in rep["comparisons"] if c["task"] == task],
        "analyses": {k: v for k, v in (rep.get("analyses") or {}).items() if k in keys},
        "notes": [n for n in rep.get("notes") or [] if mentions(n, task)],
    }


def mentions(note: str, task: str) -> bool:
    """Whether a note is about `task`: it starts with the task's name, or has `task/` or `task:` in it, the name
    whole (a note on "fineweb_lm" is not about "fineweb")."""
    name = re.escape(task)
    return re.search(rf"^{name}(?![\w.-])|(?<![\w.-]){name}[/:]", note) is not None


def run_groups(records: Sequence[dict], reference: str = "baseline") -> dict[str, list[RunGroup]]:
    """task -> its configurations, labelled as the analyses label them (method [variant], setup), the reference
    method first as in the report."""
    labels = {
        (g.task, g.task_version, g.method, g.config_hash): (g.label, g.setup_label)
        for g in analysis.group_records(records)
    }
    groups: dict[tuple, RunGroup] = {}
    for r in records:
        key = (r.get("task"), str(r.get("task_version")), r.get("method"), r.get("config_hash"))
        if key not in groups:
            label, setup = labels.get(key, (str(key[2]), ""))
            groups[key] = RunGroup(str(key[0]), key[1], str(key[2]), str(key[3]), label, setup)
        groups[key].records.append(r)
    order = {
        m: i
        for i, m in enumerate(
            analysis.method_order({g.method for g in groups.values()}, reference, analysis.controls_by_method(records))
        )
    }
    by_task: dict[str, list[RunGroup]] = defaultdict(list)
    for g in sorted(
        groups.values(),
        key=lambda g: (
            g.task,
            analysis.natural_key(g.setup),
            order.get(g.method, 0),
            g.label,
            g.task_version,
            g.config_hash,
        ),
    ):
        g.records.sort(key=lambda r: (str(r.get("seed")), str(r.get("run_id"))))
        by_task[g.task].append(g)
    return dict(by_task)


def gather(records: Sequence[dict], reference: str = "baseline") -> Content:
    """Every analysis the site shows; a paper table or leaderboard that cannot be computed becomes a message."""
    rep, owned = report_with_analyses(records, reference)
    errors: dict[str, str] = {}
    paper = board = None
    try:
        paper = analysis.paper_table(rep)
    except ReportError as e:
        errors["paper"] = str(e)
    try:
        board = analysis.leaderboard(records, reference=reference)
    except ReportError as e:
        errors["leaderboard"] = str(e)
    return Content(reference, rep, paper, board, errors, owned, run_groups(records, reference))


def primary_metrics(records: Sequence[dict]) -> list[str]:
    """The primary metrics the records declare (first-seen order)."""
    out: list[str] = []
    for r in records:
        for m in r.get("primary_metrics") or []:
            if m not in out:
                out.append(str(m))
    return out


def task_description(task: str) -> str:
    return str(getattr(TASKS.get(task), "description", "")) if task in TASKS else "(task not loaded here)"


def metric_value(record: dict, metric: str) -> Any:
    return (record.get("metrics") or {}).get(metric)
