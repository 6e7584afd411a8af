"""Each analysis result as a list of `Table`s: one small function per kind, formatting only (no statistics).

`TABLES[kind](result, include_layers)` is what the renderer calls; the result's "kind" picks the function.
"""
from __future__ import annotations

from typing import Callable

from gapt_bench import stats
from gapt_bench.analysis.duty import duty_text
from gapt_bench.analysis.families import P_CLAIMS, P_REPORT
from gapt_bench.analysis.groups import is_layer_metric, metric_sort_key, model_label
from gapt_bench.analysis.leaderboard import MARKS
from gapt_bench.analysis.tables import (ARROWS, Table, fmt, fmt_interval, fmt_mde, fmt_mean_ci, fmt_mean_interval,
                                        fmt_p, fmt_pct, fmt_seeds)

LINEAR_MARK = "*"


def _rel_ci(low: float | None, high: float | None, method: str | None) -> str:
    text = fmt_interval(low, high, fmt_pct)
    return text + LINEAR_MARK if method == stats.REL_CI_LINEAR and low is not None else text


def _rel_ci_caption(methods: set) -> str:
    text = "95% CI (rel): " + (stats.REL_CI_LOG if stats.REL_CI_LOG in methods or not methods else "")
    if stats.REL_CI_LINEAR in methods:
        text += ("; " if stats.REL_CI_LOG in methods else "") + \
            f"{LINEAR_MARK} {stats.REL_CI_LINEAR} (a metric that is not always positive)"
    return text


def _possible(c: dict) -> bool:
    """Whether a missing seeds-needed means "beyond the cap" (an effect and a noise level existed)."""
    return bool(c.get("delta")) and c.get("mde") is not None


# ---------------------------------------------------------------------------------------------------------------
# report

REPORT_COLUMNS = [("metric", "metric"), ("dir", ""), ("setup", "setup"), ("reference", "reference"),
                  ("method", "method"), ("value", "value"), ("delta", "Δ (rel)"), ("ci", "95% CI of Δ"),
                  ("rel_ci", "95% CI (rel)"), ("test", "test"), ("p_report", P_REPORT), ("p_claims", P_CLAIMS),
                  ("mde", "MDE (rel)"), ("seeds", "seeds needed"), ("verdict", "verdict"), ("note", "note")]


def _report_row(metric: str, direction: str, setup: str, ref: dict | None, label: str, grp: dict | None,
                c: dict | None) -> dict:
    row = {"metric": metric, "dir": ARROWS.get(direction, "?"), "setup": setup or "",
           "reference": fmt_mean_ci(ref), "method": label, "value": fmt_mean_ci(grp) if grp is not None else ""}
    if c is None:
        return row
    return row | {
        "delta": "—" if c.get("delta") is None else f"{fmt(c['delta'], 3)} ({fmt_pct(c.get('rel_delta'))})",
        "ci": fmt_interval(c.get("ci_low"), c.get("ci_high"), lambda x: fmt(x, 3)),
        "rel_ci": _rel_ci(c.get("rel_ci_low"), c.get("rel_ci_high"), c.get("rel_ci_method")),
        "test": "paired" if c["paired"] else "Welch", "p_report": fmt_p(c.get("p_holm_report")),
        "p_claims": "" if c.get("claims_family_size") is None else fmt_p(c.get("p_holm_claims")),
        "mde": fmt_mde(c.get("mde"), c.get("mde_rel")), "seeds": fmt_seeds(c.get("seeds_needed"), _possible(c)),
        "verdict": c["verdict"],
        "note": "; ".join([*([c["degenerate"]] if c.get("degenerate") else []),
                           *(duty_text(p) for p in c.get("duty_pairs") or [])])}


