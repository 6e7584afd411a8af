"""Method-vs-reference comparisons over seeds: the numbers behind `gapt-bench report`.

Per group and metric: mean, sd, 95% t-interval and the per-seed values. Per (group, metric) against the reference
group of the same setup: `stats.compare` (paired by seed when both arms have the same seeds, Welch otherwise),
with the minimum detectable effect at the run's n (alpha 0.05, power 0.8), the seeds needed for the observed delta,
and a relative CI (log ratio of means for positive metrics, named in `rel_ci_method`). Holm families are defined in
`families.py`; schedule controls get both arms' duty cycles (`duty.py`); the runs' preset deviations ride along.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from gapt_bench.results import stats
from gapt_bench.results.analysis.common import ALPHA, ReportError, clean, natural_key
from gapt_bench.results.analysis.duty import control_pairs, group_duty
from gapt_bench.results.analysis.families import apply_families
from gapt_bench.results.analysis.groups import (
    Group,
    controls_by_method,
    direction_of,
    group_records,
    method_order,
    metric_sort_key,
    pair_by_seed,
    precision_of,
    preset_about,
    same_setup,
    task_metrics,
)


def _group_row(g: Group, metric: str, direction: str) -> dict:
    pairs = g.seed_values(metric)
    d = stats.describe([v for _, v in pairs])
    return {
        "task": g.task,
        "task_version": g.task_version,
        "method": g.method,
        "variant": g.variant,
        "label": g.label,
        "metric": metric,
        "direction": direction,
        **d,
        "seeds": [s for s, _ in pairs],
        "config_hash": g.config_hash,
        "setup_hash": g.setup_hash,
        "setup": g.setup_label,
        "layout": g.layout,
        "preset": g.preset,
        "n_diverged": g.n_diverged,
        "n_failed": g.n_failed,
        "n_params": g.n_params,
        "precision": precision_of(g.ok[0]) if g.ok else None,
        "model": {k: (g.config.get("model") or {}).get(k) for k in ("n_layer", "n_embd", "n_head")},
    }


def compare_groups(g: Group, ref: Group, metric: str, direction: str, alpha: float) -> dict:
    """One comparison row: group `g` against reference group `ref` on `metric`."""
    a, b, paired = pair_by_seed(g.seed_values(metric), ref.seed_values(metric))
    res = stats.compare(a, b, paired=paired, higher_is_better=direction == "max", alpha=alpha)
    return {
        "task": g.task,
        "task_version": g.task_version,
        "metric": metric,
        "direction": direction,
        "method": g.method,
        "variant": g.variant,
        "label": g.label,
        "reference": ref.method,
        "reference_label": ref.label,
        "setup": g.setup_label,
        "layout": g.layout,
        "setup_hash": g.setup_hash,
        "config_hash": g.config_hash,
        "reference_config_hash": ref.config_hash,
        "preset": g.preset,
        "n_params": g.n_params,
        "paired": paired,
        **res,
        "preset_about": preset_about(g.ok, ref.ok),
        "duty_pairs": [],
        # the compared arm's realised schedule (phase-switching methods): share of micro-batches compressing and
        # phase switches, means over seeds (None for methods without phases)
        "duty_compress": group_duty(g),
        "corpus": _corpus(g),
        "phase_switches": g.summary_mean("gate_switches"),
    }


def _corpus(g: Group) -> str | None:
    """The text a language-modelling group trained on (data.source and data.name), None for other tasks."""
    data = g.config.get("data") or {}
    source = data.get("source")
    if not isinstance(source, str):
        return None
    if source == "offline":
        return "the bundled offline corpus (public-domain text, a stand-in: not FineWeb)"
    return f"{source} ({data['name']})" if data.get("name") else source


def pick_reference(g: Group, refs: list[Group]) -> Group | None:
    """The reference group of the same task version and setup with the most seeds."""
    return max((r for r in refs if same_setup(r, g)), key=lambda r: len(r.ok), default=None)


def sort_rows(rows: list[dict], reference: str, controls: Mapping[str, Sequence[str]]) -> None:
    """Task, metric (X then X_centered), method (controls after their method), variant, setup."""
    order = {
        t: {
            m: i for i, m in enumerate(method_order({r["method"] for r in rows if r["task"] == t}, reference, controls))
        }
        for t in {r["task"] for r in rows}
    }
    rows.sort(
        key=lambda r: (
            r["task"],
            metric_sort_key(r["metric"]),
            order[r["task"]][r["method"]],
            natural_key(r.get("variant") or ""),
            natural_key(r.get("setup") or ""),
        )
    )


def _attach_duty(comparisons: list[dict], pairs: list[dict]) -> None:
    for c in comparisons:
        c["duty_pairs"] = [p for p in pairs if c["config_hash"] in (p["method_config_hash"], p["control_config_hash"])]


def build_report(records: Sequence[dict], reference: str = "baseline", alpha: float = ALPHA) -> dict:
    """{"kind": "report", "groups", "comparisons", "families", "control_pairs", "controls", "notes", ...}.

    Holm over the report's families (see `families.py`); verdicts use the report family."""
    groups = group_records(records)
    if not groups:
        raise ReportError("no run records to report on; run `gapt-bench run` first or point at a results folder")
    controls = controls_by_method(records)
    metrics = task_metrics(groups)
    directions = {
        (t, m): direction_of((r for g in groups if g.task == t for r in g.ok), m)
        for t, ms in metrics.items()
        for m in ms
    }
    group_rows = []
    for g in groups:
        ms = metrics.get(g.task, []) if not g.ok else sorted(g.metrics, key=metric_sort_key)
        group_rows += [_group_row(g, m, directions[(g.task, m)]) for m in ms]
    refs = [g for g in groups if g.method == reference]
    comparisons, notes = [], []
    for g in groups:
        if g.method == reference or not g.ok:
            continue
        ref = pick_reference(g, refs)
        if ref is None:
            notes.append(
                f"{g.task}/{g.label}: no '{reference}' runs with the same task version and setup"
                f"{f' ({g.setup_label})' if g.setup_label else ''}; not compared"
            )
            continue
        for m in sorted(g.metrics & ref.metrics, key=metric_sort_key):
            comparisons.append(compare_groups(g, ref, m, directions[(g.task, m)], alpha))
    families = apply_families(comparisons, reference, controls, alpha)
    pairs = control_pairs(groups, controls)
    _attach_duty(comparisons, pairs)
    sort_rows(group_rows, reference, controls)
    sort_rows(comparisons, reference, controls)
    for g in groups:
        if g.n_diverged or g.n_failed:
            notes.append(f"{g.task}/{g.label}: {g.n_diverged} diverged, {g.n_failed} failed (not counted)")
    return clean(
        {
            "kind": "report",
            "reference": reference,
            "alpha": alpha,
            "controls": controls,
            "families": families,
            "control_pairs": pairs,
            "groups": group_rows,
            "comparisons": comparisons,
            "notes": notes,
        }
    )
