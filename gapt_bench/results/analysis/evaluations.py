"""Evaluated models (`gapt-bench eval` records, kind "evaluation") as tables of their own.

An evaluation has no seeds: each row is one model measured once under one setting, so the tables show values, not
statistics over replicates, and never pair models. `report` and `site` show them beside the training runs.
"""

from __future__ import annotations

from typing import Any

from gapt_bench.results.analysis.tables import Table

LANGUAGE = (("ce", "CE"), ("bpb", "bits/byte"), ("ce_rolling", "CE rolling"), ("bpb_rolling", "bits/byte rolling"))
SCORES = ("loss", "reference", "zlib", "min_k", "min_k_plus_plus")


def evaluation_result(records: list[dict]) -> dict[str, Any]:
    """The "evaluations" result: one row per evaluation record, in the order written."""
    rows = []
    for r in records:
        model = (r.get("config") or {}).get("model") or {}
        settings = (r.get("config") or {}).get("evaluation") or {}
        rows.append(
            {
                "model": r.get("method"),
                "run_id": r.get("run_id"),
                "n_params": r.get("n_params"),
                "dtype": model.get("dtype"),
                "architecture": model.get("architecture"),
                "content_hash": model.get("content_hash"),
                "corpus": f"{settings.get('data')}:{settings.get('split')}" if settings else "",
                "seq_len": settings.get("seq_len"),
                "windowing": settings.get("windowing"),
                "metrics": r.get("metrics") or {},
            }
        )
    return {"kind": "evaluations", "evaluations": rows}


