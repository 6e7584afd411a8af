"""Each analysis result as a list of `Table`s: one small function per kind, formatting only (no statistics).

`TABLES[kind](result, include_layers)` is what the renderer calls; the result's "kind" picks the function.
"""

from __future__ import annotations

from collections.abc import Callable

from gapt_bench.results import stats
from gapt_bench.results.analysis.duty import duty_text
from gapt_bench.results.analysis.evaluations import evaluation_change_tables, evaluation_tables
from gapt_bench.results.analysis.families import P_CLAIMS, P_REPORT
from gapt_bench.results.analysis.groups import (
    is_layer_metric,
    metric_sort_key,
)
from gapt_bench.results.analysis.leaderboard import MARKS
from gapt_bench.results.analysis.run_views import runs_tables, summary_tables
from gapt_bench.results.analysis.tables import (
    ARROWS,
    Table,
    fmt,
    fmt_interval,
    fmt_mde,
    fmt_mean_ci,
    fmt_p,
    fmt_pct,
    fmt_seeds,
)
from gapt_bench.results.analysis.task_views import capacity_tables, memorization_tables

# Marks of the relative CI's method beside a value, and the caption that names them (stats.compare decides).
REL_CI_MARKS = {stats.REL_CI_PAIRED: "", stats.REL_CI_LOG: "†", stats.REL_CI_LINEAR: "*"}
LINEAR_MARK = REL_CI_MARKS[stats.REL_CI_LINEAR]


def _rel_ci(low: float | None, high: float | None, method: str | None) -> str:
    text = fmt_interval(low, high, fmt_pct)
    return text + REL_CI_MARKS.get(method or "", "") if low is not None else text


def _rel_ci_caption(methods: set) -> str:
    """Names the relative CI's methods in use: unmarked = paired (seeds pair), † = log ratio of means, * = linear."""
    parts = []
    if stats.REL_CI_PAIRED in methods or not methods:
        parts.append(f"{stats.REL_CI_PAIRED}, clipped at -100% for positive metrics")
    if stats.REL_CI_LOG in methods:
        parts.append(f"† {stats.REL_CI_LOG} (seeds do not pair)")
    if stats.REL_CI_LINEAR in methods:
        parts.append(f"{LINEAR_MARK} {stats.REL_CI_LINEAR} (a metric that is not always positive)")
    return "95% CI (rel): " + "; ".join(parts)


def _possible(c: dict) -> bool:
    """Whether a missing seeds-needed means "beyond the cap" (an effect and a noise level existed)."""
    return bool(c.get("delta")) and c.get("mde") is not None


# ---------------------------------------------------------------------------------------------------------------
# report

REPORT_COLUMNS = [  # the answer first (the verdict before the power columns), so a page or a terminal shows it
    ("metric", "metric"),
    ("dir", ""),
    ("setup", "setup"),
    ("reference", "reference"),
    ("method", "method"),
    ("value", "value"),
    ("delta", "Δ (rel)"),
    ("rel_ci", "95% CI (rel)"),
    ("verdict", "verdict"),
    ("p_report", P_REPORT),
    ("ci", "95% CI of Δ"),
    ("test", "test"),
    ("p_claims", P_CLAIMS),
    ("mde", "MDE (rel)"),
    ("seeds", "seeds needed"),
    ("note", "note"),
]
# Narrow terminals keep these first (lower first); the key columns (metric, method, setup, verdict) always.
REPORT_PRIORITY = {
    "dir": 0,
    "delta": 1,
    "rel_ci": 2,
    "value": 3,
    "reference": 4,
    "p_report": 5,
    "note": 6,
    "mde": 7,
    "seeds": 8,
    "ci": 9,
    "p_claims": 10,
    "test": 11,
}


def _report_row(
    metric: str, direction: str, setup: str, ref: dict | None, label: str, grp: dict | None, c: dict | None
) -> dict:
    row = {
        "metric": metric,
        "dir": ARROWS.get(direction, "?"),
        "setup": setup or "",
        "reference": fmt_mean_ci(ref),
        "method": label,
        "value": fmt_mean_ci(grp) if grp is not None else "",
    }
    if c is None:
        return row
    return row | {
        "delta": "—" if c.get("delta") is None else f"{fmt(c['delta'], 3)} ({fmt_pct(c.get('rel_delta'))})",
        "ci": fmt_interval(c.get("ci_low"), c.get("ci_high"), lambda x: fmt(x, 3)),
        "rel_ci": _rel_ci(c.get("rel_ci_low"), c.get("rel_ci_high"), c.get("rel_ci_method")),
        "test": "paired" if c["paired"] else "Welch",
        "p_report": fmt_p(c.get("p_holm_report")),
        "p_claims": "" if c.get("claims_family_size") is None else fmt_p(c.get("p_holm_claims")),
        "mde": fmt_mde(c.get("mde"), c.get("mde_rel")),
        "seeds": fmt_seeds(c.get("seeds_needed"), _possible(c)),
        "verdict": c["verdict"],
        "note": "; ".join(
            [*([c["degenerate"]] if c.get("degenerate") else []), *(duty_text(p) for p in c.get("duty_pairs") or [])]
        ),
    }


