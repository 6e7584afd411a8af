"""Memorization analysis over `text_memorization` records (capacity-paper.md sections 1, 3 and 3.5).

Grouping: method x precision; inside a group, models are (n_layer, n_embd, n_params) and a *cell* is (model, N):
the seeds of one training-set size. Usable runs: status "ok" with the task's metrics and `summary.sizing`; others
are listed as excluded. Intervals are 95% Student-t over seeds (`gapt_bench.results.stats.describe`), None with one seed.

Per model, against N (the sweep):

- Unintended memorization (section 1): the total mem_U of the training set against the same-size reference, per
  cell. The paper's text finding is a rise then a fall (small sets are memorized whole; large ones are
  generalized). `mem_u.rises_then_falls` says whether the largest mean lies strictly inside the N range and above
  both ends; `mem_u.peak_bits_per_param` (the peak over P) is a lower bound on what unintended memorization used.
- Double descent (section 3): test CE against the realised data-to-capacity ratio (dataset information from the
  reference's code lengths over alpha * P, one x per cell: the mean over its seeds) with
  `memorization.double_descent_peak`: the peak is "located" only when bracketed, and compared with ratio 1 within a
  factor 2. Also per seed: the ratio at which that seed's test CE is highest (its own realised ratios), summarised
  as a geometric mean with a t-interval of log2 over seeds.
- Extraction (section 3): training and non-member extraction rates per prefix against N; at the largest N the
  per-seed difference train - test (paired within each run) with its t-interval. `extraction_convergence` is the
  one rule for "converges to the test rate", here and in `gapt-bench paper`: the whole interval lies within
  ±EXTRACTION_BAND (one percentage point); "does not" when it lies wholly outside; else inconclusive (an interval
  that holds 0 is no evidence of convergence when it is wide, as with 3 seeds).
- Membership inference (section 3.5): F1 against |D|/P (N over the run's parameter count), beside the paper's law in
  its corrected form (`memorization.mi_law_paper_corrected`) and a law of the same form fitted to the group's runs
  (`memorization.fit_mi_law`, on |D|/P, then on log10 |D|/P if that fails). The law's error: per seed, the RMS of
  (observed F1 - law) over that seed's runs; mean and t-interval over seeds.

Methods against the reference method (default baseline): per cell, the per-seed difference (paired by seed: a seed
fixes the training set, the initialisation and the reference model) of test CE, mem_U, the longest-prefix training
extraction and MI F1. The report's own comparisons (`gapt-bench report`) test the same metrics with Holm.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from gapt_bench.results.analysis.common import clean, mean_of
from gapt_bench.results.analysis.groups import model_label, precision_of, preset_about
from gapt_bench.results.analysis.paper import (
    DD_FACTOR,
    EXTRACTION_BAND,
    MEMORIZATION_TASK,
)
from gapt_bench.results.stats import describe

DELTA_METRICS = ("test_ce", "mem_u_bits", "mi_f1")


def _estimators():
    """`gapt_bench.results.analysis.laws`, imported on first use (it imports torch; the other analyses do not)."""
    from gapt_bench.results.analysis import laws

    return laws


def _prefixes(metrics: dict) -> list[int]:
    out = []
    for k in metrics:
        if k.startswith("extract_train_p") and k[len("extract_train_p") :].isdigit():
            out.append(int(k[len("extract_train_p") :]))
    return sorted(out)


def _run_row(r: dict) -> dict[str, Any]:
    cfg = r.get("config") or {}
    model, data = cfg.get("model") or {}, cfg.get("data") or {}
    m, s = r.get("metrics") or {}, r.get("summary") or {}
    z = s.get("sizing") or {}
    n_params = r.get("n_params") or z.get("n_params")
    n_seq = z.get("n_sequences", data.get("n_sequences"))
    prefixes = _prefixes(m)
    return {
        "run_id": r.get("run_id"),
        "method": r.get("method"),
        "seed": r.get("seed"),
        "preset": r.get("preset"),
        "status": r.get("status"),
        "precision": precision_of(r),
        "n_layer": model.get("n_layer"),
        "n_embd": model.get("n_embd"),
        "n_params": n_params,
        "label": model_label(model.get("n_layer"), model.get("n_embd")),
        "n_sequences": int(n_seq) if n_seq is not None else None,
        "ratio": z.get("capacity_ratio"),
        "ratio_requested": z.get("capacity_ratio_requested", data.get("capacity_ratio")),
        "d_over_p": z.get("d_over_p", (n_seq / n_params) if n_seq and n_params else None),
        "data_info_bits": z.get("data_info_bits"),
        "capacity_bits": z.get("capacity_bits"),
        "alpha": z.get("alpha", data.get("alpha")),
        "epochs": z.get("epochs"),
        "test_ce": m.get("test_ce"),
        "train_ce": m.get("train_ce"),
        "mem_u_bits": m.get("mem_u_bits"),
        "mem_u_nonmember": m.get("mem_u_nonmember_bits_per_seq"),
        "mem_u_oracle_bits": m.get("mem_u_oracle_bits"),
        "ref_test_ce": ((s.get("references") or {}).get("ref") or {}).get("test_ce"),
        "extraction": {p: (m.get(f"extract_train_p{p}"), m.get(f"extract_test_p{p}")) for p in prefixes},
        "prefixes": prefixes,
        "mi_f1": m.get("mi_f1"),
        "mi_auc": m.get("mi_auc"),
        "data": s.get("data") or {},
        "record": r,
    }


def _brief(row: dict) -> dict:
    return {k: row[k] for k in ("run_id", "method", "seed", "precision", "label", "n_params", "n_sequences")}


def _usable(row: dict) -> str | None:
    """None when the run can be used, else why not."""
    if row["status"] != "ok":
        return f"status {row['status']}"
    if row["test_ce"] is None or row["mem_u_bits"] is None or row["mi_f1"] is None:
        return "metrics missing"
    if row["ratio"] is None or row["n_params"] is None or row["n_sequences"] is None:
        return "summary.sizing missing"
    return None


def analyse_memorization(records: Iterable[dict], reference: str = "baseline") -> dict[str, Any]:
    """{"kind": "memorization", "groups", "method_deltas", "excluded", "data", "paper"} of the text_memorization
    records among `records` (other tasks are ignored)."""
    M = _estimators()
    rows = [_run_row(r) for r in records if r.get("task") == MEMORIZATION_TASK]
    usable, excluded = [], []
    for row in rows:
        why = _usable(row)
        if why is None:
            usable.append(row)
        else:
            excluded.append({**_brief(row), "reason": why})
    by_group: dict[tuple, list[dict]] = defaultdict(list)
    for row in usable:
        by_group[(row["method"], row["precision"])].append(row)
    groups = [_analyse_group(method, precision, rs) for (method, precision), rs in sorted(by_group.items())]
    return clean(
        {
            "kind": "memorization",
            "task": MEMORIZATION_TASK,
            "reference": reference,
            "n_records": len(rows),
            "n_usable": len(usable),
            "groups": groups,
            "method_deltas": _method_deltas(usable, reference),
            "excluded": excluded,
            "data": _data_provenance(usable),
            "paper": {
                "mi_law": {
                    "form": "F1 = 0.5 * (1 + c1 * sigmoid(c2 * (k * |D|/P + c3)))",
                    "c1": M.MI_C1,
                    "c2": M.MI_C2,
                    "c3": M.MI_C3,
                    "k": M.MI_K,
                    "note": "corrected form of section 3.5 (the printed Capacity/|D| argument is inconsistent)",
                },
                "double_descent_ratio": 1.0,
                "extraction_band": EXTRACTION_BAND,
                "dd_factor": DD_FACTOR,
            },
        }
    )


def _data_provenance(rows: Sequence[dict]) -> dict[str, Any]:
    """What the runs' data were: sources, dedup counts, and the largest non-member/pool overlap any run saw."""
    datas = [r["data"] for r in rows if r["data"]]
    if not datas:
        return {}
    keys = (
        "train_candidates",
        "train_duplicates_removed",
        "heldout_candidates",
        "heldout_duplicates_removed",
        "heldout_equal_to_training_removed",
        "pool",
        "nonmembers",
    )
    first = datas[0]
    return {
        "sources": sorted({str(d.get("source")) for d in datas}),
        "tokenizers": sorted({str(d.get("tokenizer")) for d in datas}),
        "cuts": sorted({str(d.get("cut")) for d in datas}),
        **{k: first.get(k) for k in keys},
        "max_nonmember_pool_overlap": max(int(d.get("nonmember_pool_overlap") or 0) for d in datas),
        "n_runs": len(datas),
    }