def _report_rows(rep: dict, task: str, include_layers: bool) -> list[dict]:
    """Every comparison of the task, plus groups that are in no comparison (reference-only etc.)."""
    idx = {(g["config_hash"], g["metric"]): g for g in rep["groups"]}
    keyed, covered = [], set()
    for i, c in enumerate(rep["comparisons"]):
        if c["task"] != task or (is_layer_metric(c["metric"]) and not include_layers):
            continue
        covered |= {(c["config_hash"], c["metric"]), (c["reference_config_hash"], c["metric"])}
        row = _report_row(c["metric"], c["direction"], c["setup"], idx.get((c["reference_config_hash"], c["metric"])),
                          c["label"], idx.get((c["config_hash"], c["metric"])), c)
        keyed.append(((metric_sort_key(c["metric"]), 0, i), row))
    for i, g in enumerate(rep["groups"]):
        if g["task"] != task or (g["config_hash"], g["metric"]) in covered:
            continue
        if is_layer_metric(g["metric"]) and not include_layers:
            continue
        is_ref = g["method"] == rep.get("reference", "baseline")
        row = _report_row(g["metric"], g["direction"], g["setup"], g if is_ref else None,
                          "" if is_ref else g["label"], None if is_ref else g, None)
        keyed.append(((metric_sort_key(g["metric"]), 1, i), row))
    return [row for _, row in sorted(keyed, key=lambda kr: kr[0])]


def _report_caption(rep: dict, task: str, include_layers: bool) -> str:
    fam = rep.get("families") or {}
    size = {k: (fam.get(k) or {}).get("size") for k in ("report", "per-layer", "claims")}
    size.update({k: ((fam.get(k) or {}).get("per_task") or {}).get(task, 0) for k in ("report", "per-layer")})
    comps = [c for c in rep["comparisons"] if c["task"] == task]
    parts = ["mean ± 95% t-CI half-width (n seeds); Δ = method − reference",
             f"verdicts use {P_REPORT}: Holm over this task's {size['report']} headline comparisons"
             + (f" (per-layer metrics: their own family of {size['per-layer']})" if size["per-layer"] else "")]
    if any(c.get("claims_family_size") is not None for c in comps):
        parts.append(f"{P_CLAIMS}: the same test in the family of the papers' claims and their controls "
                     f"({size['claims']} tests), whose verdicts `gapt-bench paper` prints")
    parts.append(_rel_ci_caption({c.get("rel_ci_method") for c in comps if c.get("rel_ci_method")}))
    parts.append(f"MDE: smallest |Δ| detectable at this n (paired t when the seeds pair, else two-sample t; "
                 f"alpha {rep.get('alpha', 0.05):g}, power {stats.POWER:g}); seeds needed: to detect the observed Δ")
    n_layer = len({g["metric"] for g in rep["groups"] if g["task"] == task and is_layer_metric(g["metric"])})
    if n_layer and not include_layers:
        parts.append(f"{n_layer} per-layer metrics hidden (see --format json)")
    if any(c.get("mwu_note") for c in comps):
        parts.append("Mann-Whitney: rank test uninformative at these seed counts")
    return "; ".join(parts)


def report_tables(rep: dict, include_layers: bool = False) -> list[Table]:
    ref = rep.get("reference", "baseline")
    tables = []
    for task in sorted({g["task"] for g in rep["groups"]}):
        cols = [(k, ref if k == "reference" else h) for k, h in REPORT_COLUMNS]
        tables.append(Table(f"{task}  (reference: {ref})", cols, _report_rows(rep, task, include_layers),
                            _report_caption(rep, task, include_layers), section_key="metric"))
    if tables:
        tables[-1].notes += list(rep.get("notes") or [])
    for result in (rep.get("analyses") or {}).values():  # task-level analyses (Task.analyses), e.g. capacity
        tables += TABLES[result["kind"]](result, include_layers)
    return tables


# ---------------------------------------------------------------------------------------------------------------
# paper

PAPER_COLUMNS = [("claim", "claim"), ("role", "row"), ("setup", "setup"), ("claimed_text", "claimed"),
                 ("measured_text", "measured"), ("ci_text", "95% CI"), ("n", "n"), ("scale", "preset / scale"),
                 ("p_claims", P_CLAIMS), ("p_report", P_REPORT), ("mde_text", "MDE"),
                 ("seeds_text", "seeds for claim"), ("verdict", "verdict"), ("note", "note")]


