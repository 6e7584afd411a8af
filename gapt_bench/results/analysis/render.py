"""One renderer for every analysis result: JSON, markdown or rich.

`render(result, fmt)` picks the result's tables by its "kind" (`views.TABLES`) and draws them; JSON is the result
itself (every number, per-seed values included, NaN as null), because a machine reading it wants data rather
than formatted cells. Rendering never computes statistics.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from gapt_bench.results.analysis.common import clean
from gapt_bench.results.analysis.tables import VERDICT_TONE, Table, visible_columns
from gapt_bench.results.analysis.views import TABLES

FORMATS = ("rich", "md", "json")
NO_WRAP = {"metric", "method", "label", "task", "verdict", "claim_short", "rank"}  # rich: key columns never fold
TONE_STYLE = {"good": "green", "bad": "red", "warn": "yellow", "muted": "dim"}
LOUD = {"REGRESSION": "bold red", "INCOMPATIBLE": "bold magenta"}  # the gate's failures stand out
VERDICT_STYLE = {v: LOUD.get(v, TONE_STYLE[tone]) for v, tone in VERDICT_TONE.items()}


def tables_of(result: dict, include_layers: bool = False) -> list[Table]:
    """The tables of an analysis result (dispatch on result["kind"])."""
    kind = result.get("kind")
    if kind not in TABLES:
        raise ValueError(f"cannot render a result of kind {kind!r}; known: {', '.join(TABLES)}")
    return TABLES[kind](result, include_layers)


def render(result: dict, fmt: str = "rich", *, console: Any = None, include_layers: bool = False) -> str | None:
    """JSON or markdown text of an analysis result; "rich" prints it to `console` (stdout when None; wide when
    not a terminal, so piped tables stay unwrapped) and returns None."""
    if fmt == "json":
        return json.dumps(clean(result), indent=2, default=str)
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    tables = tables_of(result, include_layers)
    if fmt == "md":
        return render_markdown(tables)
    render_rich(tables, console)
    return None


def _md_escape(s: Any) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def markdown_table(table: Table) -> str:
    cols = visible_columns(table)
    head = "| " + " | ".join(h or k for k, h in cols) + " |"
    sep = "|" + "|".join("---" for _ in cols) + "|"
    body = ["| " + " | ".join(_md_escape(r.get(k, "")) for k, _ in cols) + " |" for r in table.rows]
    return "\n".join([head, sep, *body])


def render_markdown(tables: Sequence[Table]) -> str:
    parts = []
    for t in tables:
        block = [f"### {t.title}", ""] if t.title else []
        block.append(markdown_table(t) if t.rows else "_no rows_")
        if t.caption:
            block += ["", f"_{t.caption}_"]
        if t.notes:
            block += [""] + [f"- {n}" for n in t.notes]
        parts.append("\n".join(block) + "\n")
    return "\n".join(parts)


def _cell(key: str, value: Any) -> Any:
    """A rich cell as plain Text (labels like "gapt [weight=0.1]" must not be read as markup); verdicts coloured."""
    from rich.text import Text

    return Text(str(value), style=VERDICT_STYLE.get(str(value), "") if key == "verdict" else "")


def render_rich(tables: Sequence[Table], console: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table as RichTable
    from rich.text import Text

    if console is None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=200)
    for t in tables:
        cols = visible_columns(t)
        rt = RichTable(title=t.title or None, title_justify="left", caption=t.caption or None, caption_justify="left")
        for key, head in cols:
            rt.add_column(head, overflow="fold", no_wrap=key in NO_WRAP)
        prev = None
        for i, r in enumerate(t.rows):
            if t.section_key and i and r.get(t.section_key) != prev:
                rt.add_section()
            prev = r.get(t.section_key) if t.section_key else None
            rt.add_row(*[_cell(k, r.get(k, "")) for k, _ in cols])
        console.print(rt)
        if t.notes:
            console.print(Text("\n".join(f"note: {n}" for n in t.notes), style="dim"))
