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


@dataclass
class Table:
    """One table: columns are (row key, header); empty columns are dropped when rendered."""

    title: str
    columns: list[tuple[str, str]]
    rows: list[dict[str, str]]
    caption: str = ""
    notes: list[str] = field(default_factory=list)
    section_key: str | None = None  # rich: start a new section where this column's value changes


def visible_columns(table: Table) -> list[tuple[str, str]]:
    """Columns with a value in some row (e.g. no setup column when a task has one setup); all of them when no row
    has a value, so an empty table keeps its header."""
    cols = [(k, h) for k, h in table.columns if any(r.get(k) not in ("", None) for r in table.rows)]
    return cols or list(table.columns)


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
