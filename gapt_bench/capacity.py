"""Capacity analysis over `synthetic_capacity` records: capacity per model, alpha (bits/parameter), the
memorization sweep and the double-descent table (capacity-paper.md sections 2-3).

Grouping: method x precision; inside a group, models are (n_layer, n_embd, n_params) and runs are (model, N, seed).

- Usable runs: status "ok" and `heldout_ok` == 1. Runs that failed the held-out sanity check are *flagged* (listed,
  never used); failed or diverged runs are listed as excluded.
- Per seed: capacity(model) = max over N of `mem_bits` (strict convention, see the task).
- alpha per seed, over the models that seed has in full: the least-squares slope through the origin of capacity
  against n_params (sum c*P / sum P^2), and the mean of the per-model ratios capacity/P. Seeds missing a model
  are left out of alpha (listed in `seeds_incomplete`), so every per-seed alpha covers the same models.
- Intervals: 95% Student-t over seeds (`gapt_bench.stats.describe`); None with fewer than two seeds.
- Methods against the reference method (default baseline) in the same precision: the per-seed difference of alpha,
  paired by seed (seeds share data and initialisation), with its t-interval.
- Double descent: held-out bits/token against ratio = data_bits / (alpha * P), with one alpha per precision so
  that methods share the x-axis: the reference method's slope (else the group's own, else the paper's 3.64).

Everything returns plain dicts and lists; `render_capacity` prints them as rich tables.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Iterable, Sequence

from gapt_bench.stats import describe

TASK = "synthetic_capacity"
PAPER_ALPHA_SLOPE = 3.64  # bf16 regression slope (capacity-paper.md section 0)
PAPER_ALPHA_MEAN = {"bf16": 3.51, "fp32": 3.83}
# Table 1 of the paper (V=2048, S=64): n_params -> (L, d, alpha fp32, alpha bf16)
PAPER_ROWS = {80_352: (1, 32, 4.23, 3.93), 468_864: (1, 128, 3.65, 3.61), 667_136: (2, 128, 3.99, 3.89),
              3_700_224: (4, 256, 3.68, 3.51), 6_859_264: (8, 256, 3.96, 3.65)}


def slope_through_origin(params: Sequence[float], capacities: Sequence[float]) -> float | None:
    """Least-squares slope of capacity = alpha * P (no intercept): sum(c*P) / sum(P^2)."""
    den = sum(p * p for p in params)
    return sum(c * p for c, p in zip(capacities, params)) / den if den > 0 else None


# ---------------------------------------------------------------------------------------------------------------
# reading records


def precision_of(record: dict) -> str:
    """fp32, bf16 or bf16-weights: the task's summary, else the config, else what "auto" means on the device."""
    summary = record.get("summary") or {}
    if summary.get("precision") in ("fp32", "bf16", "bf16-weights"):
        return summary["precision"]
    train = (record.get("config") or {}).get("train") or {}
    p = train.get("precision", "auto")
    if p in ("fp32", "bf16", "bf16-weights"):
        return p
    device = str((record.get("env") or {}).get("device") or train.get("device") or "cpu")
    return "bf16" if device.startswith("cuda") else "fp32"


def _run_row(r: dict) -> dict[str, Any]:
    cfg = r.get("config") or {}
    model, data = cfg.get("model") or {}, cfg.get("data") or {}
    m = r.get("metrics") or {}
    n_seq = data.get("n_sequences", m.get("n_sequences"))
    return {
        "run_id": r.get("run_id"), "method": r.get("method"), "seed": r.get("seed"), "preset": r.get("preset"),
        "precision": precision_of(r), "n_layer": model.get("n_layer"), "n_embd": model.get("n_embd"),
        "n_params": r.get("n_params"), "vocab_size": model.get("vocab_size") or data.get("vocab_size"),
        "seq_len": (cfg.get("train") or {}).get("seq_len"), "n_sequences": int(n_seq) if n_seq is not None else None,
        "status": r.get("status"), "stop_reason": r.get("stop_reason"), "steps": r.get("steps"),
        "mem_bits": m.get("mem_bits"), "data_bits": m.get("data_bits"), "bits_per_param": m.get("bits_per_param"),
        "mem_fraction": m.get("mem_fraction"), "heldout_bits_per_token": m.get("heldout_bits_per_token"),
        "heldout_ok": m.get("heldout_ok"), "converged": m.get("converged"),
        "curve_rel_change": m.get("curve_rel_change"),
        "convention": (r.get("summary") or {}).get("convention") or data.get("convention"),
    }


