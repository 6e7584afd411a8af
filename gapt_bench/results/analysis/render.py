"""One renderer for every analysis result: JSON, markdown or rich.

`render(result, fmt)` picks the result's tables by its "kind" (`views.TABLES`) and draws them; JSON is the result
itself (every number, per-seed values included, NaN as null), because a machine reading it wants data rather
than formatted cells. Rendering never computes statistics.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from gapt_bench.results.analysis.common import clean
from gapt_bench.results.analysis.tables import (
    SHORT_HEADERS,
    VERDICT_TONE,
    WRAP_COLUMNS,
    Table,
    drop_order,
    visible_columns,
    with_footnotes,
)
from gapt_bench.results.analysis.views import TABLES

FORMATS = ("rich", "md", "json")
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
    """JSON or markdown text of an analysis result; "rich" prints it to `console` (stdout when None, as wide as the
    terminal: `terminal_console`) and returns None."""
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
    """Every column with its full header; long notes as numbered footnotes under their table."""
    parts = []
    for t in tables:
        t, footnotes = with_footnotes(t)
        block = [f"### {t.title}", ""] if t.title else []
        block.append(markdown_table(t) if t.rows else "_no rows_")
        if footnotes:
            block += [""] + [f"[{i}] {_md_escape(n)}  " for i, n in enumerate(footnotes, 1)]
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


def terminal_console(file: Any = None) -> Any:
    """A rich console as wide as the terminal; not a terminal (a pipe, a log, CI): COLUMNS, else 100 columns."""
    from rich.console import Console

    console = Console(file=file)
    if not console.is_terminal:
        columns = os.environ.get("COLUMNS", "")
        console = Console(file=file, width=int(columns) if columns.isdigit() and int(columns) > 20 else 100)
    return console


def _text_width(value: Any) -> int:
    from rich.cells import cell_len

    return max((cell_len(line) for line in str(value).splitlines()), default=0)


def _longest_word(value: Any) -> int:
    from rich.cells import cell_len

    return max((cell_len(w) for w in str(value).split()), default=0)


WRAP_MIN = 28  # the narrowest a prose column (a claim) is squeezed to before other columns are left out


def _widths(table: Table, cols: list[tuple[str, str]]) -> tuple[list[int], list[int]]:
    """Per column: its natural width (the longest line) and the narrowest it can wrap to without splitting a word
    (prose columns: no narrower than WRAP_MIN either, while their text is wider)."""
    natural, least = [], []
    for k, h in cols:
        cells = [h, *(r.get(k, "") for r in table.rows)]
        nat = max(_text_width(c) for c in cells)
        word = max(_longest_word(c) for c in cells)
        natural.append(nat)
        least.append(min(nat, max(word, WRAP_MIN)) if k in WRAP_COLUMNS else nat)
    return natural, least


def _shrink(widths: list[int], floors: list[int], order: list[int], excess: int) -> int:
    """Take `excess` cells off the columns in `order`, always from the widest, none below its floor; what could
    not be taken is returned."""
    while excess > 0:
        room = [i for i in order if widths[i] > floors[i]]
        if not room:
            break
        i = max(room, key=lambda j: widths[j])
        widths[i] -= 1
        excess -= 1
    return excess


def fit_columns(table: Table, width: int) -> tuple[list[tuple[str, str]], list[str], list[int]]:
    """Fit `table` to `width` terminal cells (rich's SIMPLE_HEAD box: 3 cells between columns): the columns kept
    (with short headers where the full ones do not fit), the headers of the columns left out, and each kept
    column's width. Key columns stay; the others go by priority (`drop_order`) until the rest fits with prose
    columns wrapped at spaces; if the key columns alone are too wide, every column wraps at its spaces, the widest
    first, never splitting a word."""
    cols = visible_columns(table)
    natural, _ = _widths(table, cols)
    if sum(natural) + 3 * max(len(cols) - 1, 0) <= width:
        return cols, [], natural
    cols = [(k, SHORT_HEADERS.get(h, h)) for k, h in cols]
    dropped: list[str] = []
    for key in drop_order(table, cols):
        if sum(_widths(table, cols)[1]) + 3 * max(len(cols) - 1, 0) <= width:
            break
        dropped += [h for k, h in cols if k == key]
        cols = [(k, h) for k, h in cols if k != key]
    widths, least = _widths(table, cols)
    excess = sum(widths) + 3 * max(len(cols) - 1, 0) - width
    prose = [i for i, (k, _) in enumerate(cols) if k in WRAP_COLUMNS]
    excess = _shrink(widths, least, prose, excess)  # prose first, down to WRAP_MIN
    words = [max([_longest_word(h), *(_longest_word(r.get(k, "")) for r in table.rows)]) for k, h in cols]
    _shrink(widths, words, list(range(len(cols))), excess)  # then any column, down to its longest word
    return cols, dropped, widths


def _sectioned_box() -> Any:
    """rich's SIMPLE_HEAD with a light rule between sections (SIMPLE_HEAD draws a blank line there)."""
    from rich.box import Box

    return Box("    \n    \n ── \n    \n ╌╌ \n    \n    \n    \n")


def render_rich(tables: Sequence[Table], console: Any = None) -> None:
    """Each table fitted to the console's width (`fit_columns`): what does not fit is named under the table, long
    notes are numbered footnotes, no word is split over lines."""
    from rich.table import Table as RichTable
    from rich.text import Text

    if console is None:
        console = terminal_console()
    sectioned = _sectioned_box()
    for t in tables:
        t, footnotes = with_footnotes(t)
        cols, dropped, widths = fit_columns(t, console.width)
        rt = RichTable(box=sectioned, show_edge=False, pad_edge=False)
        for (_, head), w in zip(cols, widths):
            rt.add_column(head, width=w, overflow="ellipsis")
        sections = [r.get(t.section_key) for r in t.rows] if t.section_key else []
        ruled = len(set(sections)) < len(sections)  # a rule between sections only where a section has rows
        for i, r in enumerate(t.rows):
            if ruled and i and sections[i] != sections[i - 1]:
                rt.add_section()
            rt.add_row(*[_cell(k, r.get(k, "")) for k, _ in cols])
        if t.title:  # above the table, as wide as the console (a table's own title wraps at the table's width)
            console.print(Text(t.title, style="bold"), overflow="fold")
        console.print(rt)
        below = [f"[{i}] {n}" for i, n in enumerate(footnotes, 1)]
        if dropped:
            below.append(f"not shown at {console.width} columns: {', '.join(dropped)} (--format md shows every column)")
        if t.caption:
            below.append(t.caption)
        below += [f"note: {n}" for n in t.notes]
        if below:
            console.print(Text("\n".join(below), style="dim"), overflow="fold")