def _cells(rows: list[dict]) -> list[dict]:
    """One cell per N (rows of one model), sorted by N."""
    M = _estimators()
    by_n: dict[int, list[dict]] = defaultdict(list)
    for r in rows:
        by_n[r["n_sequences"]].append(r)
    cells = []
    prefixes = sorted({p for r in rows for p in r["prefixes"]})
    for n, rs in sorted(by_n.items()):
        rs = sorted(rs, key=lambda r: str(r["seed"]))
        d_over_p = mean_of(r["d_over_p"] for r in rs)
        cells.append(
            {
                "n_sequences": n,
                "n_runs": len(rs),
                "seeds": [r["seed"] for r in rs],
                "ratio": describe(r["ratio"] for r in rs),
                "ratio_requested": rs[0]["ratio_requested"],
                "d_over_p": d_over_p,
                "data_info_bits": mean_of(r["data_info_bits"] for r in rs),
                "epochs": mean_of(r["epochs"] for r in rs),
                "test_ce": describe(r["test_ce"] for r in rs),
                "train_ce": describe(r["train_ce"] for r in rs),
                "ref_test_ce": mean_of(r["ref_test_ce"] for r in rs),
                "mem_u_bits": describe(r["mem_u_bits"] for r in rs),
                "mem_u_per_seq": describe(r["mem_u_bits"] / n for r in rs),
                "mem_u_nonmember": describe(r["mem_u_nonmember"] for r in rs),
                "mem_u_oracle_bits": describe(r["mem_u_oracle_bits"] for r in rs if r["mem_u_oracle_bits"] is not None),
                "extraction": {
                    str(p): {
                        "train": describe(r["extraction"].get(p, (None, None))[0] for r in rs),
                        "test": describe(r["extraction"].get(p, (None, None))[1] for r in rs),
                    }
                    for p in prefixes
                },
                "mi_f1": describe(r["mi_f1"] for r in rs),
                "mi_auc": describe(r["mi_auc"] for r in rs),
                "mi_law": float(M.mi_law_paper_corrected(d_over_p)) if d_over_p is not None else None,
            }
        )
    return cells


