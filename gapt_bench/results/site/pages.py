"""The pages' bodies: the leaderboard (index), the papers' claims, one page per task, one page per configuration
with its runs. Each function returns the HTML between the navigation and the provenance footer.

Tables that the CLI also prints come from `analysis.tables_of`, so a cell reads exactly as in
`gapt-bench report/paper/leaderboard`; the leaderboard's one wide table is built here from the same result.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gapt_bench.results import analysis
from gapt_bench.results.analysis.tables import ARROWS
from gapt_bench.results.site import names
from gapt_bench.results.site.content import (
    Content,
    RunGroup,
    mentions,
    metric_value,
    primary_metrics,
    task_description,
    task_report,
)
from gapt_bench.results.site.curves import curve_svg
from gapt_bench.results.site.figures import Figure
from gapt_bench.results.site.html import (
    attrs,
    esc,
    figure,
    kv_list,
    link,
    notes_list,
    simple_table,
    table_html,
)

MARK_CLASS = {"better": "good", "worse": "bad"}
RUN_FIELDS = (
    "status",
    "stop_reason",
    "steps",
    "tokens",
    "wall_time_s",
    "tokens_per_s",
    "n_params",
    "preset",
    "config_hash",
    "setup_hash",
    "task_version",
    "schema_version",
    "started_at",
    "finished_at",
)


def _num(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return "" if v is None else str(v)


# ---------------------------------------------------------------------------------------------------------------
# index: the leaderboard


def _where(col: dict) -> str:
    """The leaderboard's name of a column, as its evidence strings are keyed."""
    return f"{col['task']}/{col['metric']}" + (f" [{col['setup']}]" if col["setup"] else "")