def _report_rows(rep: dict, task: str, include_layers: bool) -> list[dict]:
    """Every comparison of the task, plus groups that are in no comparison (reference-only etc.)."""
    idx = {(g["config_hash"], g["metric"]): g for g in rep["groups"]}
    keyed, covered = [], set()
    for i, c in enumerate(rep["comparisons"]):
        if c["task"] != task or (is_layer_metric(c["metric"]) and not include_layers):
            continue
        covered |= {(c["config_hash"], c["metric"]), (c["reference_config_hash"], c["metric"])}
        row = _report_row(
            c["metric"],
            c["direction"],
            c["setup"],
            idx.get((c["reference_config_hash"], c["metric"])),
            c["label"],
            idx.get((c["config_hash"], c["metric"])),
            c,
        )
        keyed.append(((metric_sort_key(c["metric"]), 0, i), row))
    for i, g in enumerate(rep["groups"]):
        if g["task"] != task or (g["config_hash"], g["metric"]) in covered:
            continue
        if is_layer_metric(g["metric"]) and not include_layers:
            continue
        is_ref = g["method"] == rep.get("reference", "baseline")
        row = _report_row(
            g["metric"],
            g["direction"],
            g["setup"],
            g if is_ref else None,
            "" if is_ref else g["label"],
            None if is_ref else g,
            None,
        )
        keyed.append(((metric_sort_key(g["metric"]), 1, i), row))
    return [row for _, row in sorted(keyed, key=lambda kr: kr[0])]


def _report_caption(rep: dict, task: str, include_layers: bool) -> str:
    fam = rep.get("families") or {}
    size = {k: (fam.get(k) or {}).get("size") for k in ("report", "per-layer", "claims")}
    size.update({k: ((fam.get(k) or {}).get("per_task") or {}).get(task, 0) for k in ("report", "per-layer")})
    comps = [c for c in rep["comparisons"] if c["task"] == task]
    parts = [
        "mean ± 95% t-CI half-width (n seeds); Δ = method − reference",
        f"verdicts use {P_REPORT}: Holm over this task's {size['report']} headline comparisons"
        + (f" (per-layer metrics: their own family of {size['per-layer']})" if size["per-layer"] else ""),
    ]
    if any(c.get("claims_family_size") is not None for c in comps):
        parts.append(
            f"{P_CLAIMS}: the same test in the family of the papers' claims and their controls "
            f"({size['claims']} tests), whose verdicts `gapt-bench paper` prints"
        )
    parts.append(_rel_ci_caption({c.get("rel_ci_method") for c in comps if c.get("rel_ci_method")}))
    parts.append(
        f"MDE: smallest |Δ| detectable at this n (paired t when the seeds pair, else two-sample t; "
        f"alpha {rep.get('alpha', 0.05):g}, power {stats.POWER:g}); seeds needed: to detect the observed Δ"
    )
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
        tables.append(
            Table(
                f"{task}  (reference: {ref})",
                cols,
                _report_rows(rep, task, include_layers),
                _report_caption(rep, task, include_layers),
                section_key="metric",
                priority=REPORT_PRIORITY,
            )
        )
    if tables:
        tables[-1].notes += list(rep.get("notes") or [])
    for result in (rep.get("analyses") or {}).values():  # task-level analyses (Task.analyses), e.g. capacity
        tables += TABLES[result["kind"]](result, include_layers)
    return tables


# ---------------------------------------------------------------------------------------------------------------
# paper

PAPER_COLUMNS = [
    ("claim", "claim"),
    ("setup", "setup"),
    ("claimed_text", "claimed"),
    ("measured_text", "measured"),
    ("ci_text", "95% CI"),
    ("verdict", "verdict"),
    ("n", "n"),
    ("scale", "preset / scale"),
    ("p_claims", P_CLAIMS),
    ("p_report", P_REPORT),
    ("mde_text", "MDE"),
    ("seeds_text", "seeds for claim"),
    ("note", "note"),
]
PAPER_PRIORITY = {
    "measured_text": 0,
    "ci_text": 1,
    "claimed_text": 2,
    "n": 3,
    "note": 4,
    "p_claims": 5,
    "scale": 6,
    "seeds_text": 7,
    "mde_text": 8,
    "p_report": 9,
}


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
    return {
        "_claim": row["claim"],
        "claim": row["claim"] if row["role"] == "claim" else f"↳ control: {row['method']} · {row['metric']}",
        "setup": row.get("setup") or "",
        "claimed_text": "" if row["claimed"] is None else show(row["claimed"]),
        "measured_text": measured,
        "ci_text": ci,
        "n": str(row["n"]),
        "scale": _scale(row.get("preset"), row.get("n_params")),
        "p_claims": fmt_p(row.get("p_holm_claims")) if rel else "—",
        "p_report": fmt_p(row.get("p_holm_report")) if rel else "—",
        "mde_text": mde,
        "seeds_text": seeds,
        "verdict": row["verdict"],
        "note": row.get("note") or "",
    }


