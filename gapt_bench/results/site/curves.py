"""A run's training curve as a small inline SVG: train CE, and mean MBE below it, compression phases shaded.

One per run, so it must be cheap for 10,000 runs: plain string formatting, no matplotlib, at most `MAX_POINTS`
points per line. Each panel names its axes and shows its value range; the legend names the line and the shading.
No xmlns attribute: inline SVG in HTML needs none, and the page then holds no address of any kind.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from gapt_bench.results.site.html import esc

MAX_POINTS = 300
WIDTH, PANEL_H, LEFT, RIGHT, TOP, GAP, BOTTOM = 460, 96, 58, 10, 18, 22, 34
PHASE2_COLOR = "#f4a261"  # the plots module's colour for phase 2
PANELS = (("ce", "train CE (nats)", "#1d3557"), ("mbe", "mean MBE", "#111111"))


def _num(v: object) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _points(rows: Sequence[dict], key: str) -> list[tuple[float, float]]:
    pts = [(x, y) for r in rows if (x := _num(r.get("step"))) is not None and (y := _num(r.get(key))) is not None]
    if len(pts) > MAX_POINTS:
        stride = math.ceil(len(pts) / MAX_POINTS)
        pts = pts[::stride] + ([pts[-1]] if (len(pts) - 1) % stride else [])
    return pts


def _spans(rows: Sequence[dict]) -> list[tuple[float, float]]:
    """[start, end) steps where phase == 2 (a span ends at the next logged row)."""
    spans, start, last = [], None, None
    for r in rows:
        x = _num(r.get("step"))
        if x is None:
            continue
        if r.get("phase") == 2 and start is None:
            start = x
        elif r.get("phase") != 2 and start is not None:
            spans.append((start, x))
            start = None
        last = x
    if start is not None and last is not None:
        spans.append((start, last))
    return spans


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def curve_svg(rows: Sequence[dict], title: str = "") -> str:
    """The SVG of a curve.jsonl's rows; "" when the rows hold no CE to draw."""
    series = [(key, label, color, pts) for key, label, color in PANELS if len(pts := _points(rows, key)) >= 1]
    if not series or series[0][0] != "ce":
        return ""
    xs = [x for *_, pts in series for x, _ in pts]
    x0, x1 = min(xs), max(xs)
    xr = (x1 - x0) or 1.0
    plot_w = WIDTH - LEFT - RIGHT
    height = TOP + len(series) * PANEL_H + (len(series) - 1) * GAP + BOTTOM
    spans = _spans(rows)

    def sx(x: float) -> float:
        return LEFT + (x - x0) / xr * plot_w

    out = [
        f'<svg class="curve" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" role="img" '
        f'aria-label="{esc(title or "training curve")}" font-family="sans-serif" font-size="10">'
    ]
    legend = f'<tspan fill="{PANELS[0][2]}">━ train CE</tspan>'
    if len(series) > 1:
        legend += '  <tspan fill="#111">━ mean MBE</tspan>'
    if spans:
        legend += f'  <tspan fill="{PHASE2_COLOR}">█</tspan> phase 2 (compression)'
    out.append(f'<text x="{LEFT}" y="11">{legend}</text>')
    for i, (_key, label, color, pts) in enumerate(series):
        top = TOP + i * (PANEL_H + GAP)
        ys = [y for _, y in pts]
        y0, y1 = min(ys), max(ys)
        yr = (y1 - y0) or (abs(y0) or 1.0)

        def sy(y: float, top: float = top, y0: float = y0, yr: float = yr) -> float:
            return top + PANEL_H - (y - y0) / yr * PANEL_H

        out.append(f'<rect x="{LEFT}" y="{top}" width="{plot_w}" height="{PANEL_H}" fill="none" stroke="#c9ced6"/>')
        for a, b in spans:
            out.append(
                f'<rect x="{sx(a):.1f}" y="{top}" width="{max(sx(b) - sx(a), 0.5):.1f}" height="{PANEL_H}" '
                f'fill="{PHASE2_COLOR}" fill-opacity="0.3"/>'
            )
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="1.4"/>')
        out.append(
            f'<text x="{LEFT - 4}" y="{top + 8}" text-anchor="end">{_fmt(y1)}</text>'
            f'<text x="{LEFT - 4}" y="{top + PANEL_H}" text-anchor="end">{_fmt(y0)}</text>'
            f'<text transform="translate(10 {top + PANEL_H / 2:.0f}) rotate(-90)" text-anchor="middle">'
            f"{esc(label)}</text>"
        )
    base = TOP + len(series) * PANEL_H + (len(series) - 1) * GAP
    out.append(
        f'<text x="{LEFT}" y="{base + 12}">{_fmt(x0)}</text>'
        f'<text x="{WIDTH - RIGHT}" y="{base + 12}" text-anchor="end">{_fmt(x1)}</text>'
        f'<text x="{LEFT + plot_w / 2:.0f}" y="{base + 26}" text-anchor="middle">optimizer step</text>'
    )
    out.append("</svg>")
    return "".join(out)