def leaderboard_table(board: dict) -> str:
    """Methods ranked (best first): mean win rate, wins/losses/ties, then each task's win rate and rank, as
    `gapt-bench leaderboard` prints them. Sortable; a cell sorts by its number."""
    tasks = sorted({t for r in board["rows"] for t in r["tasks"]})
    head = ["#", "method", "mean win rate", "wins/losses/ties", *tasks]
    head_html = "".join(f"<th{attrs(class_='key' if i < 4 else None)}>{esc(h)}</th>" for i, h in enumerate(head))
    body = []
    for r in board["rows"]:
        cells = [
            f'<td class="num" data-sort="{r["rank"]}">{r["rank"]}</td>',
            f"<td>{esc(r['method'])}</td>",
            f'<td class="num" data-sort="{r["win_rate"]!r}">{r["win_rate"]:.2f} ({r["n_tasks"]} '
            f"task{'s' if r['n_tasks'] != 1 else ''})</td>",
            f'<td class="num" data-sort="{r["wins"]}">{r["wins"]}/{r["losses"]}/{r["ties"]}</td>',
        ]
        for t in tasks:
            tt = r["tasks"].get(t)
            cells.append(
                f'<td class="num" data-sort="{tt["win_rate"]!r}">{tt["win_rate"]:.2f} (#{tt["rank"]})</td>'
                if tt
                else '<td class="num">—</td>'
            )
        body.append(f"<tr>{''.join(cells)}</tr>")
    if not body:
        body.append(f'<tr><td colspan="{len(head)}" class="muted">nothing ranked (see the notes below)</td></tr>')
    return (
        f'<div class="scroll"><table id="leaderboard" class="sortable"><thead><tr>{head_html}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def primary_table(board: dict) -> str:
    """The primary metrics: one row per (task, setup, metric), one column per method in rank order, each cell the
    mean [95% CI] (n) with ✓/✗/~ against the reference (coloured); sortable, a cell sorts by its mean. Rows, not
    columns, grow with the tasks' setups, so the page stays as wide as the methods."""
    methods = [r["method"] for r in board["rows"]]
    evidence = {r["method"]: r["evidence"] for r in board["rows"]}
    head = ["task / primary metric", *methods]
    head_html = "".join(f'<th class="key">{esc(h)}</th>' for h in head)
    body = []
    for c in board["columns"]:
        where = _where(c)
        cells = [f'<td class="soft">{esc(where)} {ARROWS.get(c["direction"], "")}</td>']
        for m in methods:
            cell = c["cells"].get(m)
            text = evidence[m].get(where, "")
            if cell is None or not text:
                cells.append('<td class="num">—</td>')
                continue
            cls = " " + MARK_CLASS[cell["vs_reference"]] if cell.get("vs_reference") in MARK_CLASS else ""
            sort = None if cell.get("mean") is None else repr(cell["mean"])
            cells.append(f"<td{attrs(class_='num' + cls, data_sort=sort)}>{esc(text)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    if not body:
        return ""
    return (
        f'<div class="scroll"><table id="primary" class="sortable"><thead><tr>{head_html}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def index_body(c: Content) -> str:
    board = c.leaderboard
    parts = [
        "<h1>Leaderboard</h1>",
        "<p class=\"lead\">Methods ranked on each task's primary metrics by significant wins (HELM's mean win "
        "rate, counting only wins that beat the seed noise: Holm over every pairwise test); below, each primary "
        "metric per method: mean [95% CI] (n seeds) and the test against the reference. Click a column header to "
        "sort.</p>",
    ]
    if board is None:
        parts.append(f'<p class="muted">No leaderboard: {esc(c.errors.get("leaderboard", ""))}</p>')
    else:
        tables = analysis.tables_of(board)
        parts.append(leaderboard_table(board))
        parts.append(f'<p class="caption">{esc(tables[0].caption)}</p>')
        primary = primary_table(board)
        if primary:
            parts.append("<h2>Primary metrics</h2>" + primary)
            parts.append(f'<p class="caption">{esc(tables[1].caption)}</p>' if len(tables) > 2 else "")
        parts.append(notes_list(board.get("notes") or []))
        parts.append("<h2>As <code>gapt-bench leaderboard</code> prints it</h2>")
        parts += [table_html(t) for t in (tables if board["rows"] else tables[-1:])]  # no empty ranking twice
    parts.append("<h2>Tasks</h2>" + _task_overview(c))
    general = [n for n in c.report.get("notes") or [] if not any(mentions(n, t) for t in c.tasks)]
    parts.append(notes_list(general))
    return "".join(parts)


def _task_overview(c: Content) -> str:
    rows, keys = [], []
    for task in c.tasks:
        recs = c.records_of(task)
        status = Counter(str(r.get("status")) for r in recs)
        methods = sorted({g.method for g in c.groups[task]})
        rows.append(
            [
                link(names.task_page(task), task),
                esc(task_description(task)),
                esc(", ".join(methods)),
                str(len(c.groups[task])),
                str(len(recs)),
                esc(", ".join(f"{k} {v}" for k, v in sorted(status.items()))),
                esc(", ".join(primary_metrics(recs)) or "—"),
            ]
        )
        keys.append([task, None, None, len(c.groups[task]), len(recs), None, None])
    return simple_table(
        ["task", "what", "methods", "configurations", "runs", "status", "primary metrics"],
        rows,
        sort_keys=keys,
        raw_cols=range(7),
        wrap_cols=(1, 2),
    )


# ---------------------------------------------------------------------------------------------------------------
# paper


def paper_body(c: Content) -> str:
    parts = [
        "<h1>The papers' claims beside the measurements</h1>",
        '<p class="lead">Each claim of GAPT (Yu 2025) and of the memorization-capacity paper (Morris et al. '
        "2025) beside what these runs measured, its 95% CI, the verdict and the controls under it, with the "
        "scale (preset, parameters) of each row: a verdict at CPU scale is not a verdict at the paper's "
        "scale.</p>",
    ]
    if c.paper is None:
        parts.append(f'<p class="muted">No paper table: {esc(c.errors.get("paper", ""))}</p>')
    else:
        parts += [table_html(t, id_="paper") for t in analysis.tables_of(c.paper)]
    return "".join(parts)


def evaluations_body(evaluations: Sequence[dict]) -> str:
    """Saved models measured by `gapt-bench eval`: one row per model (no seeds, so no statistics)."""
    from gapt_bench.results.analysis.evaluations import evaluation_result

    parts = [
        "<h1>Evaluated models</h1>",
        '<p class="lead">Models measured by <code>gapt-bench eval</code> (a saved checkpoint, a suite run saved with '
        "<code>--save-model</code>, a hub model): one measurement each, so models compare by value, never paired "
        "over seeds.</p>",
    ]
    result = evaluation_result(list(evaluations))
    parts += [table_html(t, id_=f"evaluations-{i}") for i, t in enumerate(analysis.tables_of(result, True))]
    return "".join(parts)


# ---------------------------------------------------------------------------------------------------------------
# task


def task_body(c: Content, task: str, figures: Sequence[Figure]) -> str:
    groups = c.groups[task]
    recs = c.records_of(task)
    versions = sorted({str(r.get("task_version")) for r in recs})
    parts = [
        f"<h1>{esc(task)}</h1>",
        f'<p class="lead">{esc(task_description(task))}. Task version {esc(", ".join(versions))}; primary '
        f"metrics: {esc(', '.join(primary_metrics(recs)) or 'none declared')}; {len(recs)} runs in "
        f"{len(groups)} configurations.</p>",
        "<h2>Report</h2>",
    ]
    sub = task_report(c.report, task, c.analyses_of.get(task, []))
    tables = analysis.tables_of(sub) if sub["groups"] or sub["analyses"] else []
    parts += [table_html(t, id_="report" if i == 0 else None) for i, t in enumerate(tables)]
    if not tables:
        parts.append('<p class="muted">no report rows for this task</p>')
    parts.append("<h2>Figures</h2>")
    parts.append('<div class="figures">' + "".join(figure(f.data_uri, f.caption) for f in figures) + "</div>")
    if not figures:
        parts.append('<p class="muted">no figures (no per-layer metrics, and no curve.jsonl next to the records)</p>')
    parts.append(
        "<h2>Runs</h2><p>One row per configuration; each links to its runs (config, environment, status "
        "and training curve of every seed).</p>"
    )
    parts.append(_groups_table(groups))
    return "".join(parts)


def _groups_table(groups: Sequence[RunGroup]) -> str:
    rows, keys = [], []
    for g in groups:
        status = Counter(str(r.get("status")) for r in g.records)
        params = next((r.get("n_params") for r in g.records if r.get("n_params")), None)
        wall = [r["wall_time_s"] for r in g.records if isinstance(r.get("wall_time_s"), (int, float))]
        mean_wall = sum(wall) / len(wall) if wall else None
        rows.append(
            [
                link(g.page, g.label),
                esc(g.setup),
                esc(g.records[0].get("preset", "")),
                f"<code>{esc(g.config_hash)}</code>",
                str(len(g.records)),
                str(status.get("ok", 0)),
                esc(", ".join(f"{k} {v}" for k, v in sorted(status.items()) if k != "ok") or "—"),
                esc(f"{params:,}" if isinstance(params, int) else _num(params)),
                "" if mean_wall is None else f"{mean_wall:.1f}",
            ]
        )
        keys.append([g.label, None, None, None, len(g.records), status.get("ok", 0), None, params, mean_wall])
    return simple_table(
        ["method", "setup", "preset", "config hash", "runs", "ok", "not ok", "params", "mean wall time (s)"],
        rows,
        sort_keys=keys,
        raw_cols=range(9),
    )


# ---------------------------------------------------------------------------------------------------------------
# runs of one configuration


def runs_body(g: RunGroup, results_dir: Path) -> str:
    from gapt_bench.results import (
        plots,  # find_curve / read_curve only; matplotlib is loaded by the figures anyway
    )

    config = dict(g.records[0].get("config") or {})
    config.pop("seed", None)
    primary = primary_metrics(g.records)
    parts = [
        f"<h1>{esc(g.task)} / {esc(g.label)}</h1>",
        f'<p class="lead">{link(names.task_page(g.task), "back to " + g.task)} · setup: {esc(g.setup or "—")} · '
        f"config hash <code>{esc(g.config_hash)}</code> · {len(g.records)} runs</p>",
        "<h2>Config</h2><p>The resolved config of every run below (they differ only in the seed).</p>",
        f'<pre class="config">{esc(json.dumps(config, indent=2, sort_keys=True, default=str))}</pre>',
        "<h2>Runs</h2>",
    ]
    for r in g.records:
        path = plots.find_curve(results_dir, r)
        rows = plots.read_curve(path) if path else []
        parts.append(_run_details(r, primary, rows))
    return "".join(parts)


def _run_details(r: dict, primary: Sequence[str], curve: Sequence[dict]) -> str:
    status = str(r.get("status"))
    shown = ", ".join(f"{m}={_num(metric_value(r, m))}" for m in primary if metric_value(r, m) is not None)
    wall = r.get("wall_time_s")
    summary = (
        f'<span class="status-{esc(status)}">{esc(status)}</span> · seed {esc(r.get("seed"))}'
        + (f" · {esc(shown)}" if shown else "")
        + (f" · {wall:.0f} s" if isinstance(wall, (int, float)) else "")
        + f" · <code>{esc(r.get('run_id'))}</code>"
    )
    error = r.get("error")
    svg = curve_svg(curve, f"training curve of {r.get('run_id')}") if curve else ""
    env = ((k, _num(v) if not isinstance(v, list) else ", ".join(map(str, v))) for k, v in (r.get("env") or {}).items())
    body = [
        "<div><h4>run</h4>" + kv_list((k, _num(r.get(k))) for k in RUN_FIELDS if r.get(k) is not None) + "</div>",
        "<div><h4>metrics</h4>" + kv_list((k, _num(v)) for k, v in (r.get("metrics") or {}).items()) + "</div>",
        "<div><h4>training curve</h4>"
        + (svg or '<p class="muted">no curve.jsonl next to the records for this run</p>')
        + "</div>",
        '<div class="wide"><h4>environment</h4>' + kv_list(env) + "</div>",
    ]
    if error:
        body.insert(
            0, f'<div class="wide"><h4>error</h4><pre>{esc(json.dumps(error, indent=2, default=str))}</pre></div>'
        )
    return (
        f"<details{attrs(id=names.run_anchor(str(r.get('run_id'))))}><summary>{summary}</summary>"
        f'<div class="run">{"".join(body)}</div></details>'
    )