def _model_key(row: dict) -> tuple:
    return (row["n_layer"], row["n_embd"], row["n_params"])


def model_label(n_layer: Any, n_embd: Any) -> str:
    return f"L{n_layer}/d{n_embd}"


# ---------------------------------------------------------------------------------------------------------------
# the analysis


def analyse(records: Iterable[dict], reference: str = "baseline") -> dict[str, Any]:
    """The capacity analysis of the synthetic_capacity records among `records` (other tasks are ignored)."""
    rows = [_run_row(r) for r in records if r.get("task") == TASK]
    usable, flagged, excluded = [], [], []
    for row in rows:
        if row["status"] != "ok" or row["mem_bits"] is None:
            excluded.append({**_brief(row), "reason": f"status {row['status']}"})
        elif row["heldout_ok"] != 1:
            flagged.append({**_brief(row), "heldout_bits_per_token": row["heldout_bits_per_token"],
                            "reason": "held-out check failed (leak or accounting error)"})
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
            _fill_ratios(g, PAPER_ALPHA_SLOPE, "paper slope 3.64")
    return {"task": TASK, "n_records": len(rows), "n_usable": len(usable), "groups": groups,
            "method_deltas": _method_deltas(groups, reference), "flagged": flagged, "excluded": excluded,
            "conventions": sorted({r["convention"] for r in rows if r["convention"]}),
            "paper": {"alpha_slope_bf16": PAPER_ALPHA_SLOPE, "alpha_mean": dict(PAPER_ALPHA_MEAN)}}


def _brief(row: dict) -> dict:
    return {k: row[k] for k in ("run_id", "method", "seed", "precision", "n_layer", "n_embd", "n_params",
                                "n_sequences")}