def _mem_u_trend(cells: list[dict], n_params: float | None) -> dict[str, Any]:
    means = [c["mem_u_bits"]["mean"] for c in cells]
    if not means:
        return {}
    i = int(np.argmax(means))
    interior = 0 < i < len(means) - 1
    rises_falls = bool(interior and means[i] > means[0] and means[i] > means[-1])
    peak = means[i]
    return {
        "peak_n": cells[i]["n_sequences"],
        "peak_bits": peak,
        "peak_ratio": cells[i]["ratio"]["mean"],
        "peak_bits_per_param": peak / n_params if n_params else None,
        "rises_then_falls": rises_falls,
        "first_bits": means[0],
        "last_bits": means[-1],
        "statement": (
            f"mem_U rises to {peak:.4g} bits at N={cells[i]['n_sequences']} then falls to "
            f"{means[-1]:.4g} at N={cells[-1]['n_sequences']}"
            if rises_falls
            else f"largest mem_U ({peak:.4g} bits) at N={cells[i]['n_sequences']}, the "
            f"{'smallest' if i == 0 else 'largest' if i == len(means) - 1 else 'an interior'} N "
            f"measured: no rise then fall in this range"
        ),
    }


def _double_descent(rows: list[dict], cells: list[dict]) -> dict[str, Any]:
    M = _estimators()
    cell_ratio = {c["n_sequences"]: c["ratio"]["mean"] for c in cells}
    ratios = [cell_ratio[r["n_sequences"]] for r in rows]
    res = M.double_descent_peak(ratios, [r["test_ce"] for r in rows], factor=DD_FACTOR, group_rtol=1e-9)
    res.pop("per_ratio", None)  # the sweep table has the per-cell means
    by_seed: dict[Any, list[dict]] = defaultdict(list)
    for r in rows:
        by_seed[r["seed"]].append(r)
    seed_peaks, seed_located = [], []
    for seed, rs in sorted(by_seed.items(), key=lambda kv: str(kv[0])):
        if len(rs) < len(cells) or len(rs) < 3:
            continue  # a seed missing sizes has no comparable curve
        rs = sorted(rs, key=lambda r: r["n_sequences"])
        j = int(np.argmax([r["test_ce"] for r in rs]))
        seed_peaks.append({"seed": seed, "peak_ratio": rs[j]["ratio"], "located": 0 < j < len(rs) - 1})
        seed_located.append(0 < j < len(rs) - 1)
    logs = [math.log2(p["peak_ratio"]) for p in seed_peaks if p["peak_ratio"] and p["peak_ratio"] > 0]
    d = describe(logs)
    res["per_seed"] = seed_peaks
    res["per_seed_located"] = sum(seed_located)
    res["seed_peak_ratio_geomean"] = 2 ** d["mean"] if d["mean"] is not None else None
    res["seed_peak_ratio_ci"] = [2 ** d["ci_low"], 2 ** d["ci_high"]] if d["ci_low"] is not None else None
    res["ratio_range"] = [min(cell_ratio.values()), max(cell_ratio.values())] if cell_ratio else None
    return res


