"""Capacity analysis over `synthetic_capacity` records: capacity per model, alpha (bits/parameter) in both
conventions, the memorization sweep and the double-descent table (capacity-paper.md sections 2-3).

Grouping: method x precision; inside a group, models are (n_layer, n_embd, n_params) and runs are (model, N, seed).

- Usable runs: status "ok" and `heldout_ok` == 1. Runs that failed the held-out sanity check are *flagged* (listed,
  never used); failed or diverged runs are listed as excluded.
- Per seed: capacity(model) = max over N of `mem_bits` (strict convention, see the task); the same run's
  `mem_bits_paper_conv` (x S/(S-1), the paper's convention) gives the paper-convention capacity.
- alpha per seed, over the models that seed has in full: the least-squares slope through the origin of capacity
  against n_params (sum c*P / sum P^2), and the mean of the per-model ratios capacity/P; each in the strict and
  (when every run carries it) the paper convention. The paper's figures (3.64 slope, bf16; means 3.51 bf16 /
  3.83 fp32; Table 1) are in the paper convention: compare them with the `*_paper_conv` alphas. Seeds missing a
  model are left out of alpha (listed in `seeds_incomplete`), so every per-seed alpha covers the same models.
- Budget stops: a run that stopped on the step budget (`stop_reason == "budget"`, `converged == 0`) had not
  converged, so its memorized bits are a lower bound; capacity runs that did so are counted per model and group.
  So are data-bound capacity runs (mem_fraction >= DATA_BOUND: the dataset, not the model, ran out), also lower
  bounds. The paper table reads a group with either as a lower bound: below the claim, it cannot refute it.
- Intervals: 95% Student-t over seeds (`gapt_bench.results.stats.describe`); None with fewer than two seeds.
- Methods against the reference method (default baseline) in the same precision: the per-seed difference of alpha,
  paired by seed (seeds share data and initialisation), with its t-interval.
- Double descent: held-out bits/token against ratio = data_bits / (alpha * P) (strict on both sides), with one
  alpha per precision so that methods share the x-axis: the reference method's slope (else the group's own, else
  the paper's 3.64 converted to the strict convention with the runs' S).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from gapt_bench.results.analysis.common import clean, unique
from gapt_bench.results.analysis.groups import model_label, precision_of, preset_about
from gapt_bench.results.analysis.paper import (
    CAPACITY_TASK,
    PAPER_ALPHA_MEAN,
    PAPER_ALPHA_SLOPE,
    paper_alpha_slope,
    paper_row_alpha,
)
from gapt_bench.results.stats import describe


def slope_through_origin(params: Sequence[float], capacities: Sequence[float]) -> float | None:
    """Least-squares slope of capacity = alpha * P (no intercept): sum(c*P) / sum(P^2)."""
    den = sum(p * p for p in params)
    return sum(c * p for c, p in zip(capacities, params)) / den if den > 0 else None


def stopped_on_budget(row: dict) -> bool:
    """The run ran out of steps before its memorization curve flattened (its mem_bits is a lower bound). A run
    whose curve was flat when the budget ran out (`converged` 1) has reached its plateau, however it stopped."""
    if row.get("converged") == 1:
        return False
    if row.get("stop_reason") in ("budget", "converged"):
        return row["stop_reason"] == "budget"
    return row.get("converged") == 0


DATA_BOUND = 0.9  # a capacity run that memorized this fraction of its dataset was limited by the data, not the model


def data_bound(row: dict) -> bool:
    """The run memorized nearly all its dataset held (mem_fraction >= DATA_BOUND): the model may store more, so
    its mem_bits bounds its capacity from below, like a run stopped on the step budget."""
    return (row.get("mem_fraction") or 0.0) >= DATA_BOUND


def _run_row(r: dict) -> dict[str, Any]:
    cfg = r.get("config") or {}
    model, data = cfg.get("model") or {}, cfg.get("data") or {}
    m = r.get("metrics") or {}
    n_seq = data.get("n_sequences", m.get("n_sequences"))
    row = {
        "run_id": r.get("run_id"),
        "method": r.get("method"),
        "seed": r.get("seed"),
        "preset": r.get("preset"),
        "precision": precision_of(r),
        "n_layer": model.get("n_layer"),
        "n_embd": model.get("n_embd"),
        "n_params": r.get("n_params"),
        "vocab_size": model.get("vocab_size") or data.get("vocab_size"),
        "seq_len": (cfg.get("train") or {}).get("seq_len"),
        "n_sequences": int(n_seq) if n_seq is not None else None,
        "status": r.get("status"),
        "stop_reason": r.get("stop_reason"),
        "steps": r.get("steps"),
        "mem_bits": m.get("mem_bits"),
        "mem_bits_paper_conv": m.get("mem_bits_paper_conv"),
        "data_bits": m.get("data_bits"),
        "bits_per_param": m.get("bits_per_param"),
        "bits_per_param_paper_conv": m.get("bits_per_param_paper_conv"),
        "mem_fraction": m.get("mem_fraction"),
        "heldout_bits_per_token": m.get("heldout_bits_per_token"),
        "heldout_ok": m.get("heldout_ok"),
        "converged": m.get("converged"),
        "curve_rel_change": m.get("curve_rel_change"),
        "convention": (r.get("summary") or {}).get("convention") or data.get("convention"),
        "record": r,
    }
    row["budget_stopped"] = stopped_on_budget(row)
    return row


def _model_key(row: dict) -> tuple:
    return (row["n_layer"], row["n_embd"], row["n_params"])


def _brief(row: dict) -> dict:
    return {
        k: row[k] for k in ("run_id", "method", "seed", "precision", "n_layer", "n_embd", "n_params", "n_sequences")
    }


def analyse_capacity(records: Iterable[dict], reference: str = "baseline") -> dict[str, Any]:
    """{"kind": "capacity", "groups", "method_deltas", "flagged", "excluded", ...} of the synthetic_capacity
    records among `records` (other tasks are ignored)."""
    rows = [_run_row(r) for r in records if r.get("task") == CAPACITY_TASK]
    usable, flagged, excluded = [], [], []
    for row in rows:
        if row["status"] != "ok" or row["mem_bits"] is None:
            excluded.append({**_brief(row), "reason": f"status {row['status']}"})
        elif row["heldout_ok"] != 1:
            flagged.append(
                {
                    **_brief(row),
                    "heldout_bits_per_token": row["heldout_bits_per_token"],
                    "reason": "held-out check failed (leak or accounting error)",
                }
            )
        else:
            usable.append(row)

    by_group: dict[tuple, list[dict]] = defaultdict(list)
    for row in usable:
        by_group[(row["method"], row["precision"])].append(row)
    groups = [_analyse_group(method, precision, rs) for (method, precision), rs in sorted(by_group.items())]
    # One x-axis per precision for the double descent: the reference method's slope (else the group's, else 3.64)
    ref_alpha = {g["precision"]: g["alpha_slope"]["mean"] for g in groups if g["method"] == reference}
    for g in groups:
        if ref_alpha.get(g["precision"]):
            _fill_ratios(g, ref_alpha[g["precision"]], f"{reference} slope")
        elif g["alpha_slope"]["mean"]:
            _fill_ratios(g, g["alpha_slope"]["mean"], "own slope")
        else:
            s = g["seq_len"]
            factor = (s - 1) / s if s and s > 1 else 1.0
            _fill_ratios(
                g,
                PAPER_ALPHA_SLOPE * factor,
                f"paper slope 3.64 × (S−1)/S, S={s}" if factor != 1.0 else "paper slope 3.64",
            )
    return clean(
        {
            "kind": "capacity",
            "task": CAPACITY_TASK,
            "n_records": len(rows),
            "n_usable": len(usable),
            "groups": groups,
            "method_deltas": _method_deltas(groups, reference),
            "flagged": flagged,
            "excluded": excluded,
            "conventions": sorted({r["convention"] for r in rows if r["convention"]}),
            "paper": {
                "alpha_slope_bf16": PAPER_ALPHA_SLOPE,
                "alpha_mean": dict(PAPER_ALPHA_MEAN),
                "convention": "paper (×S/(S−1))",
            },
        }
    )


def _alphas(models: list[tuple], caps: list[float | None]) -> tuple[float | None, float | None]:
    if any(c is None for c in caps):
        return None, None
    params = [float(m[2]) for m in models]
    return (
        slope_through_origin(params, caps),  # type: ignore[arg-type]
        sum(c / p for c, p in zip(caps, params)) / len(params),
    )  # type: ignore[operator]


def _analyse_group(method: str, precision: str, rows: list[dict]) -> dict[str, Any]:
    models = sorted({_model_key(r) for r in rows}, key=lambda k: (k[2] or 0, k[0] or 0, k[1] or 0))
    # the capacity run per (model, seed): the N with the most memorized bits (strict)
    cap: dict[tuple, dict[Any, dict]] = defaultdict(dict)
    for r in rows:
        best = cap[_model_key(r)].get(r["seed"])
        if best is None or r["mem_bits"] > best["mem_bits"]:
            cap[_model_key(r)][r["seed"]] = r
    seeds = sorted({r["seed"] for r in rows})
    complete = [s for s in seeds if all(s in cap[m] for m in models)]
    per_seed = []
    for s in complete:
        slope, mean = _alphas(models, [float(cap[m][s]["mem_bits"]) for m in models])
        slope_pc, mean_pc = _alphas(models, [cap[m][s]["mem_bits_paper_conv"] for m in models])
        per_seed.append(
            {
                "seed": s,
                "alpha_slope": slope,
                "alpha_mean": mean,
                "alpha_slope_paper_conv": slope_pc,
                "alpha_mean_paper_conv": mean_pc,
                "budget_stopped": sum(cap[m][s]["budget_stopped"] for m in models),
            }
        )
    alphas = {
        k: describe(p[k] for p in per_seed)
        for k in ("alpha_slope", "alpha_mean", "alpha_slope_paper_conv", "alpha_mean_paper_conv")
    }

    model_rows = []
    for m in models:
        seed_rows = cap[m]
        ordered = [seed_rows[s] for s in sorted(seed_rows)]
        best_n = sorted(r["n_sequences"] for r in ordered)
        model_rows.append(
            {
                "n_layer": m[0],
                "n_embd": m[1],
                "n_params": m[2],
                "label": model_label(m[0], m[1]),
                "seeds": sorted(seed_rows),
                "capacity": describe(r["mem_bits"] for r in ordered),
                "bits_per_param": describe(r["mem_bits"] / m[2] for r in ordered),
                "bits_per_param_paper_conv": describe(
                    r["mem_bits_paper_conv"] / m[2] for r in ordered if r["mem_bits_paper_conv"] is not None
                ),
                "best_n": best_n,
                "best_n_median": statistics.median(best_n) if best_n else None,
                "best_is_largest_n": all(
                    seed_rows[s]["n_sequences"]
                    == max(r["n_sequences"] for r in rows if _model_key(r) == m and r["seed"] == s)
                    for s in seed_rows
                ),
                "n_budget_stopped": sum(r["budget_stopped"] for r in ordered),
                "budget_stopped_seeds": [r["seed"] for r in ordered if r["budget_stopped"]],
                "n_data_bound": sum(data_bound(r) for r in ordered),
                "paper_alpha": paper_row_alpha(m[2], precision),
            }
        )

    sweep = []
    cells: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        cells[(_model_key(r), r["n_sequences"])].append(r)
    for (m, n), rs in sorted(cells.items(), key=lambda kv: ((kv[0][0][2] or 0), kv[0][1] or 0)):
        stops: dict[str, int] = defaultdict(int)
        for r in rs:
            stops[str(r["stop_reason"])] += 1
        sweep.append(
            {
                "n_layer": m[0],
                "n_embd": m[1],
                "n_params": m[2],
                "label": model_label(m[0], m[1]),
                "n_sequences": n,
                "data_bits": rs[0]["data_bits"],
                "n_runs": len(rs),
                "seeds": sorted(r["seed"] for r in rs),
                "ratio": None,  # filled by _fill_ratios once every group's alpha is known
                "mem_bits": describe(r["mem_bits"] for r in rs),
                "bits_per_param": describe(r["bits_per_param"] for r in rs),
                "bits_per_param_paper_conv": describe(r["bits_per_param_paper_conv"] for r in rs),
                "mem_fraction": describe(r["mem_fraction"] for r in rs),
                "heldout_bits_per_token": describe(r["heldout_bits_per_token"] for r in rs),
                "n_converged": sum(1 for r in rs if r["converged"] == 1),
                "n_budget_stopped": sum(r["budget_stopped"] for r in rs),
                "stop_reasons": dict(stops),
                "curve_rel_change": describe(r["curve_rel_change"] for r in rs),
            }
        )
    runs = [
        {
            **_brief(r),
            "mem_bits": r["mem_bits"],
            "stop_reason": r["stop_reason"],
            "steps": r["steps"],
            "converged": r["converged"],
            "budget_stopped": r["budget_stopped"],
        }
        for r in sorted(rows, key=lambda r: (r["n_params"] or 0, r["n_sequences"] or 0, r["seed"]))
    ]
    seq_lens = unique(r["seq_len"] for r in rows if r["seq_len"])
    n_cap_runs = sum(len(cap[m]) for m in models)
    return {
        "method": method,
        "precision": precision,
        "presets": sorted({str(r["preset"]) for r in rows}),
        "seeds": seeds,
        "seeds_used": complete,
        "seeds_incomplete": [s for s in seeds if s not in complete],
        "models": model_rows,
        **alphas,
        "per_seed": per_seed,
        "paper_alpha_mean": PAPER_ALPHA_MEAN.get(precision),
        "paper_alpha_slope": paper_alpha_slope(precision),
        "seq_len": seq_lens[0] if len(seq_lens) == 1 else None,
        "n_capacity_runs": n_cap_runs,
        "n_capacity_runs_budget": sum(m["n_budget_stopped"] for m in model_rows),
        "n_capacity_runs_data_bound": sum(m["n_data_bound"] for m in model_rows),
        "preset_about": preset_about([r["record"] for r in rows]),
        "sweep": sweep,
        "runs": runs,
    }


def _fill_ratios(group: dict, alpha: float, source: str) -> None:
    """Dataset-to-capacity ratio data_bits / (alpha * P) of each sweep cell, and the double-descent table."""
    group["alpha_for_ratio"], group["alpha_for_ratio_source"] = alpha, source
    for c in group["sweep"]:
        c["ratio"] = c["data_bits"] / (alpha * c["n_params"]) if c["data_bits"] is not None and c["n_params"] else None
    group["double_descent"] = [
        {
            "label": c["label"],
            "n_params": c["n_params"],
            "n_sequences": c["n_sequences"],
            "ratio": c["ratio"],
            "heldout_bits_per_token": c["heldout_bits_per_token"]["mean"],
            "heldout_ci": [c["heldout_bits_per_token"]["ci_low"], c["heldout_bits_per_token"]["ci_high"]],
        }
        for c in sorted(group["sweep"], key=lambda c: (c["n_params"] or 0, c["ratio"] or 0))
    ]


def _method_deltas(groups: list[dict], reference: str) -> list[dict]:
    """alpha(method) - alpha(reference) per seed, paired by seed, within a precision and over the same models."""
    out = []
    refs = {g["precision"]: g for g in groups if g["method"] == reference}
    for g in groups:
        ref = refs.get(g["precision"])
        if ref is None or g is ref:
            continue
        same_models = [m["n_params"] for m in g["models"]] == [m["n_params"] for m in ref["models"]]
        a = {p["seed"]: p for p in g["per_seed"]}
        b = {p["seed"]: p for p in ref["per_seed"]}
        shared = sorted(set(a) & set(b)) if same_models else []
        row = {
            "method": g["method"],
            "reference": reference,
            "precision": g["precision"],
            "seeds": shared,
            "same_models": same_models,
        }
        for key in ("alpha_slope", "alpha_mean"):
            row[key] = describe(a[s][key] - b[s][key] for s in shared)
        out.append(row)
    return out
