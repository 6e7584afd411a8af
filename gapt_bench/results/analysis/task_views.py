"""Tables of the task-level analyses: capacity (alpha per model, the plateau) and text memorization (double
descent, extraction, the membership law)."""

from __future__ import annotations

from gapt_bench.results.analysis.groups import (
    model_label,
)
from gapt_bench.results.analysis.tables import (
    Table,
    fmt,
    fmt_mean_interval,
)


def _paper_figure(g: dict) -> str:
    slope = f"slope {g['paper_alpha_slope']:g}, " if g.get("paper_alpha_slope") is not None else "no slope, "
    mean = f"mean {g['paper_alpha_mean']:g}" if g.get("paper_alpha_mean") is not None else "no mean"
    return slope + mean


def _budget(n: int, of: int) -> str:
    return f"{n}/{of} budget" if n else f"0/{of}"


def capacity_tables(a: dict, include_layers: bool = False) -> list[Table]:
    """alpha per method (both conventions, beside the paper's figures), deltas, capacity per model, the sweep."""
    if not a.get("groups") and not a.get("flagged") and not a.get("excluded"):
        return []
    conv = ", ".join(a.get("conventions") or ["?"])
    budget_note = (
        "budget: runs that stopped on the step budget before their curve flattened (converged = 0); "
        "their memorized bits are a lower bound"
    )
    tables = [
        Table(
            f"synthetic_capacity: alpha (bits/parameter), 95% t-CI over seeds; runs in the {conv} convention",
            [
                ("method", "method"),
                ("precision", "precision"),
                ("models", "models"),
                ("seeds", "seeds"),
                ("slope", "alpha slope (strict)"),
                ("mean", "alpha mean (strict)"),
                ("slope_pc", "alpha slope (paper conv.)"),
                ("mean_pc", "alpha mean (paper conv.)"),
                ("paper", "paper (paper conv.)"),
                ("budget", "capacity runs on budget"),
                ("presets", "presets"),
            ],
            [
                {
                    "method": g["method"],
                    "precision": g["precision"],
                    "models": str(len(g["models"])),
                    "seeds": f"{len(g['seeds_used'])}/{len(g['seeds'])}",
                    "slope": fmt_mean_interval(g["alpha_slope"]),
                    "mean": fmt_mean_interval(g["alpha_mean"]),
                    "slope_pc": fmt_mean_interval(g["alpha_slope_paper_conv"]),
                    "mean_pc": fmt_mean_interval(g["alpha_mean_paper_conv"]),
                    "paper": _paper_figure(g),
                    "budget": _budget(g["n_capacity_runs_budget"], g["n_capacity_runs"]),
                    "presets": ",".join(g["presets"]),
                }
                for g in a["groups"]
            ],
            "strict: N(S−1)log2V minus the NLL of the predicted tokens; paper conv.: ×S/(S−1), the convention of the "
            "paper's figures (slope 3.64 is bf16; the paper quotes no fp32 slope), so compare those columns; "
            + budget_note,
        )
    ]
    if a.get("method_deltas"):
        tables.append(
            Table(
                "alpha(method) − alpha(reference), strict, paired by seed, 95% t-CI",
                [
                    ("method", "method"),
                    ("reference", "reference"),
                    ("precision", "precision"),
                    ("seeds", "seeds"),
                    ("slope", "Δ slope"),
                    ("mean", "Δ mean"),
                ],
                [
                    {
                        "method": d["method"],
                        "reference": d["reference"],
                        "precision": d["precision"],
                        "seeds": str(len(d["seeds"])),
                        "slope": fmt_mean_interval(d["alpha_slope"]),
                        "mean": fmt_mean_interval(d["alpha_mean"]),
                    }
                    for d in a["method_deltas"]
                ],
            )
        )
    tables.append(
        Table(
            "capacity per model = max over N of mem_bits (per seed), 95% t-CI over seeds",
            [
                ("method", "method"),
                ("precision", "precision"),
                ("model", "model"),
                ("params", "params"),
                ("seeds", "seeds"),
                ("capacity", "capacity (bits, strict)"),
                ("bpp", "bits/param (strict)"),
                ("bpp_pc", "bits/param (paper conv.)"),
                ("paper", "paper alpha (Table 1, paper conv.)"),
                ("best_n", "best N (median over seeds)"),
                ("largest", "best = largest N"),
                ("budget", "capacity run on budget"),
            ],
            [
                {
                    "method": g["method"],
                    "precision": g["precision"],
                    "model": m["label"],
                    "params": f"{m['n_params']:,}",
                    "seeds": str(len(m["seeds"])),
                    "capacity": fmt_mean_interval(m["capacity"], 4),
                    "bpp": fmt_mean_interval(m["bits_per_param"]),
                    "bpp_pc": fmt_mean_interval(m["bits_per_param_paper_conv"]),
                    "paper": fmt(m["paper_alpha"], 3),
                    "best_n": fmt(m["best_n_median"]),
                    "largest": "yes" if m["best_is_largest_n"] else "no",
                    "budget": _budget(m["n_budget_stopped"], len(m["seeds"])),
                }
                for g in a["groups"]
                for m in g["models"]
            ],
            budget_note,
        )
    )
    tables.append(
        Table(
            "memorization sweep (mean over seeds) and double descent: ratio = data bits / (alpha * P)",
            [
                ("method", "method"),
                ("precision", "precision"),
                ("model", "model"),
                ("n", "N"),
                ("data", "data bits"),
                ("ratio", "ratio"),
                ("mem", "mem bits"),
                ("frac", "mem/data"),
                ("bpp", "bits/param"),
                ("held", "held-out bits/tok"),
                ("conv", "converged"),
                ("budget", "stopped on budget"),
                ("stop", "stop"),
                ("change", "last-window change"),
            ],
            [
                {
                    "method": g["method"],
                    "precision": g["precision"],
                    "model": c["label"],
                    "n": str(c["n_sequences"]),
                    "data": fmt(c["data_bits"], 4),
                    "ratio": fmt(c["ratio"], 3),
                    "mem": fmt(c["mem_bits"]["mean"], 4),
                    "frac": fmt(c["mem_fraction"]["mean"], 3),
                    "bpp": fmt_mean_interval(c["bits_per_param"]),
                    "held": fmt(c["heldout_bits_per_token"]["mean"], 3),
                    "conv": f"{c['n_converged']}/{c['n_runs']}",
                    "budget": _budget(c["n_budget_stopped"], c["n_runs"]),
                    "stop": ", ".join(f"{k} {v}" for k, v in sorted(c["stop_reasons"].items())),
                    "change": fmt(c["curve_rel_change"]["mean"], 2),
                }
                for g in a["groups"]
                for c in g["sweep"]
            ],
            f"ratio with alpha = {', '.join(sorted({str(g.get('alpha_for_ratio_source')) for g in a['groups']}))}; "
            + budget_note,
        )
    )
    unused = (a.get("flagged") or []) + (a.get("excluded") or [])
    if unused:
        tables.append(
            Table(
                "runs not used for capacity",
                [
                    ("run", "run"),
                    ("method", "method"),
                    ("seed", "seed"),
                    ("model", "model"),
                    ("n", "N"),
                    ("reason", "reason"),
                ],
                [
                    {
                        "run": str(f["run_id"]),
                        "method": str(f["method"]),
                        "seed": str(f["seed"]),
                        "model": model_label(f["n_layer"], f["n_embd"]),
                        "n": str(f["n_sequences"]),
                        "reason": f["reason"]
                        + (
                            f" (held-out {f['heldout_bits_per_token']:.3g} bits/token)"
                            if f.get("heldout_bits_per_token") is not None
                            else ""
                        ),
                    }
                    for f in unused
                ],
            )
        )
    return tables