def _scale(preset: object, n_params: float | None) -> str:
    params = ""
    if n_params is not None:
        params = f"{n_params / 1e6:.3g}M params" if n_params >= 1e5 else f"{n_params:,.0f} params"
    return ", ".join(x for x in (str(preset) if preset else "", params) if x)


def _paper_row(row: dict) -> dict:
    rel = row["kind"] == "relative"
    show = fmt_pct if rel else (lambda x: fmt(x, 3))
    measured = show(row["measured"])
    if not rel and row.get("convention") and row["measured"] is not None:
        measured += " (paper conv.)" if row["convention"] == "paper" else " (strict)"
    if rel:
        ci = _rel_ci(row["ci_low"], row["ci_high"], row.get("ci_method"))
        mde = "—" if row.get("mde_rel") is None else f"{row['mde_rel'] * 100:.1f}%"
        possible = bool(row.get("claimed_delta_abs")) and row.get("sd_delta") not in (None, 0)
        seeds = fmt_seeds(row.get("seeds_needed_claim"), possible) if row.get("p") is not None else "—"
    else:
        ci, mde, seeds = fmt_interval(row["ci_low"], row["ci_high"], show), fmt(row.get("mde"), 3), "—"
    return {"_claim": row["claim"], "claim": row["claim"] if row["role"] == "claim" else "",
            "role": "claim" if row["role"] == "claim" else f"↳ control: {row['method']} · {row['metric']}",
            "setup": row.get("setup") or "", "claimed_text": "" if row["claimed"] is None else show(row["claimed"]),
            "measured_text": measured, "ci_text": ci, "n": str(row["n"]),
            "scale": _scale(row.get("preset"), row.get("n_params")),
            "p_claims": fmt_p(row.get("p_holm_claims")) if rel else "—",
            "p_report": fmt_p(row.get("p_holm_report")) if rel else "—",
            "mde_text": mde, "seeds_text": seeds, "verdict": row["verdict"], "note": row.get("note") or ""}


def _per_task(family: dict | None) -> str:
    """'fineweb_lm: 4, arithmetic_ood: 9' from a report family's per-task sizes."""
    per_task = (family or {}).get("per_task") or {}
    return ", ".join(f"{t}: {n}" for t, n in per_task.items()) or "none"


def paper_tables(paper: dict, include_layers: bool = False) -> list[Table]:
    fam = paper.get("families") or {}
    size = {"claims": (fam.get("claims") or {}).get("size")}
    caption = "; ".join([
        "relative change = Δ / |baseline mean|; controls listed under each claim",
        _rel_ci_caption(set(paper.get("rel_ci_methods") or [])),
        f"verdicts use {P_CLAIMS}: Holm over the {size['claims']} claim and control tests; {P_REPORT}: the same "
        f"test in its task's family of headline comparisons ({_per_task(fam.get('report'))}; the verdicts of "
        f"`gapt-bench report`)",
        f"MDE: smallest relative effect detectable at this n (alpha {paper.get('alpha', 0.05):g}, power "
        f"{paper.get('power', stats.POWER):g}; capacity: absolute, one-sample); seeds for claim: seeds (pairs when "
        f"paired) needed to detect the claimed effect (claimed change × baseline mean) at the observed sd of the "
        f"per-seed differences",
        "capacity alpha in the paper's convention (×S/(S−1)) unless marked strict"])
    return [Table("Seed papers' claims vs measured (method vs baseline)", PAPER_COLUMNS,
                  [_paper_row(r) for r in paper["rows"]], caption, section_key="_claim")]


# ---------------------------------------------------------------------------------------------------------------
# leaderboard


