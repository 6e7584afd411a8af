"""The leaderboard: methods ranked on the quality each task declares, counting only wins that beat the noise.

What is scored. Each task declares `primary_metrics` (carried by its records): what a practitioner wants from it,
e.g. fineweb_lm ["val_ce"], arithmetic_ood ["ood_answer_ce", "ood_digit_acc"], forgetting_separation
["retained_l1", "finetuned_l1"]. Capacity (synthetic_capacity, []) is a property of a model, never scored. A
*column* is (task, setup, primary metric); methods meet only within one setup (same setup_hash). Everything else
(MBE, centred MBE, per-layer values, capacity, throughput) is shown in a separate "diagnostics, not scored" table:
a method that collapses MBE while hurting CE must not climb the board on its diagnostics.

How it is scored (HELM's mean win rate, made to respect seed noise):
- In each column every pair of methods is tested with `stats.compare` (paired by seed when both arms have the
  same seeds, Welch otherwise; two-sided).
- Holm over the leaderboard's family: every pairwise test of every column.
- Against each opponent in a column a method scores 1 for a significant win (Holm p < alpha, better direction),
  0 for a significant loss, and 1/2 otherwise (no significant difference, or no test possible).
- Column score = mean over the column's opponents; task score = mean over the task's columns; overall score
  (`win_rate`) = mean over the tasks a method appears in, so a task with two primary metrics weighs as much as a
  task with one. Equal scores share a rank.
Each cell also shows the mean, its 95% t-CI, n, and the test against the reference: ✓ significantly better,
✗ significantly worse, ~ no significant difference (same Holm family).

Records without `primary_metrics` (written before tasks declared them) are not ranked; the leaderboard says so in
a note and shows their metrics as diagnostics.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from itertools import combinations

from gapt_bench.results import stats
from gapt_bench.results.analysis.common import (
    ALPHA,
    ReportError,
    clean,
    natural_key,
    unique,
)
from gapt_bench.results.analysis.groups import (
    Group,
    controls_by_method,
    direction_of,
    group_records,
    is_layer_metric,
    method_order,
    metric_sort_key,
    pair_by_seed,
)

MARKS = {"better": "✓", "worse": "✗", "no significant difference": "~", "inconclusive": "?"}


def _declared(groups: list[Group]) -> tuple[dict[str, list[str]], list[Group]]:
    """task -> its primary metrics (union over records that declare them); and the groups that declare them."""
    primary: dict[str, list[str]] = {}
    ranked = []
    for g in groups:
        lists = [r["primary_metrics"] for r in g.ok if isinstance(r.get("primary_metrics"), list)]
        if len(lists) == len(g.ok):
            ranked.append(g)
            primary[g.task] = unique([*primary.get(g.task, []), *(str(m) for ms in lists for m in ms)])
    return primary, ranked


def _setups(groups: list[Group]) -> list[str]:
    """The setup hashes of the groups, in the natural order of their labels (grouped before shuffled)."""
    labels = {str(g.setup_hash): g.setup_label for g in groups}
    return sorted(labels, key=lambda h: (natural_key(labels[h]), h))


def _cell(g: Group, metric: str) -> dict:
    d = stats.describe(v for _, v in g.seed_values(metric))
    return {k: d[k] for k in ("n", "mean", "std", "ci_low", "ci_high")}


def _test(a: Group, b: Group, metric: str, direction: str, alpha: float) -> dict:
    xa, xb, paired = pair_by_seed(a.seed_values(metric), b.seed_values(metric))
    res = stats.compare(xa, xb, paired=paired, higher_is_better=direction == "max", alpha=alpha)
    return {
        "a": a.label,
        "b": b.label,
        "a_method": a.method,
        "b_method": b.method,
        "direction": direction,
        "paired": paired,
        "test": res["test"],
        "delta": res["delta"],
        "rel_delta": res["rel_delta"],
        "p": res["p"],
        "n_a": res["n_a"],
        "n_b": res["n_b"],
    }


def _evidence(cell: dict, mark: str) -> str:
    mean = "—" if cell["mean"] is None else f"{cell['mean']:.4g}"
    ci = "" if cell["ci_low"] is None else f" [{cell['ci_low']:.4g}, {cell['ci_high']:.4g}]"
    return f"{mean}{ci} (n={cell['n']}){mark}"


def _verdict_of(label: str, t: dict) -> str:
    """The test's verdict from `label`'s side (tests are stored as a against b)."""
    v = t["verdict"]
    return v if label == t["a"] else {"better": "worse", "worse": "better"}.get(v, v)


def _opponent_method(label: str, t: dict) -> str:
    return t["b_method"] if label == t["a"] else t["a_method"]


def _rank(scores: dict[str, float]) -> dict[str, int]:
    return {k: 1 + sum(o > v for o in scores.values()) for k, v in scores.items()}


def leaderboard(records: Sequence[dict], reference: str = "baseline", alpha: float = ALPHA) -> dict:
    """{"kind": "leaderboard", "rows", "columns", "tests", "diagnostics", "notes", ...}; rows best first."""
    groups = [g for g in group_records(records) if g.ok]
    if not groups:
        raise ReportError("no ok run records to rank; run `gapt-bench run` first or point at a results folder")
    controls = controls_by_method(records)
    primary, ranked = _declared(groups)
    notes: list[str] = []
    ranked_ids = {id(g) for g in ranked}
    undeclared = sorted({(g.task, g.label) for g in groups if id(g) not in ranked_ids})
    for task in unique(t for t, _ in undeclared):
        labels = ", ".join(lbl for t, lbl in undeclared if t == task)
        notes.append(
            f"{task} ({labels}): records carry no primary_metrics (written before tasks declared them); "
            f"not ranked, shown under diagnostics"
        )
    columns, tests = [], []
    for task in sorted(primary):
        if not primary[task]:
            notes.append(f"{task}: declares no primary metrics (a property, not a quality); not scored")
            continue
        tgs = [g for g in ranked if g.task == task]
        missing = [m for m in primary[task] if not any(g.seed_values(m) for g in tgs)]
        if missing:
            notes.append(
                f"{task}: primary metric(s) {', '.join(missing)} not in the records; "
                f"{'not ranked' if len(missing) == len(primary[task]) else 'ranked on the rest'}"
            )
        for setup_hash in _setups(tgs):
            sgs = [g for g in tgs if str(g.setup_hash) == setup_hash]
            for metric in primary[task]:
                gs = [g for g in sgs if g.seed_values(metric)]
                if len(gs) < 2:
                    continue  # nothing to rank against
                direction = direction_of((r for g in gs for r in g.ok), metric)
                col = {
                    "task": task,
                    "setup": gs[0].setup_label,
                    "setup_hash": setup_hash,
                    "metric": metric,
                    "direction": direction,
                    "cells": {g.label: _cell(g, metric) for g in gs},
                    "methods": {g.label: g.method for g in gs},
                    "tests": [],
                }
                for a, b in combinations(gs, 2):
                    t = _test(a, b, metric, direction, alpha)
                    col["tests"].append(t)
                    tests.append(t)
                columns.append(col)
    for t, p_adj in zip(tests, stats.holm([t["p"] for t in tests])):
        t["p_holm"] = p_adj
        t["verdict"] = stats.verdict(t["delta"], p_adj, t["direction"] == "max", alpha)  # of a against b
    rows = _score(columns, reference)
    diagnostics = _diagnostics(groups, primary, ranked_ids)
    order = method_order({g.method for g in groups}, reference, controls)
    return clean(
        {
            "kind": "leaderboard",
            "reference": reference,
            "alpha": alpha,
            "family_size": sum(t["p"] is not None for t in tests),
            "primary_metrics": primary,
            "method_order": order,
            "rows": rows,
            "columns": columns,
            "diagnostics": diagnostics,
            "notes": notes,
        }
    )


def _score(columns: list[dict], reference: str) -> list[dict]:
    per_task: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    evidence: dict[str, dict[str, str]] = defaultdict(dict)
    record: dict[str, dict[str, int]] = defaultdict(lambda: {"wins": 0, "losses": 0, "ties": 0})
    for col in columns:
        where = f"{col['task']}/{col['metric']}" + (f" [{col['setup']}]" if col["setup"] else "")
        labels = list(col["cells"])
        for label in labels:
            mine = [t for t in col["tests"] if label in (t["a"], t["b"])]
            points = [{"better": 1.0, "worse": 0.0}.get(_verdict_of(label, t), 0.5) for t in mine]
            for p in points:
                record[label][{1.0: "wins", 0.0: "losses", 0.5: "ties"}[p]] += 1
            per_task[label][col["task"]].append(sum(points) / len(points))
            vs_ref = next(
                (
                    _verdict_of(label, t)
                    for t in mine
                    if col["methods"][label] != reference and _opponent_method(label, t) == reference
                ),
                None,
            )
            if vs_ref is not None:
                ref_test = next(t for t in mine if _opponent_method(label, t) == reference)
                col["cells"][label]["vs_reference"] = vs_ref
                col["cells"][label]["p_holm_vs_reference"] = ref_test["p_holm"]
            evidence[label][where] = _evidence(col["cells"][label], MARKS.get(vs_ref, "") if vs_ref else "")
    rows = []
    for label, tasks in per_task.items():
        task_scores = {t: sum(s) / len(s) for t, s in tasks.items()}
        rows.append(
            {
                "method": label,
                "win_rate": sum(task_scores.values()) / len(task_scores),
                "n_tasks": len(task_scores),
                "n_columns": sum(len(s) for s in tasks.values()),
                **record[label],
                "tasks": {t: {"win_rate": v, "n_columns": len(tasks[t])} for t, v in sorted(task_scores.items())},
                "evidence": dict(sorted(evidence[label].items())),
            }
        )
    ranks = _rank({r["method"]: r["win_rate"] for r in rows})
    for r in rows:
        r["rank"] = ranks[r["method"]]
    for task in {t for r in rows for t in r["tasks"]}:
        tr = _rank({r["method"]: r["tasks"][task]["win_rate"] for r in rows if task in r["tasks"]})
        for r in rows:
            if task in r["tasks"]:
                r["tasks"][task]["rank"] = tr[r["method"]]
    rows.sort(key=lambda r: (r["rank"], r["method"]))
    return rows


def _diagnostics(groups: list[Group], primary: dict[str, list[str]], ranked_ids: set[int]) -> list[dict]:
    """Every (task, setup, metric) that is not scored, with each method's mean and CI."""
    out = []
    for task in sorted({g.task for g in groups}):
        tgs = [g for g in groups if g.task == task]
        for setup_hash in _setups(tgs):
            sgs = [g for g in tgs if str(g.setup_hash) == setup_hash]
            for metric in sorted({m for g in sgs for m in g.metrics}, key=metric_sort_key):
                gs = [
                    g
                    for g in sgs
                    if g.seed_values(metric) and not (id(g) in ranked_ids and metric in primary.get(task, []))
                ]
                if not gs:
                    continue
                out.append(
                    {
                        "task": task,
                        "setup": gs[0].setup_label,
                        "metric": metric,
                        "direction": direction_of((r for g in gs for r in g.ok), metric),
                        "per_layer": is_layer_metric(metric),
                        "cells": {g.label: _cell(g, metric) for g in gs},
                    }
                )
    return out