CONVERGENCE_TEXT = {
    "converges": "converges to the test rate",
    "does not": "does not converge to the test rate",
    "inconclusive": "convergence inconclusive",
}


def _mi_law_text(law: dict) -> str:
    """The paper's membership law with the constants the analysis used (its result's paper.mi_law)."""
    sign = "−" if law["c3"] < 0 else "+"
    text = f"F1 = ½[1 + {law['c1']:g}·σ({law['c2']:g}·({law['k']:g}·|D|/P {sign} {abs(law['c3']):g}))]"
    return text.replace("-", "−")


def _rates(ex: dict, side: str, prefixes: list) -> str:
    """Mean extraction rates of a cell, one per prefix: '1/0.5/0'."""
    vals = [(ex.get(str(p)) or {}).get(side, {}).get("mean") for p in prefixes]
    return "/".join("—" if v is None else f"{v:.2g}" for v in vals)


def memorization_tables(a: dict, include_layers: bool = False) -> list[Table]:
    """The text-memorization sweep, its findings per model, the membership law, method deltas, data checks."""
    if not a.get("groups") and not a.get("excluded"):
        return []
    tables = []
    sweep = []
    for g in a["groups"]:
        pre = g.get("prefixes") or []
        for m in g["models"]:
            for c in m["cells"]:
                req = c.get("ratio_requested")
                sweep.append(
                    {
                        "method": g["method"],
                        "precision": g["precision"],
                        "model": m["label"],
                        "params": f"{m['n_params']:,}",
                        "n": str(c["n_sequences"]),
                        "runs": str(c["n_runs"]),
                        "ratio": (f"{fmt(req, 3)} → " if req is not None else "") + fmt(c["ratio"]["mean"], 3),
                        "dp": fmt(c["d_over_p"], 3),
                        "epochs": fmt(c.get("epochs"), 3),
                        "test": fmt_mean_interval(c["test_ce"]),
                        "train": fmt(c["train_ce"]["mean"], 3),
                        "ref": fmt(c.get("ref_test_ce"), 3),
                        "memu": fmt_mean_interval(c["mem_u_bits"], 4),
                        "memu_nm": fmt(c["mem_u_nonmember"]["mean"], 3),
                        "oracle": fmt(c["mem_u_oracle_bits"]["mean"], 4) if c["mem_u_oracle_bits"]["n"] else "",
                        "ex_tr": _rates(c["extraction"], "train", pre),
                        "ex_te": _rates(c["extraction"], "test", pre),
                        "mi": fmt_mean_interval(c["mi_f1"]),
                        "law": fmt(c.get("mi_law"), 3),
                    }
                )
    pre_text = "/".join(str(p) for p in (a["groups"][0].get("prefixes") if a["groups"] else []))
    tables.append(
        Table(
            "text_memorization: the sweep over N (mean over seeds, 95% t-CI)",
            [
                ("method", "method"),
                ("precision", "precision"),
                ("model", "model"),
                ("params", "params"),
                ("n", "N"),
                ("runs", "runs"),
                ("ratio", "ratio (requested → realised)"),
                ("dp", "N/P"),
                ("epochs", "epochs"),
                ("test", "test CE"),
                ("train", "train CE"),
                ("ref", "reference test CE"),
                ("memu", "mem_U (bits)"),
                ("memu_nm", "non-member mem_U/seq"),
                ("oracle", "mem_U vs oracle"),
                ("ex_tr", f"extraction train (prefix {pre_text})"),
                ("ex_te", f"extraction test (prefix {pre_text})"),
                ("mi", "MI F1"),
                ("law", "MI F1, paper law"),
            ],
            sweep,
            "ratio: dataset information (the reference's code lengths, bits) / (alpha * P), requested when N was sized "
            "(an estimate) and realised (measured); CE in nats per token; mem_U: sum over the training set of "
            "max(0, log2 p_model - log2 p_ref) per sequence; MI F1: loss threshold calibrated on a split disjoint "
            "from the scored members (0.5 = chance); paper law: the corrected form of section 3.5 at the run's |D|/P",
        )
    )
    findings = []
    paper = a["paper"]  # the bands and constants the analysis applied
    band, factor = paper["extraction_band"], paper["dd_factor"]
    for g in a["groups"]:
        pre = g.get("prefixes") or []
        p = str(max(pre)) if pre else None
        for m in g["models"]:
            mu, dd = m.get("mem_u") or {}, m.get("double_descent") or {}
            ex = (m.get("extraction") or {}).get(p) or {}
            gap = ex.get("gap_at_largest_n") or {}
            first_last = m.get("mi_first_last") or [None, None]
            findings.append(
                {
                    "method": g["method"],
                    "precision": g["precision"],
                    "model": m["label"],
                    "memu": (
                        f"peak {fmt(mu.get('peak_bits'), 4)} bits at N={mu.get('peak_n')} "
                        f"({fmt(mu.get('peak_bits_per_param'), 3)} bits/param); "
                        + ("rises then falls" if mu.get("rises_then_falls") else "no rise then fall")
                    ),
                    "dd": (
                        f"peak at ratio {fmt(dd.get('peak_ratio'), 3)}; "
                        + (
                            "located"
                            + (
                                f", within ×{factor:g} of 1"
                                if dd.get("within_factor")
                                else f", not within ×{factor:g} of 1"
                            )
                            if dd.get("located")
                            else "not bracketed (no interior peak)"
                        )
                        + f"; seeds with an interior peak: {dd.get('per_seed_located', 0)}/"
                        f"{len(dd.get('per_seed') or [])}"
                    ),
                    "ex": (
                        f"p{p}: max train {fmt(ex.get('max_train'), 3)}, "
                        f"{'falls' if ex.get('falls') else 'does not fall'} with N; at N={ex.get('largest_n')} "
                        f"train − test {fmt_mean_interval(gap)}"
                        + f"; {CONVERGENCE_TEXT.get(ex.get('convergence'), 'convergence not judged')}"
                    )
                    if ex
                    else "—",
                    "mi": f"{fmt(first_last[0], 3)} → {fmt(first_last[1], 3)}"
                    + (" (falls)" if m.get("mi_falls") else ""),
                }
            )
    tables.append(
        Table(
            "text_memorization: findings per model",
            [
                ("method", "method"),
                ("precision", "precision"),
                ("model", "model"),
                ("memu", "unintended memorization vs N"),
                ("dd", "test-loss peak vs data/capacity ratio"),
                ("ex", "extraction (longest prefix)"),
                ("mi", "MI F1, smallest → largest N"),
            ],
            findings,
            "double descent: the ratio with the highest mean test CE, 'located' only when smaller and larger ratios "
            "were measured (descriptive, not a test); extraction converges when the whole 95% CI of train − test at the "
            f"largest N lies within 0 ± {band:g} (does not: wholly outside it; else inconclusive)",
        )
    )
    law_rows = []
    for g in a["groups"]:
        law = g["mi_law"]
        fits = []
        for name in ("fit", "fit_log10"):
            f = law.get(name) or {}
            if f.get("ok"):
                ps = f["params"]
                fits.append(
                    f"{f['x_scale']}: c1={ps['c1']:.3g}, a={ps['a']:.3g}, b={ps['b']:.3g}, "
                    f"midpoint N/P={fmt(f.get('midpoint_d_over_p'), 3)}, rms {fmt(f['rms'], 3)}"
                )
            else:
                fits.append(f"{f.get('x_scale', name)}: {f.get('why') or 'no fit'}")
        rng = law.get("d_over_p_range") or [None, None]
        law_rows.append(
            {
                "method": g["method"],
                "precision": g["precision"],
                "runs": str(law["n_points"]),
                "range": f"{fmt(rng[0], 3)}–{fmt(rng[1], 3)}",
                "paper": f"rms {fmt_mean_interval(law['rms_over_seeds'])} (per seed), bias {fmt(law.get('bias'), 3)}",
                "fit": "; ".join(fits),
            }
        )
    tables.append(
        Table(
            "text_memorization: membership-inference F1 against N/P (the paper's |D|/P), the paper's "
            "law and a fitted one",
            [
                ("method", "method"),
                ("precision", "precision"),
                ("runs", "runs"),
                ("range", "N/P"),
                ("paper", "paper law (corrected form)"),
                ("fit", "law fitted to these runs"),
            ],
            law_rows,
            f"paper law: {_mi_law_text(paper['mi_law'])} (section 3.5, the printed "
            "Capacity/|D| argument is inconsistent); fitted: F1 = ½[1 + c1·σ(a·u + b)], u = |D|/P or "
            "log10 |D|/P, least squares over the runs",
        )
    )
    if a.get("method_deltas"):
        tables.append(
            Table(
                "text_memorization: method − reference per (model, N), paired by seed, 95% t-CI",
                [
                    ("method", "method"),
                    ("reference", "reference"),
                    ("model", "model"),
                    ("n", "N"),
                    ("seeds", "seeds"),
                    ("test", "Δ test CE"),
                    ("memu", "Δ mem_U (bits)"),
                    ("mi", "Δ MI F1"),
                    ("ex", "Δ extraction train"),
                ],
                [
                    {
                        "method": d["method"],
                        "reference": d["reference"],
                        "model": d["label"],
                        "n": str(d["n_sequences"]),
                        "seeds": str(len(d["seeds"])),
                        "test": fmt_mean_interval(d["test_ce"]),
                        "memu": fmt_mean_interval(d["mem_u_bits"], 4),
                        "mi": fmt_mean_interval(d["mi_f1"]),
                        "ex": (f"p{d['extract_train_prefix']}: " + fmt_mean_interval(d["extract_train"]))
                        if d.get("extract_train")
                        else "—",
                    }
                    for d in a["method_deltas"]
                ],
                "does compression change what is memorized, extractable or detectable at matched budgets? the report's "
                "comparisons test the same metrics with Holm",
            )
        )
    data = a.get("data") or {}
    if data:
        tables.append(
            Table(
                "text_memorization: data, deduplication and member/non-member disjointness",
                [("what", "what"), ("value", "value")],
                [{"what": k, "value": str(v)} for k, v in data.items()],
                "non-members come from held-out documents; held-out sequences equal to any training sequence are "
                "dropped; max_nonmember_pool_overlap is the largest overlap any run's final sets had (must be 0)",
            )
        )
    if a.get("excluded"):
        tables.append(
            Table(
                "text_memorization: runs not used",
                [
                    ("run", "run"),
                    ("method", "method"),
                    ("seed", "seed"),
                    ("model", "model"),
                    ("n", "N"),
                    ("reason", "reason"),
                ],
                [
                    {
                        "run": str(f["run_id"]),
                        "method": str(f["method"]),
                        "seed": str(f["seed"]),
                        "model": str(f["label"]),
                        "n": str(f["n_sequences"]),
                        "reason": f["reason"],
                    }
                    for f in a["excluded"]
                ],
            )
        )
    return tables