def leaderboard_tables(board: dict, include_layers: bool = False) -> list[Table]:
    rows = board["rows"]
    tasks = sorted({t for r in rows for t in r["tasks"]})
    ranking = []
    for r in rows:
        d = {"rank": str(r["rank"]), "method": r["method"], "record": f"{r['wins']}/{r['losses']}/{r['ties']}",
             "win_rate": f"{r['win_rate']:.2f} ({r['n_tasks']} task{'s' if r['n_tasks'] != 1 else ''})"}
        for t in tasks:
            tt = r["tasks"].get(t)
            d[t] = f"{tt['win_rate']:.2f} (#{tt['rank']})" if tt else "—"
        ranking.append(d)
    cols = [("rank", "#"), ("method", "method"), ("win_rate", "mean win rate"), ("record", "wins/losses/ties")]
    tables = [Table(f"Leaderboard: mean win rate on primary metrics, significant wins only (Holm over "
                    f"{board['family_size']} pairwise tests)", cols + [(t, t) for t in tasks], ranking,
                    "per column (task, setup, primary metric): 1 per opponent beaten significantly, 0 per loss, "
                    "1/2 otherwise; averaged over columns, then over tasks" if ranking else
                    "nothing ranked: no task with declared primary metrics has two methods to compare (see notes)")]
    evidence = [{"method": r["method"], "where": w, "value": v} for r in rows for w, v in r["evidence"].items()]
    if evidence:
        tables.append(Table("Primary metrics: mean [95% CI] (n seeds), against the reference", [
            ("method", "method"), ("where", "task/metric"), ("value", "value")], evidence,
            f"{MARKS['better']} significantly better than {board['reference']}, {MARKS['worse']} significantly worse, "
            f"{MARKS['no significant difference']} no significant difference (Holm, same family)"))
    tables.append(_diagnostics_table(board, include_layers))
    tables[-1].notes += list(board.get("notes") or [])
    return tables


def _diagnostics_table(board: dict, include_layers: bool) -> Table:
    diags = board.get("diagnostics") or []
    shown = [d for d in diags if include_layers or not d["per_layer"]]
    labels = _label_order(board, diags)
    rows = [{"task": d["task"], "metric": d["metric"], "dir": ARROWS.get(d["direction"], "?"), "setup": d["setup"],
             **{lbl: fmt_mean_ci(d["cells"][lbl]) if lbl in d["cells"] else "" for lbl in labels}} for d in shown]
    hidden = len(diags) - len(shown)
    caption = "mean ± 95% t-CI half-width (n seeds); not used for ranking" + \
        (f"; {hidden} per-layer rows hidden (see --format json)" if hidden else "")
    cols = [("task", "task"), ("metric", "metric"), ("dir", ""), ("setup", "setup")] + [(lb, lb) for lb in labels]
    return Table("Diagnostics, not scored (MBE, per-layer, capacity, ...)", cols, rows, caption)


def _label_order(board: dict, diags: list[dict]) -> list[str]:
    order = {m: i for i, m in enumerate(board.get("method_order") or [])}
    labels = {lbl for d in diags for lbl in d["cells"]}
    return sorted(labels, key=lambda lbl: (order.get(lbl.split(" [")[0], len(order)), lbl))


# ---------------------------------------------------------------------------------------------------------------
# compare and gate

GATE_COLUMNS = [("task", "task"), ("label", "method"), ("metric", "metric"), ("dir", ""), ("setup", "setup"),
                ("base", "baseline"), ("cand", "candidate"), ("rel", "change"), ("p_text", "p (Holm)"),
                ("verdict", "verdict"), ("note", "note")]


def _gate_row(r: dict, gate: bool) -> dict:
    if gate:
        worse = r.get("worse_rel") is not None and r["worse_rel"] > 0
        p = r.get("p_worse_holm") if worse else r.get("p_better_holm")
    else:
        p = r.get("p_holm")
    base = "—" if r["baseline_mean"] is None else f"{fmt(r['baseline_mean'])} (n={r['n_baseline']})"
    cand = "—" if r["candidate_mean"] is None else f"{fmt(r['candidate_mean'])} (n={r['n_candidate']})"
    return {"task": r["task"], "label": r["label"], "metric": r["metric"],
            "dir": ARROWS.get(r.get("direction", ""), ""),
            "setup": r.get("setup") or "", "base": base, "cand": cand, "rel": fmt_pct(r.get("rel_change")),
            "p_text": fmt_p(p), "verdict": r["verdict"], "note": r.get("note") or ""}