def _per_task(family: dict | None) -> str:
    """'fineweb_lm: 4, arithmetic_ood: 9' from a report family's per-task sizes."""
    per_task = (family or {}).get("per_task") or {}
    return ", ".join(f"{t}: {n}" for t, n in per_task.items()) or "none"


def paper_tables(paper: dict, include_layers: bool = False) -> list[Table]:
    fam = paper.get("families") or {}
    size = {"claims": (fam.get("claims") or {}).get("size")}
    caption = "; ".join(
        [
            "relative change = Δ / |baseline mean|; controls listed under each claim",
            _rel_ci_caption(set(paper.get("rel_ci_methods") or [])),
            f"verdicts use {P_CLAIMS}: Holm over the {size['claims']} claim and control tests; {P_REPORT}: the same "
            f"test in its task's family of headline comparisons ({_per_task(fam.get('report'))}; the verdicts of "
            f"`gapt-bench report`)",
            f"MDE: smallest relative effect detectable at this n (alpha {paper.get('alpha', 0.05):g}, power "
            f"{paper.get('power', stats.POWER):g}; capacity: absolute, one-sample); seeds for claim: seeds (pairs when "
            f"paired) needed to detect the claimed effect (claimed change × baseline mean) at the observed sd of the "
            f"per-seed differences",
            "capacity alpha in the paper's convention (×S/(S−1)) unless marked strict",
        ]
    )
    return [
        Table(
            "Seed papers' claims vs measured (method vs baseline)",
            PAPER_COLUMNS,
            [_paper_row(r) for r in paper["rows"]],
            caption,
            section_key="_claim",
            priority=PAPER_PRIORITY,
            keep={"measured_text", "ci_text"},
            notes=list(paper.get("notes") or []),
        )
    ]


# ---------------------------------------------------------------------------------------------------------------
# leaderboard


def leaderboard_tables(board: dict, include_layers: bool = False) -> list[Table]:
    rows = board["rows"]
    tasks = sorted({t for r in rows for t in r["tasks"]})
    ranking = []
    for r in rows:
        d = {
            "rank": str(r["rank"]),
            "method": r["method"],
            "record": f"{r['wins']}/{r['losses']}/{r['ties']}",
            "win_rate": f"{r['win_rate']:.2f} ({r['n_tasks']} task{'s' if r['n_tasks'] != 1 else ''})",
        }
        for t in tasks:
            tt = r["tasks"].get(t)
            d[t] = f"{tt['win_rate']:.2f} (#{tt['rank']})" if tt else "—"
        ranking.append(d)
    cols = [("rank", "#"), ("method", "method"), ("win_rate", "mean win rate"), ("record", "wins/losses/ties")]
    tables = [
        Table(
            f"Leaderboard: mean win rate on primary metrics, significant wins only (Holm over "
            f"{board['family_size']} pairwise tests)",
            cols + [(t, t) for t in tasks],
            ranking,
            "per column (task, setup, primary metric): 1 per opponent beaten significantly, 0 per loss, "
            "1/2 otherwise; averaged over columns, then over tasks"
            if ranking
            else "nothing ranked: no task with declared primary metrics has two methods to compare (see notes)",
        )
    ]
    evidence = [{"method": r["method"], "where": w, "value": v} for r in rows for w, v in r["evidence"].items()]
    if evidence:
        tables.append(
            Table(
                "Primary metrics: mean [95% CI] (n seeds), against the reference",
                [("method", "method"), ("where", "task/metric"), ("value", "value")],
                evidence,
                f"{MARKS['better']} significantly better than {board['reference']}, {MARKS['worse']} significantly worse, "
                f"{MARKS['no significant difference']} no significant difference (Holm, same family)",
                keep={"where", "value"},
            )
        )
    tables.append(_diagnostics_table(board, include_layers))
    tables[-1].notes += list(board.get("notes") or [])
    return tables