def _num(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return ""
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return f"{v:.{digits}g}"


def evaluation_tables(result: dict, include_layers: bool = False) -> list[Table]:
    rows = result["evaluations"]
    lang_rows = []
    for e in rows:
        m = e["metrics"]
        row = {
            "model": e["model"],
            "params": _num(e["n_params"]),
            "dtype": e["dtype"] or "",
            "corpus": e["corpus"],
            **{k: _num(m.get(k)) for k, _ in LANGUAGE},
            "mbe": _num(m.get("mbe")),
            "mbe_centered": _num(m.get("mbe_centered")),
        }
        lang_rows.append(row)
    tables = []
    if any(k in e["metrics"] for e in rows for k in ("ce", "bpb", "ce_rolling", "bpb_rolling", "mbe")):
        tables.append(
            Table(
                "Evaluated models",
                [
                    ("model", "model"),
                    ("params", "params"),
                    ("dtype", "dtype"),
                    ("corpus", "corpus:split"),
                    *LANGUAGE,
                    ("mbe", "MBE (mean over layers)"),
                    ("mbe_centered", "MBE centred"),
                ],
                lang_rows,
                priority={"ce": 0, "bpb": 0, "mbe": 1, "params": 2, "mbe_centered": 3, "dtype": 4, "corpus": 5},
                caption="one measurement per model (no seeds): compare models by value; CE in nats per token, "
                "chunks = a run's validation windows, rolling = lm-eval's per-document log-likelihood",
            )
        )
    if include_layers:
        n = max((sum(1 for k in e["metrics"] if k.startswith("mbe_layer_")) for e in rows), default=0)
        if n:
            tables.append(
                Table(
                    "MBE per layer",
                    [("model", "model"), *[(f"l{i}", f"layer {i}") for i in range(n)]],
                    [
                        {"model": e["model"], **{f"l{i}": _num(e["metrics"].get(f"mbe_layer_{i}")) for i in range(n)}}
                        for e in rows
                    ],
                )
            )
    mem = [e for e in rows if any(k.startswith("mi_") for k in e["metrics"])]
    if mem:
        mem_rows = []
        for e in mem:
            m = e["metrics"]
            row = {
                "model": e["model"],
                "memu": _num(m.get("unintended_memorization_bits")),
                **{f"ex{p}": _num(m.get(f"extraction_rate_p{p}")) for p in (8, 16, 32) if f"extraction_rate_p{p}" in m},
            }
            for s in SCORES:
                if f"mi_{s}_auc" in m:
                    low, high = m.get(f"mi_{s}_auc_low"), m.get(f"mi_{s}_auc_high")
                    ci = f" [{low:.2f}, {high:.2f}]" if low is not None and high is not None else ""
                    row[s] = f"{m[f'mi_{s}_auc']:.3f}{ci}"
            row["tpr"] = _num(m.get("mi_loss_tpr_at_1pct"), 3)
            mem_rows.append(row)
        tables.append(
            Table(
                "Memorization of evaluated models",
                [
                    ("model", "model"),
                    ("memu", "unintended memorization (bits)"),
                    ("ex8", "extracted p8"),
                    ("ex16", "extracted p16"),
                    ("ex32", "extracted p32"),
                    *[(s, f"AUC {s} [95% CI]") for s in SCORES],
                    ("tpr", "loss TPR@1% FPR"),
                ],
                mem_rows,
                priority={"loss": 0, "reference": 0, "memu": 1, "ex8": 2, "min_k_plus_plus": 3, "tpr": 4, "zlib": 5},
                caption="membership AUC: 0.5 = chance, 1 = every member ranked above every non-member; scores on the "
                "evaluation split, thresholds and F1 in the record (gapt-bench report --format json)",
            )
        )
    return tables


def evaluation_changes(baseline: list[dict], candidate: list[dict]) -> dict[str, Any]:
    """The "evaluation_changes" result: each model evaluated in both sets under the same settings (same label and
    setup hash), metric by metric: baseline, candidate and the difference. One measurement per side, so no test
    and no verdict: a change is shown, never judged (the regression check's exit code ignores it)."""
    base = {(r.get("method"), r.get("setup_hash")): r for r in baseline}
    rows = []
    for r in candidate:
        b = base.get((r.get("method"), r.get("setup_hash")))
        if b is None:
            continue
        for metric in sorted(set(b.get("metrics") or {}) & set(r.get("metrics") or {})):
            if metric.startswith(("mbe_layer_", "mbe_centered_layer_")) or metric.endswith(("_low", "_high")):
                continue
            x, y = b["metrics"][metric], r["metrics"][metric]
            if not isinstance(x, (int, float)) or not isinstance(y, (int, float)):
                continue
            rows.append(
                {
                    "model": r.get("method"),
                    "metric": metric,
                    "baseline": x,
                    "candidate": y,
                    "delta": y - x,
                    "same_weights": _same_model(b, r),
                }
            )
    return {"kind": "evaluation_changes", "rows": rows}


def _same_model(a: dict, b: dict) -> bool | None:
    """Whether two evaluations measured the same files (None: unknown, e.g. a hub model without a content hash)."""
    ha = ((a.get("config") or {}).get("model") or {}).get("content_hash")
    hb = ((b.get("config") or {}).get("model") or {}).get("content_hash")
    return None if ha is None or hb is None else ha == hb


def evaluation_change_tables(result: dict, include_layers: bool = False) -> list[Table]:
    rows = [
        {
            "model": r["model"],
            "metric": r["metric"],
            "baseline": _num(r["baseline"]),
            "candidate": _num(r["candidate"]),
            "delta": f"{r['delta']:+.4g}",
            "weights": {True: "same", False: "changed", None: "unknown"}[r["same_weights"]],
        }
        for r in result["rows"]
    ]
    return [
        Table(
            "Evaluated models in both sets",
            [
                ("model", "model"),
                ("metric", "metric"),
                ("baseline", "baseline"),
                ("candidate", "candidate"),
                ("delta", "Δ"),
                ("weights", "weights"),
            ],
            rows,
            section_key="model",
            caption="one measurement per side: changes are shown, not tested (no seeds); they do not set the exit code",
        )
    ]