def gate_tables(res: dict, include_layers: bool = False) -> list[Table]:
    gate = res["kind"] == "gate"
    cols = GATE_COLUMNS if gate else [(k, {"base": "A", "cand": "B"}.get(k, h)) for k, h in GATE_COLUMNS]
    if gate:
        counts = ", ".join(f"{v}: {n}" for v, n in (res.get("counts") or {}).items())
        title = f"Regression gate: exit {res['exit_code']} ({counts})"
        caption = ("one-sided tests of the candidate against the baseline (paired by seed when the seeds match, "
                   "Welch otherwise), Holm over the gate's rows; REGRESSION needs a change past the tolerance and "
                   "significance; WARN (~): past the tolerance, not significant")
    else:
        title = "Comparison: B against A"
        caption = ("two-sided test of B − A (paired by seed when the seeds match, Welch otherwise), Holm over the "
                   "rows; verdicts are B's")
    machines = "; ".join(f"{side} machine: {', '.join(ms)}" for side, ms in (res.get("machines") or {}).items())
    return [Table(title, cols, [_gate_row(r, gate) for r in res["rows"]], f"{caption}; {machines}" if machines
                  else caption, notes=list(res.get("notes") or []))]


# ---------------------------------------------------------------------------------------------------------------
# capacity


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
    budget_note = ("budget: runs that stopped on the step budget before their curve flattened (converged = 0); "
                   "their memorized bits are a lower bound")
    tables = [Table(
        f"synthetic_capacity: alpha (bits/parameter), 95% t-CI over seeds; runs in the {conv} convention",
        [("method", "method"), ("precision", "precision"), ("models", "models"), ("seeds", "seeds"),
         ("slope", "alpha slope (strict)"), ("mean", "alpha mean (strict)"),
         ("slope_pc", "alpha slope (paper conv.)"), ("mean_pc", "alpha mean (paper conv.)"),
         ("paper", "paper (paper conv.)"), ("budget", "capacity runs on budget"), ("presets", "presets")],
        [{"method": g["method"], "precision": g["precision"], "models": str(len(g["models"])),
          "seeds": f"{len(g['seeds_used'])}/{len(g['seeds'])}", "slope": fmt_mean_interval(g["alpha_slope"]),
          "mean": fmt_mean_interval(g["alpha_mean"]), "slope_pc": fmt_mean_interval(g["alpha_slope_paper_conv"]),
          "mean_pc": fmt_mean_interval(g["alpha_mean_paper_conv"]), "paper": _paper_figure(g),
          "budget": _budget(g["n_capacity_runs_budget"], g["n_capacity_runs"]), "presets": ",".join(g["presets"])}
         for g in a["groups"]],
        "strict: N(S−1)log2V minus the NLL of the predicted tokens; paper conv.: ×S/(S−1), the convention of the "
        "paper's figures (slope 3.64 is bf16; the paper quotes no fp32 slope), so compare those columns; "
        + budget_note)]
    if a.get("method_deltas"):
        tables.append(Table("alpha(method) − alpha(reference), strict, paired by seed, 95% t-CI", [
            ("method", "method"), ("reference", "reference"), ("precision", "precision"), ("seeds", "seeds"),
            ("slope", "Δ slope"), ("mean", "Δ mean")],
            [{"method": d["method"], "reference": d["reference"], "precision": d["precision"],
              "seeds": str(len(d["seeds"])), "slope": fmt_mean_interval(d["alpha_slope"]),
              "mean": fmt_mean_interval(d["alpha_mean"])} for d in a["method_deltas"]]))
    tables.append(Table("capacity per model = max over N of mem_bits (per seed), 95% t-CI over seeds", [
        ("method", "method"), ("precision", "precision"), ("model", "model"), ("params", "params"),
        ("seeds", "seeds"), ("capacity", "capacity (bits, strict)"), ("bpp", "bits/param (strict)"),
        ("bpp_pc", "bits/param (paper conv.)"), ("paper", "paper alpha (Table 1, paper conv.)"),
        ("best_n", "best N (median over seeds)"), ("largest", "best = largest N"),
        ("budget", "capacity run on budget")],
        [{"method": g["method"], "precision": g["precision"], "model": m["label"], "params": f"{m['n_params']:,}",
          "seeds": str(len(m["seeds"])), "capacity": fmt_mean_interval(m["capacity"], 4),
          "bpp": fmt_mean_interval(m["bits_per_param"]), "bpp_pc": fmt_mean_interval(m["bits_per_param_paper_conv"]),
          "paper": fmt(m["paper_alpha"], 3), "best_n": fmt(m["best_n_median"]),
          "largest": "yes" if m["best_is_largest_n"] else "no",
          "budget": _budget(m["n_budget_stopped"], len(m["seeds"]))}
         for g in a["groups"] for m in g["models"]], budget_note))
    tables.append(Table("memorization sweep (mean over seeds) and double descent: ratio = data bits / (alpha * P)", [
        ("method", "method"), ("precision", "precision"), ("model", "model"), ("n", "N"), ("data", "data bits"),
        ("ratio", "ratio"), ("mem", "mem bits"), ("frac", "mem/data"), ("bpp", "bits/param"),
        ("held", "held-out bits/tok"), ("conv", "converged"), ("budget", "stopped on budget"), ("stop", "stop"),
        ("change", "last-window change")],
        [{"method": g["method"], "precision": g["precision"], "model": c["label"], "n": str(c["n_sequences"]),
          "data": fmt(c["data_bits"], 4), "ratio": fmt(c["ratio"], 3), "mem": fmt(c["mem_bits"]["mean"], 4),
          "frac": fmt(c["mem_fraction"]["mean"], 3), "bpp": fmt_mean_interval(c["bits_per_param"]),
          "held": fmt(c["heldout_bits_per_token"]["mean"], 3), "conv": f"{c['n_converged']}/{c['n_runs']}",
          "budget": _budget(c["n_budget_stopped"], c["n_runs"]),
          "stop": ", ".join(f"{k} {v}" for k, v in sorted(c["stop_reasons"].items())),
          "change": fmt(c["curve_rel_change"]["mean"], 2)} for g in a["groups"] for c in g["sweep"]],
        f"ratio with alpha = {', '.join(sorted({str(g.get('alpha_for_ratio_source')) for g in a['groups']}))}; "
        + budget_note))
    unused = (a.get("flagged") or []) + (a.get("excluded") or [])
    if unused:
        tables.append(Table("runs not used for capacity", [
            ("run", "run"), ("method", "method"), ("seed", "seed"), ("model", "model"), ("n", "N"),
            ("reason", "reason")],
            [{"run": str(f["run_id"]), "method": str(f["method"]), "seed": str(f["seed"]),
              "model": model_label(f["n_layer"], f["n_embd"]), "n": str(f["n_sequences"]),
              "reason": f["reason"] + (f" (held-out {f['heldout_bits_per_token']:.3g} bits/token)"
                                       if f.get("heldout_bits_per_token") is not None else "")} for f in unused]))
    return tables