def _diagnostics_table(board: dict, include_layers: bool) -> Table:
    diags = board.get("diagnostics") or []
    shown = [d for d in diags if include_layers or not d["per_layer"]]
    labels = _label_order(board, diags)
    rows = [
        {
            "task": d["task"],
            "metric": d["metric"],
            "dir": ARROWS.get(d["direction"], "?"),
            "setup": d["setup"],
            **{lbl: fmt_mean_ci(d["cells"][lbl]) if lbl in d["cells"] else "" for lbl in labels},
        }
        for d in shown
    ]
    hidden = len(diags) - len(shown)
    caption = "mean ± 95% t-CI half-width (n seeds); not used for ranking" + (
        f"; {hidden} per-layer rows hidden (see --format json)" if hidden else ""
    )
    cols = [("task", "task"), ("metric", "metric"), ("dir", ""), ("setup", "setup")] + [(lb, lb) for lb in labels]
    return Table("Diagnostics, not scored (MBE, per-layer, capacity, ...)", cols, rows, caption)


def _label_order(board: dict, diags: list[dict]) -> list[str]:
    order = {m: i for i, m in enumerate(board.get("method_order") or [])}
    labels = {lbl for d in diags for lbl in d["cells"]}
    return sorted(labels, key=lambda lbl: (order.get(lbl.split(" [")[0], len(order)), lbl))


# ---------------------------------------------------------------------------------------------------------------
# compare and regression

REGRESSION_COLUMNS = [
    ("task", "task"),
    ("label", "method"),
    ("metric", "metric"),
    ("dir", ""),
    ("setup", "setup"),
    ("base", "baseline"),
    ("cand", "candidate"),
    ("rel", "change"),
    ("p_text", "p (Holm)"),
    ("verdict", "verdict"),
    ("note", "note"),
]
REGRESSION_PRIORITY = {"dir": 0, "rel": 1, "p_text": 2, "cand": 3, "base": 4, "note": 5}


def _regression_row(r: dict, is_regression: bool) -> dict:
    if is_regression:
        worse = r.get("worse_rel") is not None and r["worse_rel"] > 0
        p = r.get("p_worse_holm") if worse else r.get("p_better_holm")
    else:
        p = r.get("p_holm")
    base = "—" if r["baseline_mean"] is None else f"{fmt(r['baseline_mean'])} (n={r['n_baseline']})"
    cand = "—" if r["candidate_mean"] is None else f"{fmt(r['candidate_mean'])} (n={r['n_candidate']})"
    return {
        "task": r["task"],
        "label": r["label"],
        "metric": r["metric"],
        "dir": ARROWS.get(r.get("direction", ""), ""),
        "setup": r.get("setup") or "",
        "base": base,
        "cand": cand,
        "rel": fmt_pct(r.get("rel_change")),
        "p_text": fmt_p(p),
        "verdict": r["verdict"],
        "note": r.get("note") or "",
    }


def regression_tables(res: dict, include_layers: bool = False) -> list[Table]:
    is_regression = res["kind"] == "regression"
    cols = (
        REGRESSION_COLUMNS
        if is_regression
        else [(k, {"base": "A", "cand": "B"}.get(k, h)) for k, h in REGRESSION_COLUMNS]
    )
    if is_regression:
        counts = ", ".join(f"{v}: {n}" for v, n in (res.get("counts") or {}).items())
        title = f"Regression check: exit {res['exit_code']} ({counts})"
        caption = (
            "one-sided tests of the candidate against the baseline (paired by seed when the seeds match, "
            "Welch otherwise), Holm over the check's rows; REGRESSION needs a change past the tolerance and "
            "significance; WARN (~): past the tolerance, not significant"
        )
    else:
        title = "Comparison: B against A"
        caption = (
            "two-sided test of B − A (paired by seed when the seeds match, Welch otherwise), Holm over the "
            "rows; verdicts are B's"
        )
    machines = "; ".join(f"{side} machine: {', '.join(ms)}" for side, ms in (res.get("machines") or {}).items())
    return [
        Table(
            title,
            cols,
            [_regression_row(r, is_regression) for r in res["rows"]],
            f"{caption}; {machines}" if machines else caption,
            notes=list(res.get("notes") or []),
            priority=REGRESSION_PRIORITY,
        )
    ]


# ---------------------------------------------------------------------------------------------------------------
# capacity


# ---------------------------------------------------------------------------------------------------------------
# text memorization


TABLES: dict[str, Callable[..., list[Table]]] = {
    "report": report_tables,
    "paper": paper_tables,
    "leaderboard": leaderboard_tables,
    "regression": regression_tables,
    "compare": regression_tables,
    "capacity": capacity_tables,
    "memorization": memorization_tables,
    "summary": summary_tables,
    "runs": runs_tables,
    "evaluations": evaluation_tables,
    "evaluation_changes": evaluation_change_tables,
}