def _analyse_group(method: str, precision: str, rows: list[dict]) -> dict[str, Any]:
    models = sorted({_model_key(r) for r in rows}, key=lambda k: (k[2] or 0, k[0] or 0, k[1] or 0))
    # capacity per (model, seed) = max over N
    cap: dict[tuple, dict[int, dict]] = defaultdict(dict)
    for r in rows:
        best = cap[_model_key(r)].get(r["seed"])
        if best is None or r["mem_bits"] > best["mem_bits"]:
            cap[_model_key(r)][r["seed"]] = r
    seeds = sorted({r["seed"] for r in rows})
    complete = [s for s in seeds if all(s in cap[m] for m in models)]
    per_seed = []
    for s in complete:
        params = [float(m[2]) for m in models]
        caps = [float(cap[m][s]["mem_bits"]) for m in models]
        per_seed.append({"seed": s, "alpha_slope": slope_through_origin(params, caps),
                         "alpha_mean": sum(c / p for c, p in zip(caps, params)) / len(params)})
    alpha_slope = describe(p["alpha_slope"] for p in per_seed)
    alpha_mean = describe(p["alpha_mean"] for p in per_seed)

    model_rows = []
    for m in models:
        seed_rows = cap[m]
        caps = [seed_rows[s]["mem_bits"] for s in sorted(seed_rows)]
        best_n = sorted(seed_rows[s]["n_sequences"] for s in seed_rows)
        paper = PAPER_ROWS.get(m[2])
        model_rows.append({
            "n_layer": m[0], "n_embd": m[1], "n_params": m[2], "label": model_label(m[0], m[1]),
            "seeds": sorted(seed_rows), "capacity": describe(caps),
            "bits_per_param": describe(c / m[2] for c in caps),
            "best_n": best_n, "best_n_median": best_n[len(best_n) // 2] if best_n else None,
            "best_is_largest_n": all(seed_rows[s]["n_sequences"] == max(r["n_sequences"] for r in rows
                                                                        if _model_key(r) == m and r["seed"] == s)
                                     for s in seed_rows),
            "paper_alpha": (paper[2] if precision == "fp32" else paper[3]) if paper else None,
        })

    sweep = []
    cells: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        cells[(_model_key(r), r["n_sequences"])].append(r)
    for (m, n), rs in sorted(cells.items(), key=lambda kv: ((kv[0][0][2] or 0), kv[0][1] or 0)):
        data_bits = rs[0]["data_bits"]
        stops: dict[str, int] = defaultdict(int)
        for r in rs:
            stops[str(r["stop_reason"])] += 1
        sweep.append({
            "n_layer": m[0], "n_embd": m[1], "n_params": m[2], "label": model_label(m[0], m[1]), "n_sequences": n,
            "data_bits": data_bits, "n_runs": len(rs), "seeds": sorted(r["seed"] for r in rs),
            "ratio": None,  # filled by _fill_ratios once every group's alpha is known
            "mem_bits": describe(r["mem_bits"] for r in rs),
            "bits_per_param": describe(r["bits_per_param"] for r in rs),
            "mem_fraction": describe(r["mem_fraction"] for r in rs),
            "heldout_bits_per_token": describe(r["heldout_bits_per_token"] for r in rs),
            "n_converged": sum(1 for r in rs if r["converged"] == 1), "stop_reasons": dict(stops),
            "curve_rel_change": describe(r["curve_rel_change"] for r in rs),
        })
    runs = [{**_brief(r), "mem_bits": r["mem_bits"], "stop_reason": r["stop_reason"], "steps": r["steps"],
             "converged": r["converged"]} for r in sorted(rows, key=lambda r: (r["n_params"] or 0, r["n_sequences"] or 0, r["seed"]))]
    return {
        "method": method, "precision": precision, "presets": sorted({str(r["preset"]) for r in rows}),
        "seeds": seeds, "seeds_used": complete, "seeds_incomplete": [s for s in seeds if s not in complete],
        "models": model_rows, "alpha_slope": alpha_slope, "alpha_mean": alpha_mean, "per_seed": per_seed,
        "paper_alpha_mean": PAPER_ALPHA_MEAN.get(precision), "paper_alpha_slope": PAPER_ALPHA_SLOPE,
        "sweep": sweep, "runs": runs,
    }


def _fill_ratios(group: dict, alpha: float, source: str) -> None:
    """Dataset-to-capacity ratio data_bits / (alpha * P) of each sweep cell, and the double-descent table."""
    group["alpha_for_ratio"], group["alpha_for_ratio_source"] = alpha, source
    for c in group["sweep"]:
        c["ratio"] = c["data_bits"] / (alpha * c["n_params"]) if c["data_bits"] is not None and c["n_params"] else None
    group["double_descent"] = [
        {"label": c["label"], "n_params": c["n_params"], "n_sequences": c["n_sequences"], "ratio": c["ratio"],
         "heldout_bits_per_token": c["heldout_bits_per_token"]["mean"],
         "heldout_ci": [c["heldout_bits_per_token"]["ci_low"], c["heldout_bits_per_token"]["ci_high"]]}
        for c in sorted(group["sweep"], key=lambda c: (c["n_params"] or 0, c["ratio"] or 0))]


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
        row = {"method": g["method"], "reference": reference, "precision": g["precision"], "seeds": shared,
               "same_models": same_models}
        for key in ("alpha_slope", "alpha_mean"):
            row[key] = describe(a[s][key] - b[s][key] for s in shared)
        out.append(row)
    return out


# ---------------------------------------------------------------------------------------------------------------
# rendering


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "-"
        return f"{v:.{digits}g}" if abs(v) < 1e4 else f"{v:.3e}"
    return str(v)


def _ci(d: dict, digits: int = 3) -> str:
    """'mean [low, high]' (or just the mean with one value)."""
    if d.get("mean") is None:
        return "-"
    if d.get("ci_low") is None:
        return f"{_fmt(d['mean'], digits)} (n={d['n']})"
    return f"{_fmt(d['mean'], digits)} [{_fmt(d['ci_low'], digits)}, {_fmt(d['ci_high'], digits)}]"


def render_capacity(analysis: dict, console: Any = None) -> None:
    """Print the capacity tables: alpha per method, capacity per model, the sweep (with double descent), flags."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=200)
    if not analysis.get("groups") and not analysis.get("flagged") and not analysis.get("excluded"):
        return
    conv = ", ".join(analysis.get("conventions") or ["?"])

    t = Table(title=f"synthetic_capacity: alpha (bits/parameter), 95% t-CI over seeds; convention {conv}")
    for col in ("method", "precision", "models", "seeds", "alpha slope (through 0)", "alpha mean of ratios",
                "paper", "presets"):
        t.add_column(col, justify="left" if col in ("method", "precision", "presets") else "right")
    for g in analysis["groups"]:
        paper = f"slope {g['paper_alpha_slope']}, mean {g['paper_alpha_mean']}"
        t.add_row(g["method"], g["precision"], str(len(g["models"])), f"{len(g['seeds_used'])}/{len(g['seeds'])}",
                  _ci(g["alpha_slope"]), _ci(g["alpha_mean"]), paper, ",".join(g["presets"]))
    console.print(t)

    if analysis.get("method_deltas"):
        t = Table(title="alpha(method) - alpha(reference), paired by seed, 95% t-CI")
        for col in ("method", "reference", "precision", "seeds", "delta slope", "delta mean"):
            t.add_column(col, justify="right" if col.startswith(("delta", "seeds")) else "left")
        for d in analysis["method_deltas"]:
            t.add_row(d["method"], d["reference"], d["precision"], str(len(d["seeds"])),
                      _ci(d["alpha_slope"]), _ci(d["alpha_mean"]))
        console.print(t)

    t = Table(title="capacity per model = max over N of mem_bits (per seed), 95% t-CI over seeds")
    for col in ("method", "precision", "model", "params", "seeds", "capacity (bits)", "bits/param", "best N",
                "best = largest N", "paper alpha"):
        t.add_column(col, justify="left" if col in ("method", "precision", "model") else "right")
    for g in analysis["groups"]:
        for m in g["models"]:
            t.add_row(g["method"], g["precision"], m["label"], f"{m['n_params']:,}", str(len(m["seeds"])),
                      _ci(m["capacity"], 4), _ci(m["bits_per_param"]), _fmt(m["best_n_median"]),
                      "yes" if m["best_is_largest_n"] else "no", _fmt(m["paper_alpha"]))
    console.print(t)

    t = Table(title="memorization sweep (mean over seeds) and double descent: ratio = data bits / (alpha * P)")
    for col in ("method", "precision", "model", "N", "data bits", "ratio", "mem bits", "mem/data", "bits/param",
                "held-out bits/tok", "converged", "stop", "last-window change"):
        t.add_column(col, justify="left" if col in ("method", "precision", "model", "stop") else "right")
    for g in analysis["groups"]:
        for c in g["sweep"]:
            stops = ", ".join(f"{k} {v}" for k, v in sorted(c["stop_reasons"].items()))
            t.add_row(g["method"], g["precision"], c["label"], str(c["n_sequences"]), _fmt(c["data_bits"], 4),
                      _fmt(c["ratio"]), _fmt(c["mem_bits"]["mean"], 4), _fmt(c["mem_fraction"]["mean"]),
                      _ci(c["bits_per_param"]), _fmt(c["heldout_bits_per_token"]["mean"]),
                      f"{c['n_converged']}/{c['n_runs']}", stops, _fmt(c["curve_rel_change"]["mean"], 2))
    console.print(t)

    if analysis.get("flagged") or analysis.get("excluded"):
        t = Table(title="runs not used for capacity")
        for col in ("run", "method", "seed", "model", "N", "reason"):
            t.add_column(col)
        for f in analysis.get("flagged", []) + analysis.get("excluded", []):
            reason = f["reason"] + (f" (held-out {f['heldout_bits_per_token']:.3g} bits/token)"
                                    if f.get("heldout_bits_per_token") is not None else "")
            t.add_row(str(f["run_id"]), str(f["method"]), str(f["seed"]), model_label(f["n_layer"], f["n_embd"]),
                      str(f["n_sequences"]), reason)
        console.print(t)