# ---------------------------------------------------------------------------------------------------------------
# text memorization


CONVERGENCE_TEXT = {"converges": "converges to the test rate", "does not": "does not converge to the test rate",
                    "inconclusive": "convergence inconclusive"}


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
                sweep.append({
                    "method": g["method"], "precision": g["precision"], "model": m["label"],
                    "params": f"{m['n_params']:,}", "n": str(c["n_sequences"]), "runs": str(c["n_runs"]),
                    "ratio": (f"{fmt(req, 3)} → " if req is not None else "") + fmt(c["ratio"]["mean"], 3),
                    "dp": fmt(c["d_over_p"], 3), "epochs": fmt(c.get("epochs"), 3),
                    "test": fmt_mean_interval(c["test_ce"]), "train": fmt(c["train_ce"]["mean"], 3),
                    "ref": fmt(c.get("ref_test_ce"), 3), "memu": fmt_mean_interval(c["mem_u_bits"], 4),
                    "memu_nm": fmt(c["mem_u_nonmember"]["mean"], 3),
                    "oracle": fmt(c["mem_u_oracle_bits"]["mean"], 4) if c["mem_u_oracle_bits"]["n"] else "",
                    "ex_tr": _rates(c["extraction"], "train", pre), "ex_te": _rates(c["extraction"], "test", pre),
                    "mi": fmt_mean_interval(c["mi_f1"]), "law": fmt(c.get("mi_law"), 3)})
    pre_text = "/".join(str(p) for p in (a["groups"][0].get("prefixes") if a["groups"] else []))
    tables.append(Table(
        "text_memorization: the sweep over N (mean over seeds, 95% t-CI)",
        [("method", "method"), ("precision", "precision"), ("model", "model"), ("params", "params"), ("n", "N"),
         ("runs", "runs"), ("ratio", "ratio (requested → realised)"), ("dp", "N/P"), ("epochs", "epochs"),
         ("test", "test CE"), ("train", "train CE"), ("ref", "reference test CE"), ("memu", "mem_U (bits)"),
         ("memu_nm", "non-member mem_U/seq"), ("oracle", "mem_U vs oracle"),
         ("ex_tr", f"extraction train (prefix {pre_text})"), ("ex_te", f"extraction test (prefix {pre_text})"),
         ("mi", "MI F1"), ("law", "MI F1, paper law")], sweep,
        "ratio: dataset information (the reference's code lengths, bits) / (alpha * P), requested when N was sized "
        "(an estimate) and realised (measured); CE in nats per token; mem_U: sum over the training set of "
        "max(0, log2 p_model - log2 p_ref) per sequence; MI F1: loss threshold calibrated on a split disjoint "
        "from the scored members (0.5 = chance); paper law: the corrected form of section 3.5 at the run's |D|/P"))
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
            findings.append({
                "method": g["method"], "precision": g["precision"], "model": m["label"],
                "memu": (f"peak {fmt(mu.get('peak_bits'), 4)} bits at N={mu.get('peak_n')} "
                         f"({fmt(mu.get('peak_bits_per_param'), 3)} bits/param); "
                         + ("rises then falls" if mu.get("rises_then_falls") else "no rise then fall")),
                "dd": (f"peak at ratio {fmt(dd.get('peak_ratio'), 3)}; "
                       + ("located" + (f", within ×{factor:g} of 1" if dd.get("within_factor")
                                       else f", not within ×{factor:g} of 1")
                          if dd.get("located") else "not bracketed (no interior peak)")
                       + f"; seeds with an interior peak: {dd.get('per_seed_located', 0)}/"
                         f"{len(dd.get('per_seed') or [])}"),
                "ex": (f"p{p}: max train {fmt(ex.get('max_train'), 3)}, "
                       f"{'falls' if ex.get('falls') else 'does not fall'} with N; at N={ex.get('largest_n')} "
                       f"train − test {fmt_mean_interval(gap)}"
                       + f"; {CONVERGENCE_TEXT.get(ex.get('convergence'), 'convergence not judged')}") if ex else "—",
                "mi": f"{fmt(first_last[0], 3)} → {fmt(first_last[1], 3)}"
                      + (" (falls)" if m.get("mi_falls") else "")})
    tables.append(Table("text_memorization: findings per model", [
        ("method", "method"), ("precision", "precision"), ("model", "model"),
        ("memu", "unintended memorization vs N"), ("dd", "test-loss peak vs data/capacity ratio"),
        ("ex", "extraction (longest prefix)"), ("mi", "MI F1, smallest → largest N")], findings,
        "double descent: the ratio with the highest mean test CE, 'located' only when smaller and larger ratios "
        "were measured (descriptive, not a test); extraction converges when the whole 95% CI of train − test at the "
        f"largest N lies within 0 ± {band:g} (does not: wholly outside it; else inconclusive)"))
    law_rows = []
    for g in a["groups"]:
        law = g["mi_law"]
        fits = []
        for name in ("fit", "fit_log10"):
            f = law.get(name) or {}
            if f.get("ok"):
                ps = f["params"]
                fits.append(f"{f['x_scale']}: c1={ps['c1']:.3g}, a={ps['a']:.3g}, b={ps['b']:.3g}, "
                            f"midpoint N/P={fmt(f.get('midpoint_d_over_p'), 3)}, rms {fmt(f['rms'], 3)}")
            else:
                fits.append(f"{f.get('x_scale', name)}: {f.get('why') or 'no fit'}")
        rng = law.get("d_over_p_range") or [None, None]
        law_rows.append({"method": g["method"], "precision": g["precision"], "runs": str(law["n_points"]),
                         "range": f"{fmt(rng[0], 3)}–{fmt(rng[1], 3)}",
                         "paper": f"rms {fmt_mean_interval(law['rms_over_seeds'])} (per seed), bias "
                                  f"{fmt(law.get('bias'), 3)}",
                         "fit": "; ".join(fits)})
    tables.append(Table("text_memorization: membership-inference F1 against N/P (the paper's |D|/P), the paper's "
                        "law and a fitted one",
                        [("method", "method"), ("precision", "precision"), ("runs", "runs"), ("range", "N/P"),
                         ("paper", "paper law (corrected form)"), ("fit", "law fitted to these runs")], law_rows,
                        f"paper law: {_mi_law_text(paper['mi_law'])} (section 3.5, the printed "
                        "Capacity/|D| argument is inconsistent); fitted: F1 = ½[1 + c1·σ(a·u + b)], u = |D|/P or "
                        "log10 |D|/P, least squares over the runs"))
    if a.get("method_deltas"):
        tables.append(Table("text_memorization: method − reference per (model, N), paired by seed, 95% t-CI", [
            ("method", "method"), ("reference", "reference"), ("model", "model"), ("n", "N"), ("seeds", "seeds"),
            ("test", "Δ test CE"), ("memu", "Δ mem_U (bits)"), ("mi", "Δ MI F1"), ("ex", "Δ extraction train")],
            [{"method": d["method"], "reference": d["reference"], "model": d["label"], "n": str(d["n_sequences"]),
              "seeds": str(len(d["seeds"])), "test": fmt_mean_interval(d["test_ce"]),
              "memu": fmt_mean_interval(d["mem_u_bits"], 4), "mi": fmt_mean_interval(d["mi_f1"]),
              "ex": (f"p{d['extract_train_prefix']}: " + fmt_mean_interval(d["extract_train"]))
              if d.get("extract_train") else "—"} for d in a["method_deltas"]],
            "does compression change what is memorized, extractable or detectable at matched budgets? the report's "
            "comparisons test the same metrics with Holm"))
    data = a.get("data") or {}
    if data:
        tables.append(Table("text_memorization: data, deduplication and member/non-member disjointness", [
            ("what", "what"), ("value", "value")],
            [{"what": k, "value": str(v)} for k, v in data.items()],
            "non-members come from held-out documents; held-out sequences equal to any training sequence are "
            "dropped; max_nonmember_pool_overlap is the largest overlap any run's final sets had (must be 0)"))
    if a.get("excluded"):
        tables.append(Table("text_memorization: runs not used", [
            ("run", "run"), ("method", "method"), ("seed", "seed"), ("model", "model"), ("n", "N"),
            ("reason", "reason")],
            [{"run": str(f["run_id"]), "method": str(f["method"]), "seed": str(f["seed"]), "model": str(f["label"]),
              "n": str(f["n_sequences"]), "reason": f["reason"]} for f in a["excluded"]]))
    return tables


TABLES: dict[str, Callable[..., list[Table]]] = {
    "report": report_tables, "paper": paper_tables, "leaderboard": leaderboard_tables, "gate": gate_tables,
    "compare": gate_tables, "capacity": capacity_tables, "memorization": memorization_tables,
}
