"""Tables of the end of a sweep: the one-screen summary (`summary.py`) and the per-run tables (`runs.py`).

Formatting only, as in `views.py`; `views.TABLES` maps the kinds "summary" and "runs" here.
"""

from __future__ import annotations

from gapt_bench.results.analysis.tables import ARROWS, Table, fmt, fmt_interval, fmt_pct


def _rel_with_ci(rel: float | None, ci: list | None) -> str:
    """'+5.1% [+1.5, +8.9]': the relative change and its 95% CI, in percent."""
    if rel is None:
        return "—"
    if not ci or ci[0] is None or ci[1] is None:
        return fmt_pct(rel)
    return f"{fmt_pct(rel)} [{ci[0] * 100:+.1f}, {ci[1] * 100:+.1f}]"


def _verdict_text(row: dict) -> str:
    if row.get("verdict"):
        return row["verdict"]
    return ", ".join(f"{n} {v}" for v, n in (row.get("verdict_counts") or {}).items())


def _summary_task_rows(result: dict) -> list[dict]:
    rows = []
    for t in result["tasks"]:
        rows.append({"what": t["task"], "verdict": t["why_empty"], "_task": t["task"]})
        for r in t["rows"]:
            if r.get("rel_range"):
                lo, hi = r["rel_range"]
                rel = fmt_pct(lo) if lo == hi else f"{fmt_pct(lo)} … {fmt_pct(hi)}"
            else:
                rel = _rel_with_ci(r.get("rel"), r.get("rel_ci"))
            rows.append(
                {
                    "what": f"  {r['metric']} {ARROWS.get(r['direction'], '')}".rstrip(),
                    "setup": r["setup"],
                    "method": r["method"],
                    "rel": rel,
                    "verdict": _verdict_text(r),
                    "_task": t["task"],
                }
            )
    return rows


def _claim_row(c: dict) -> dict:
    rel = c["kind"] == "relative"
    show = fmt_pct if rel else (lambda x: fmt(x, 3))
    return {
        "claim": c["claim"],
        "setup": c["setup"],
        "measured": show(c["measured"]),
        "ci_text": fmt_interval(c["ci"][0], c["ci"][1], show),
        "n": str(c["n"]),
        "verdict": c["verdict"],
    }


def summary_tables(result: dict, include_layers: bool = False) -> list[Table]:
    ref = result["reference"]
    status = ", ".join(f"{n} {s}" for s, n in sorted(result["status"].items()))
    tables = [
        Table(
            f"Primary metrics against {ref}: {result['n_runs']} runs ({status})",
            [
                ("what", "task / metric"),
                ("setup", "setup"),
                ("method", "method"),
                ("rel", "Δ (rel) [95% CI], %"),
                ("verdict", "verdict"),
            ],
            _summary_task_rows(result),
            "a task with more than two setups: the range of Δ over them and its verdicts counted"
            if any(r.get("rel_range") for t in result["tasks"] for r in t["rows"])
            else "",
            notes=list(result.get("notes") or []),
            keep={"what", "rel"},
        )
    ]
    if result["claims"]:
        tables.append(
            Table(
                f"The papers' claims these runs test ({len(result['claims'])})",
                [
                    ("claim", "claim"),
                    ("setup", "setup"),
                    ("measured", "measured"),
                    ("ci_text", "95% CI"),
                    ("n", "n"),
                    ("verdict", "verdict"),
                ],
                [_claim_row(c) for c in result["claims"]],
                keep={"measured", "ci_text"},
            )
        )
    if result["leaderboard"]:
        tables.append(
            Table(
                f"Leaderboard, top {len(result['leaderboard'])} of {result['n_ranked']}",
                [("rank", "#"), ("method", "method"), ("win_rate", "mean win rate"), ("record", "wins/losses/ties")],
                [
                    {
                        "rank": str(r["rank"]),
                        "method": r["method"],
                        "win_rate": f"{r['win_rate']:.2f} ({r['n_tasks']} task{'s' if r['n_tasks'] != 1 else ''})",
                        "record": f"{r['wins']}/{r['losses']}/{r['ties']}",
                    }
                    for r in result["leaderboard"]
                ],
            )
        )
    where = result.get("results") or "RESULTS"
    tables.append(
        Table(
            "Where the rest is",
            [("command", "command"), ("what", "what")],
            [
                {"command": f"gapt-bench report {where}", "what": "every metric per task: tests, intervals, power"},
                {"command": f"gapt-bench paper {where}", "what": "the claims with their controls and deviations"},
                {"command": f"gapt-bench leaderboard {where}", "what": "the whole ranking and the diagnostics"},
                {"command": f"gapt-bench site {where} -o site/", "what": "all of it as web pages, every run's curve"},
                {"command": f"{where}/runs.jsonl", "what": "one record per run; runs/<run id>/ curves and logs"},
            ],
            keep={"command", "what"},
        )
    )
    return tables


def _metric_cell(v: object) -> str:
    if v is None:
        return ""
    return fmt(v) if isinstance(v, float) else str(v)


def runs_tables(result: dict, include_layers: bool = False) -> list[Table]:
    """One table per task: method, the setup fields that vary, seed, status, then the metrics (primary first)."""
    tables = []
    for t in result["tasks"]:
        setup = [(k, h) for k, h in t["setup_columns"]]
        metrics = t["metrics"]
        cols = [("method", "method"), *setup, ("seed", "seed"), ("status", "status")]
        cols += [(f"m:{m}", m) for m in metrics]
        rows = [
            {
                "method": r["method"],
                **{k: r["setup"].get(k, "") for k, _ in setup},
                "seed": str(r["seed"]),
                "status": str(r["status"]),
                **{f"m:{m}": _metric_cell(r["metrics"].get(m)) for m in metrics},
            }
            for r in t["rows"]
        ]
        primary = t["primary_metrics"]
        tables.append(
            Table(
                f"{t['task']}: {len(rows)} runs" + (f" (primary: {', '.join(primary)})" if primary else ""),
                cols,
                rows,
                priority={"status": 0, **{f"m:{m}": i + 1 for i, m in enumerate(metrics)}},
                keep={k for k, _ in setup},
            )
        )
    return tables
