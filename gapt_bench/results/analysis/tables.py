"""The display unit (`Table`) and the number formats every view shares.

A Table holds strings only: views (`views.py`) turn an analysis result into Tables, the renderer (`render.py`) turns
Tables into rich or markdown. Neither computes statistics.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gapt_bench.results.stats import SEEDS_MAX_N

ARROWS = {"min": "↓", "max": "↑"}  # a metric's direction: lower / higher is better
# The verdict words of every analysis and their tone; the rich renderer and the site colour cells by it.
VERDICT_TONE = {
    "better": "good",
    "replicates": "good",
    "IMPROVED": "good",
    "worse": "bad",
    "does not": "bad",
    "smaller effect": "bad",
    "smaller or none": "bad",
    "no effect": "bad",
    "opposite effect": "bad",
    "below the claim": "bad",
    "above the claim": "bad",
    "REGRESSION": "bad",
    "INCOMPATIBLE": "bad",
    "inconclusive": "warn",
    "INCONCLUSIVE": "warn",
    "WARN": "warn",
    "no runs": "muted",
}


# Columns that tell rows apart or carry the answer: kept at any width (a narrow terminal drops the others first).
KEY_COLUMNS = {"metric", "method", "label", "task", "setup", "verdict", "claim", "role", "rank", "seed", "model", "n"}
# Columns of long prose: their cells become numbered footnotes under the table, in every format.
FOOTNOTE_COLUMNS = {"note"}
# Columns of prose that may wrap at spaces (never inside a word); every other cell stays on one line.
WRAP_COLUMNS = {"claim", "reason", "what", "where", "memu", "dd", "ex", "fit", "paper", "stop"}
# Shorter headers for narrow terminals (rich); markdown and the site keep the full ones.
SHORT_HEADERS = {
    "95% CI of Δ": "CI of Δ",
    "95% CI (rel)": "CI (rel)",
    "seeds needed": "seeds",
    "seeds for claim": "seeds",
    "preset / scale": "scale",
    "p (Holm) report": "p report",
    "p (Holm) claims": "p claims",
    "MDE (rel)": "MDE",
}


@dataclass
class Table:
    """One table: columns are (row key, header); empty columns are dropped when rendered.

    `priority` ranks columns for narrow outputs (lower is kept longer; KEY_COLUMNS are never dropped; unranked
    columns drop from the right); `footnotes` collects what moved out of the cells (see `with_footnotes`)."""

    title: str
    columns: list[tuple[str, str]]
    rows: list[dict[str, str]]
    caption: str = ""
    notes: list[str] = field(default_factory=list)
    section_key: str | None = None  # rich: start a new section where this column's value changes
    priority: dict[str, int] = field(default_factory=dict)
    keep: set[str] = field(default_factory=set)  # more columns never dropped (besides KEY_COLUMNS)


def visible_columns(table: Table) -> list[tuple[str, str]]:
    """Columns with a value in some row (e.g. no setup column when a task has one setup); all of them when no row
    has a value, so an empty table keeps its header."""
    cols = [(k, h) for k, h in table.columns if any(r.get(k) not in ("", None) for r in table.rows)]
    return cols or list(table.columns)


def with_footnotes(table: Table) -> tuple[Table, list[str]]:
    """The table with each cell of a FOOTNOTE_COLUMNS column replaced by its number ("[1]"), and the footnotes in
    order; equal texts share a number."""
    cols = [k for k, _ in table.columns if k in FOOTNOTE_COLUMNS]
    if not cols:
        return table, []
    notes: list[str] = []
    rows = []
    for r in table.rows:
        r = dict(r)
        for k in cols:
            text = str(r.get(k) or "").strip()
            if not text:
                continue
            if text not in notes:
                notes.append(text)
            r[k] = f"[{notes.index(text) + 1}]"
        rows.append(r)
    return (
        Table(
            table.title,
            table.columns,
            rows,
            table.caption,
            list(table.notes),
            table.section_key,
            dict(table.priority),
            set(table.keep),
        ),
        notes,
    )


def key_columns(table: Table) -> set[str]:
    """The columns every output must show (a narrow terminal, a 1280-pixel page): the key columns, the table's own
    `keep`, and its top-priority columns (priority 2 or less)."""
    top = {k for k, p in table.priority.items() if p <= 2}
    return {k for k, _ in table.columns if k in KEY_COLUMNS or k in table.keep or k in top}


def drop_order(table: Table, cols: list[tuple[str, str]]) -> list[str]:
    """Keys of the columns a narrow output may drop, first to go first: highest priority number first, then the
    rightmost; key columns never."""
    kept = KEY_COLUMNS | FOOTNOTE_COLUMNS | table.keep  # a footnote's number stays with its row
    droppable = [(i, k) for i, (k, _) in enumerate(cols) if k not in kept]
    return [k for _, k in sorted(droppable, key=lambda ik: (-table.priority.get(ik[1], 50), -ik[0]))]


def fmt(x: float | None, digits: int = 4) -> str:
    if x is None:
        return "—"
    if x == 0:
        return "0"
    return f"{x:.{digits}g}"


def fmt_pct(x: float | None) -> str:
    return "—" if x is None else f"{x * 100:+.1f}%"


def fmt_p(p: float | None) -> str:
    if p is None:
        return "—"
    return f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"


def fmt_interval(low: float | None, high: float | None, show=fmt) -> str:
    return "—" if low is None or high is None else f"[{show(low)}, {show(high)}]"


def fmt_mean_ci(row: dict | None) -> str:
    """'mean ± CI half-width (n=…)', with failed/diverged counts when any."""
    if row is None:
        return "—"
    extra = [f"{row[k]} {w}" for k, w in (("n_diverged", "diverged"), ("n_failed", "failed")) if row.get(k)]
    tail = f"(n={row['n']}{', ' + ', '.join(extra) if extra else ''})"
    if not row["n"]:
        return f"— {tail}"
    if row.get("ci_low") is None:
        return f"{fmt(row['mean'])} {tail}"
    half = (row["ci_high"] - row["ci_low"]) / 2
    return f"{fmt(row['mean'])} ± {fmt(half, 2)} {tail}"


def fmt_mean_interval(d: dict, digits: int = 3) -> str:
    """'mean [low, high]', or 'mean (n=1)' with a single value, '—' with none."""
    if d.get("mean") is None:
        return "—"
    if d.get("ci_low") is None:
        return f"{fmt(d['mean'], digits)} (n={d['n']})"
    return f"{fmt(d['mean'], digits)} [{fmt(d['ci_low'], digits)}, {fmt(d['ci_high'], digits)}]"


def fmt_mde(mde: float | None, mde_rel: float | None) -> str:
    if mde is None:
        return "—"
    return f"{fmt(mde, 3)} ({mde_rel * 100:.1f}%)" if mde_rel is not None else fmt(mde, 3)


def fmt_seeds(n: int | None, possible: bool = True) -> str:
    """Seeds needed; None reads "—", or "> SEEDS_MAX_N" when an effect and a noise level existed but even that
    many seeds would not reach the power."""
    if n is not None:
        return str(n)
    return f"> {SEEDS_MAX_N}" if possible else "—"