def extraction_convergence(gap: dict, max_train: float | None, band: float = EXTRACTION_BAND) -> tuple[str, str]:
    """ "converges", "does not" or "inconclusive", and why, for the train - test extraction gap (`describe` of the
    per-seed gaps at the largest N). Converging needs the whole 95% CI within ±band, and some training sequence
    extracted at some N (`max_train` > 0; else there was nothing to converge)."""
    if gap.get("mean") is None:
        return "inconclusive", "no run with both extraction rates"
    if gap.get("ci_low") is None:
        return "inconclusive", "one seed: no interval"
    lo, hi = gap["ci_low"], gap["ci_high"]
    if hi < -band or lo > band:
        return "does not", f"CI outside 0 ± {band:g}"
    if not -band <= lo <= hi <= band:
        return "inconclusive", f"CI reaches past 0 ± {band:g}"
    if not max_train or max_train <= 0:
        return "inconclusive", "no training sequence was extracted at any N: nothing to converge"
    return "converges", f"CI within 0 ± {band:g}"


def _extraction(rows: list[dict], cells: list[dict]) -> dict[str, Any]:
    """Per prefix: the training rate against N, and the train - test gap of each run at the largest N (by seed)."""
    if not cells:
        return {}
    largest = cells[-1]["n_sequences"]
    at_largest = [r for r in rows if r["n_sequences"] == largest]
    out = {}
    for p in sorted({p for r in rows for p in r["prefixes"]}):
        key = str(p)
        train = [c["extraction"][key]["train"]["mean"] for c in cells]
        test = [c["extraction"][key]["test"]["mean"] for c in cells]
        by_seed = {
            str(r["seed"]): r["extraction"][p][0] - r["extraction"][p][1]
            for r in at_largest
            if r["extraction"].get(p, (None, None))[0] is not None and r["extraction"][p][1] is not None
        }
        gaps = describe(by_seed.values())
        valid = [t for t in train if t is not None]
        max_train = max(valid) if valid else None
        verdict, reason = extraction_convergence(gaps, max_train)
        out[key] = {
            "train_by_n": train,
            "test_by_n": test,
            "largest_n": largest,
            "gap_at_largest_n": gaps,
            "gap_by_seed": by_seed,
            "falls": bool(len(valid) >= 2 and valid[0] > valid[-1]),
            "max_train": max_train,
            "convergence": verdict,
            "convergence_reason": reason,
            "converges_to_test": verdict == "converges",
        }
    return out


