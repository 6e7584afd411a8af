"""HTML building blocks: escaping, tables, figures and the page skeleton, with the CSS and JS inline.

Everything a page needs is in the page itself (no CDN, no web font, no external style sheet or script), so a site
works from `file://`, from any static host and offline. Every piece of text goes through `esc`: method labels
and config values can hold `<`, `&` and quotes.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import Any

from gapt_bench.results.analysis import Table
from gapt_bench.results.analysis.tables import VERDICT_TONE, key_columns, visible_columns, with_footnotes

GENERATOR = '<meta name="generator" content="gapt-bench site">'  # marks the pages a rebuild may replace
# Long-text columns of the analysis tables may wrap; every other cell stays on one line. Notes are footnotes.
WRAP = {"claim", "reason", "caption", "what", "memu", "dd", "ex", "fit", "paper", "stop"}
# Cells that may break at their spaces when a page is narrow (a sweep's setup, "mean ± half-width (n=3)").
SOFT = {"setup", "where", "role", "reference", "value", "scale"}

CSS = """
:root { color-scheme: light; --fg: #1d2430; --muted: #5b6472; --line: #d9dee5; --head: #f3f5f8; --accent: #1d3557; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--fg); margin: 0; }
header.top { background: var(--accent); color: #fff; padding: 10px 24px; }
header.top a { color: #fff; margin-right: 16px; text-decoration: none; }
header.top a.here { text-decoration: underline; font-weight: 600; }
header.top .brand { font-weight: 700; margin-right: 28px; }
main { padding: 8px 24px 24px; max-width: 1600px; }
h1 { font-size: 22px; margin: 16px 0 6px; } h2 { font-size: 18px; margin: 26px 0 6px; }
h3 { font-size: 15px; margin: 18px 0 4px; }
p.lead, .muted, caption, .caption { color: var(--muted); }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 6px 0 4px; font-variant-numeric: tabular-nums; }
caption { caption-side: bottom; text-align: left; font-size: 12px; padding-top: 4px; max-width: 1200px; }
th, td { border: 1px solid var(--line); padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: var(--head); font-weight: 600; white-space: nowrap; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th[data-dir="asc"]::after { content: " \\25B2"; font-size: 10px; }
table.sortable th[data-dir="desc"]::after { content: " \\25BC"; font-size: 10px; }
td { white-space: nowrap; } td.num { text-align: right; }
td.wrap { white-space: normal; min-width: 240px; max-width: 420px; }
td.soft { white-space: normal; }
ol.footnotes { color: var(--muted); font-size: 12px; margin: 4px 0 12px; padding-left: 26px; max-width: 1100px; }
ol.footnotes li:target { background: #fff6d6; }
a.fn { text-decoration: none; }
tr.section td { border-top: 2px solid #aab3bf; }
td.good { color: #146c2e; font-weight: 600; } td.bad { color: #b3261e; font-weight: 600; }
td.warn { color: #8a6100; }
ul.notes { color: var(--muted); font-size: 12px; margin: 4px 0 12px; padding-left: 18px; }
div.figures { display: flex; flex-wrap: wrap; gap: 12px 20px; align-items: flex-start; }
figure { margin: 8px 0 12px; flex: 0 1 720px; min-width: 320px; }
figure img { width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 12px; }
details { border: 1px solid var(--line); border-radius: 4px; margin: 4px 0; padding: 2px 8px; }
details > summary { cursor: pointer; padding: 2px 0; }
details[open] > summary { border-bottom: 1px solid var(--line); margin-bottom: 6px; }
div.run { display: flex; flex-wrap: wrap; gap: 0 36px; } div.run > div.wide { flex-basis: 100%; }
div.run h4 { margin: 6px 0 2px; font-size: 13px; }
pre.config { max-height: 340px; }
pre { background: #f7f8fa; border: 1px solid var(--line); padding: 6px 8px; overflow-x: auto; font-size: 12px; }
dl.kv { display: grid; grid-template-columns: max-content 1fr; gap: 1px 12px; margin: 4px 0; font-size: 12px; }
dl.kv dt { color: var(--muted); } dl.kv dd { margin: 0; word-break: break-all; }
svg.curve { display: block; margin: 4px 0; max-width: 100%; height: auto; }
footer.provenance { border-top: 1px solid var(--line); margin-top: 28px; padding: 10px 24px 24px;
                    color: var(--muted); font-size: 12px; }
footer.provenance code, .command { font-size: 12px; background: #f3f5f8; padding: 1px 4px; }
.status-ok { color: #146c2e; } .status-failed, .status-diverged { color: #b3261e; font-weight: 600; }
"""

# Click a header to sort its table; click again to reverse. A cell sorts by its data-sort attribute when it has one,
# else by its leading number ("2.08 ± 0.06 (n=3)" sorts as 2.08), else as text; empty and "—" cells sort last.
# A link to a run (#run-...) opens that run's details block.
JS = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  var heads = table.tHead ? table.tHead.rows[0].cells : [];
  Array.prototype.forEach.call(heads, function (th, col) {
    th.title = "sort by this column";
    th.addEventListener("click", function () {
      var dir = th.getAttribute("data-dir") === "asc" ? "desc" : "asc";
      Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("data-dir"); });
      th.setAttribute("data-dir", dir);
      var body = table.tBodies[0];
      var key = function (row) {
        var td = row.cells[col];
        var text = td ? (td.hasAttribute("data-sort") ? td.getAttribute("data-sort") : td.textContent.trim()) : "";
        var num = parseFloat(text.replace(/^[#\\[(]/, "").replace(/\\u2212/g, "-"));
        return isNaN(num) ? [text === "" || text === "\\u2014" ? 2 : 1, text] : [0, num];
      };
      var rows = Array.prototype.slice.call(body.rows).map(function (r, i) { return [key(r), i, r]; });
      rows.sort(function (a, b) {
        if (a[0][0] !== b[0][0]) { return a[0][0] - b[0][0]; }
        var c = a[0][1] < b[0][1] ? -1 : a[0][1] > b[0][1] ? 1 : 0;
        return (dir === "asc" ? c : -c) || a[1] - b[1];
      });
      rows.forEach(function (r) { body.appendChild(r[2]); });
    });
  });
});
var linked = location.hash && document.getElementById(decodeURIComponent(location.hash.slice(1)));
if (linked && linked.tagName === "DETAILS") { linked.open = true; }
"""


def esc(value: Any) -> str:
    """Text or attribute value, escaped (quotes included)."""
    return html.escape("" if value is None else str(value), quote=True)


def attrs(**kw: Any) -> str:
    """' key="value"' for each given attribute (None left out; class_ -> class, data_sort -> data-sort)."""
    return "".join(f' {k.rstrip("_").replace("_", "-")}="{esc(v)}"' for k, v in kw.items() if v is not None)


def notes_list(notes: Iterable[str]) -> str:
    items = [f"<li>{esc(n)}</li>" for n in notes]
    return f'<ul class="notes">{"".join(items)}</ul>' if items else ""


def table_html(table: Table, *, id_: str | None = None, sortable: bool = True, heading: str = "h3") -> str:
    """An analysis `Table` as HTML: title, header, rows, caption and notes; the text exactly as the CLI prints it.
    Notes are numbered footnotes under the table (each number links to its note), so no row grows tall; the
    table's key columns (`key_columns`) carry class "key" in the header."""
    table, footnotes = with_footnotes(table)
    cols = visible_columns(table) or list(table.columns)  # empty columns dropped, as the CLI drops them
    keys = key_columns(table)
    anchor = f"fn-{id_ or _slug(table.title)}"
    head = "".join(f"<th{attrs(class_='key' if k in keys else None)}>{esc(h or k)}</th>" for k, h in cols)
    body, prev = [], None
    for i, row in enumerate(table.rows):
        section = table.section_key and i and row.get(table.section_key) != prev
        prev = row.get(table.section_key) if table.section_key else None
        cells = "".join(_td(k, row.get(k, ""), anchor) for k, _ in cols)
        body.append(f"<tr{attrs(class_='section' if section else None)}>{cells}</tr>")
    if not body:
        body.append(f'<tr><td colspan="{len(cols)}" class="muted">no rows</td></tr>')
    title = f"<{heading}>{esc(table.title)}</{heading}>" if table.title else ""
    caption = f"<caption>{esc(table.caption)}</caption>" if table.caption else ""
    cls = "sortable" if sortable else None
    notes = "".join(f'<li id="{anchor}-{i}">{esc(n)}</li>' for i, n in enumerate(footnotes, 1))
    return (
        f'{title}<div class="scroll"><table{attrs(id=id_, class_=cls)}>{caption}<thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
        + (f'<ol class="footnotes">{notes}</ol>' if notes else "")
        + notes_list(table.notes)
    )


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower())[:48].strip("-") or "table"


def _td(key: str, value: Any, anchor: str = "fn") -> str:
    text = str(value)
    if key == "note" and text.startswith("[") and text.endswith("]") and text[1:-1].isdigit():
        return f'<td><a class="fn" href="#{anchor}-{text[1:-1]}">{esc(text)}</a></td>'
    if key == "verdict":
        cls = VERDICT_TONE.get(text)
    else:
        cls = "wrap" if key in WRAP else "soft" if key in SOFT else None
    return f"<td{attrs(class_=cls)}>{esc(value)}</td>"


def simple_table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    id_: str | None = None,
    sort_keys: Sequence[Sequence[Any]] | None = None,
    raw_cols: Iterable[int] = (),
    wrap_cols: Iterable[int] = (),
    key_cols: Iterable[int] = (),
) -> str:
    """A sortable table of plain cells; `sort_keys[i][j]` (when not None) becomes cell (i, j)'s data-sort;
    the columns in `raw_cols` hold HTML built by the caller (links), every other cell is escaped; the columns in
    `wrap_cols` may wrap (long text); the headers of `key_cols` carry class "key" (shown on a 1280-pixel page)."""
    raw_cols, wrap_cols, key_cols = set(raw_cols), set(wrap_cols), set(key_cols)
    head = "".join(f"<th{attrs(class_='key' if j in key_cols else None)}>{esc(h)}</th>" for j, h in enumerate(headers))
    body = []
    for i, row in enumerate(rows):
        keys = sort_keys[i] if sort_keys else [None] * len(row)
        cells = "".join(
            f"<td{attrs(class_='wrap' if j in wrap_cols else None, data_sort=k)}>{v if j in raw_cols else esc(v)}</td>"
            for j, (v, k) in enumerate(zip(row, keys))
        )
        body.append(f"<tr>{cells}</tr>")
    return (
        f'<div class="scroll"><table{attrs(id=id_, class_="sortable")}><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def kv_list(pairs: Iterable[tuple[str, Any]]) -> str:
    """A compact key/value list (environment, metrics)."""
    items = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in pairs)
    return f'<dl class="kv">{items}</dl>'


def link(href: str, text: str, **kw: Any) -> str:
    return f"<a{attrs(href=href, **kw)}>{esc(text)}</a>"


def figure(data_uri: str, caption: str) -> str:
    """An embedded image (a data: URI, never a file or network address) with its caption."""
    return (
        f"<figure><img{attrs(src=data_uri, alt=caption, loading='lazy')}>"
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def page(title: str, body: str, nav: Sequence[tuple[str, str]], here: str, footer: str) -> str:
    """A whole HTML document: the navigation (href, text), the body, the provenance footer; CSS and JS inline."""
    links = "".join(link(href, text, class_="here" if href == here else None) for href, text in nav)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"{GENERATOR}<title>{esc(title)}</title>"
        f'<style>{CSS}</style></head>\n<body><header class="top"><span class="brand">gapt-bench</span>'
        f"<nav>{links}</nav></header>\n<main>{body}</main>\n{footer}\n<script>{JS}</script></body></html>\n"
    )
