"""Per-run tables (`gapt-bench report --runs`, `gapt-bench run --full`): one row per run, with the columns that tell
the runs of a task apart.

Besides method (with its variant) and seed, a task's rows carry every setup field that varies between its runs
(the forgetting task's batch layout, the capacity sweep's N and model, a precision, ...), each as its own
column, so no two rows of a table read the same. Metrics follow: the task's primary metrics first, then the rest
(per-layer values left out unless asked for).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from gapt_bench.config import SETUP_SECTIONS
from gapt_bench.results.analysis.common import clean, natural_key, unique
from gapt_bench.results.analysis.groups import (
    _flatten,
    controls_by_method,
    group_records,
    is_layer_metric,
    method_order,
    metric_sort_key,
    model_label,
)

MODEL_KEYS = ("model.n_layer", "model.n_embd", "model.n_head")
# Column names of the setup fields a sweep varies most often; any other field is named by its last part.
SETUP_NAMES = {"data.n_sequences": "N", "data.batch_layout": "layout", "train.precision": "precision"}


def _varying(flat: list[dict]) -> list[str]:
    keys = sorted(set().union(*flat)) if flat else []
    return [k for k in keys if len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flat}) > 1]


def setup_columns(records: Sequence[dict]) -> tuple[list[tuple[str, str]], list[dict[str, str]]]:
    """(column key, header) of the setup fields that vary across `records`, and each record's values; the model's
    depth, width and heads become one "model" column (L2/d64)."""
    flat = [_flatten({s: (r.get("config") or {}).get(s) for s in SETUP_SECTIONS}) for r in records]
    varying = _varying(flat)
    model = any(k in varying for k in MODEL_KEYS)
    keys = [k for k in varying if k not in MODEL_KEYS]
    cols = ([("model", "model")] if model else []) + [(k, SETUP_NAMES.get(k, k.rsplit(".", 1)[-1])) for k in keys]
    values = []
    for f in flat:
        row = {k: _text(f.get(k)) for k in keys}
        if model:
            row["model"] = model_label(f.get("model.n_layer"), f.get("model.n_embd"))
            if "model.n_head" in varying and "model.n_embd" not in varying:
                row["model"] += f"/h{f.get('model.n_head')}"
        values.append(row)
    return cols, values


def _text(v: object) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def runs_table(records: Sequence[dict], reference: str = "baseline", include_layers: bool = False) -> dict:
    """The per-run result (kind "runs"): per task, its setup columns, metric names and one row per run."""
    labels = {(g.task, g.method, g.config_hash): g.label for g in group_records(records)}
    tasks = []
    for task in sorted({str(r.get("task")) for r in records}):
        recs = [r for r in records if str(r.get("task")) == task]
        order = {
            m: i for i, m in enumerate(method_order({r["method"] for r in recs}, reference, controls_by_method(recs)))
        }
        cols, values = setup_columns(recs)
        primary = unique(m for r in recs for m in (r.get("primary_metrics") or []))
        seen = {m for r in recs for m in (r.get("metrics") or {})}
        primary = [m for m in primary if m in seen]
        others = sorted(
            (m for m in seen if m not in primary and (include_layers or not is_layer_metric(m))), key=metric_sort_key
        )
        rows = []
        for r, setup in zip(recs, values):
            rows.append(
                {
                    "method": labels.get((task, r["method"], r.get("config_hash")), r["method"]),
                    "seed": r.get("seed"),
                    "status": r.get("status"),
                    "setup": setup,
                    "metrics": {m: (r.get("metrics") or {}).get(m) for m in primary + others},
                    "wall_time_s": r.get("wall_time_s"),
                    "run_id": r.get("run_id"),
                    "_order": (
                        [natural_key(setup[k]) for k, _ in cols],
                        order.get(r["method"], len(order)),
                        str(r.get("seed")),
                    ),
                }
            )
        rows.sort(key=lambda row: row.pop("_order"))
        tasks.append(
            {
                "task": task,
                "setup_columns": cols,
                "primary_metrics": primary,
                "metrics": primary + others,
                "rows": rows,
            }
        )
    return clean({"kind": "runs", "reference": reference, "tasks": tasks})