def _mi_law(rows: list[dict]) -> dict[str, Any]:
    M = _estimators()
    x = np.asarray([r["d_over_p"] for r in rows], dtype=float)
    y = np.asarray([r["mi_f1"] for r in rows], dtype=float)
    law = M.mi_law_paper_corrected(x)
    resid = y - law
    by_seed: dict[Any, list[float]] = defaultdict(list)
    for r, e in zip(rows, resid):
        by_seed[r["seed"]].append(float(e))
    per_seed_rms = {str(s): math.sqrt(sum(e * e for e in es) / len(es)) for s, es in by_seed.items()}
    fit = M.fit_mi_law(x, y)
    fit_log = M.fit_mi_law(x, y, x_scale="log10")
    return {
        "n_points": int(x.size),
        "d_over_p_range": [float(x.min()), float(x.max())] if x.size else None,
        "rms": float(np.sqrt(np.mean(resid**2))) if x.size else None,
        "bias": float(np.mean(resid)) if x.size else None,
        "rms_per_seed": per_seed_rms,
        "rms_over_seeds": describe(per_seed_rms.values()),
        "fit": fit,
        "fit_log10": fit_log,
        "points": [
            {
                "d_over_p": float(a),
                "f1": float(b),
                "law": float(c),
                "seed": r["seed"],
                "label": r["label"],
                "n_sequences": r["n_sequences"],
            }
            for a, b, c, r in zip(x, y, law, rows)
        ],
    }


def _analyse_group(method: str, precision: str, rows: list[dict]) -> dict[str, Any]:
    models = sorted({(r["n_layer"], r["n_embd"], r["n_params"]) for r in rows}, key=lambda k: (k[2] or 0, k[0] or 0))
    model_rows = []
    for key in models:
        rs = [r for r in rows if (r["n_layer"], r["n_embd"], r["n_params"]) == key]
        cells = _cells(rs)
        model_rows.append(
            {
                "n_layer": key[0],
                "n_embd": key[1],
                "n_params": key[2],
                "label": model_label(key[0], key[1]),
                "seeds": sorted({r["seed"] for r in rs}, key=str),
                "cells": cells,
                "mem_u": _mem_u_trend(cells, key[2]),
                "double_descent": _double_descent(rs, cells),
                "extraction": _extraction(rs, cells),
                "mi_falls": bool(len(cells) >= 2 and cells[0]["mi_f1"]["mean"] > cells[-1]["mi_f1"]["mean"]),
                "mi_first_last": [cells[0]["mi_f1"]["mean"], cells[-1]["mi_f1"]["mean"]] if cells else None,
            }
        )
    return {
        "method": method,
        "precision": precision,
        "presets": sorted({str(r["preset"]) for r in rows}),
        "seeds": sorted({r["seed"] for r in rows}, key=str),
        "models": model_rows,
        "mi_law": _mi_law(rows),
        "alpha": mean_of(r["alpha"] for r in rows),
        "prefixes": sorted({p for r in rows for p in r["prefixes"]}),
        "preset_about": preset_about([r["record"] for r in rows]),
    }


def _method_deltas(rows: list[dict], reference: str) -> list[dict]:
    """Per (precision, model, N) cell: method - reference, paired by seed, for DELTA_METRICS and the longest
    prefix's training extraction."""
    cells: dict[tuple, dict[str, dict[Any, dict]]] = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        cells[(r["precision"], r["label"], r["n_params"], r["n_sequences"])][r["method"]][r["seed"]] = r
    out = []
    for (precision, label, n_params, n), by_method in sorted(
        cells.items(), key=lambda kv: (kv[0][0], kv[0][2] or 0, kv[0][3] or 0)
    ):
        ref = by_method.get(reference)
        if ref is None:
            continue
        for method, runs in sorted(by_method.items()):
            if method == reference:
                continue
            shared = sorted(set(runs) & set(ref), key=str)
            row = {
                "method": method,
                "reference": reference,
                "precision": precision,
                "label": label,
                "n_params": n_params,
                "n_sequences": n,
                "seeds": shared,
            }
            for k in DELTA_METRICS:
                row[k] = describe(
                    runs[s][k] - ref[s][k] for s in shared if runs[s][k] is not None and ref[s][k] is not None
                )
            prefixes = sorted(set(runs[shared[0]]["prefixes"]) if shared else set())
            if prefixes:
                p = prefixes[-1]
                row["extract_train_prefix"] = p
                row["extract_train"] = describe(
                    runs[s]["extraction"][p][0] - ref[s]["extraction"][p][0]
                    for s in shared
                    if p in runs[s]["extraction"] and p in ref[s]["extraction"]
                )
            out.append(row)
    return out
