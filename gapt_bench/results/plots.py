"""PNG figures: training curves with GAPT phases shaded, per-layer MBE bars, the capacity plateau, the
gradient-alignment cosine, and the text-memorization sweep (unintended memorization, double descent, extraction,
membership inference against the paper's law).

Figures are built on `matplotlib.figure.Figure` directly (Agg canvas, no pyplot state), so plotting is safe in
worker processes and tests, and never opens a window. Each writer takes plain rows/records and an output path and
returns the path; `plot_all` finds what a results folder holds and writes every figure it can.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.patches import Patch

from gapt_bench.results import stats
from gapt_bench.results.analysis import (
    CAPACITY_TASK,
    MEMORIZATION_TASK,
    PAPER_ALPHA_SLOPE,
    Group,
    controls_by_method,
    group_records,
    method_order,
    natural_key,
    stopped_on_budget,
)

PHASE2_COLOR = "#f4a261"
PHASE2_LABEL = "phase 2 (compression)"
BUDGET_LABEL = "hollow: stopped on the step budget (not converged; a lower bound)"
METHOD_COLORS = {"baseline": "#6c757d", "gapt": "#1d3557", "periodic": "#e76f51", "mbe": "#2a9d8f"}


def _read_jsonl(path: Path) -> list[dict]:
    """Tolerant JSONL reader for curves: a torn last line (a run killed mid-write) is skipped, not fatal."""
    rows = []
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def read_curve(path: Path | str) -> list[dict]:
    return _read_jsonl(Path(path))


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", s).strip("-") or "x"


def _save(fig: Figure, out_path: Path | str) -> Path:
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    return out


def _series(rows: Sequence[dict], key: str, x: str = "step") -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for r in rows:
        v = r.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v) and r.get(x) is not None:
            xs.append(r[x])
            ys.append(float(v))
    return xs, ys


def phase_spans(rows: Sequence[dict], x: str = "step") -> list[tuple[float, float]]:
    """[start, end) x-ranges where phase == 2; a span ends at the next logged row."""
    spans, start = [], None
    for _i, r in enumerate(rows):
        if r.get("phase") == 2 and start is None:
            start = r[x]
        elif r.get("phase") != 2 and start is not None:
            spans.append((start, r[x]))
            start = None
    if start is not None and rows:
        spans.append((start, rows[-1][x]))
    return spans


def _shade(ax: Any, spans: list[tuple[float, float]]) -> None:
    for a, b in spans:
        ax.axvspan(a, b, color=PHASE2_COLOR, alpha=0.25, lw=0)


def _layer_keys(rows: Sequence[dict], prefix: str) -> list[str]:
    pat = re.compile(rf"^{re.escape(prefix)}_layer_(\d+)$")
    keys = {k for r in rows for k in r if pat.match(k)}
    return sorted(keys, key=lambda k: int(pat.match(k).group(1)))  # type: ignore[union-attr]


def plot_training_curve(rows: Sequence[dict], out_path: Path | str, title: str = "") -> Path:
    """CE (top) and MBE (bottom: mean bold, each layer thin) over steps, compression phases shaded."""
    layer_keys = _layer_keys(rows, "mbe")
    has_mbe = any(r.get("mbe") is not None for r in rows) or bool(layer_keys)
    fig = Figure(figsize=(8, 6.5 if has_mbe else 3.8))
    axes = fig.subplots(2 if has_mbe else 1, 1, sharex=True, squeeze=False)[:, 0]
    spans = phase_spans(rows)
    ax = axes[0]
    ax.plot(*_series(rows, "ce"), color="#1d3557", lw=1.5, label="train CE")
    ax.set_ylabel("cross-entropy (nats)")
    if has_mbe:
        ax2 = axes[1]
        for i, k in enumerate(layer_keys):
            color = _cmap_color(i, len(layer_keys))
            ax2.plot(*_series(rows, k), lw=0.8, alpha=0.8, color=color, label=k.replace("mbe_", ""))
        ax2.plot(*_series(rows, "mbe"), color="black", lw=2, label="mean MBE")
        ax2.set_ylabel("matrix-based entropy")
    for a in axes:
        _shade(a, spans)
        a.grid(alpha=0.3)
    axes[-1].set_xlabel("optimizer step")
    handles, _labels = axes[0].get_legend_handles_labels()
    if spans:
        handles.append(Patch(color=PHASE2_COLOR, alpha=0.4, label=PHASE2_LABEL))
    axes[0].legend(handles=handles, loc="upper right", fontsize=8)
    if has_mbe:
        axes[1].legend(loc="upper right", fontsize=7, ncol=2 if len(layer_keys) > 6 else 1)
    fig.suptitle(title or "training curve")
    return _save(fig, out_path)


def _cmap_color(i: int, n: int) -> Any:
    from matplotlib import colormaps

    return colormaps["viridis"](i / max(1, n - 1) * 0.9)


def _method_color(method: str, i: int) -> Any:
    from matplotlib import colormaps

    return METHOD_COLORS.get(method, colormaps["tab10"](i % 10))


def plot_layer_mbe(
    records: Sequence[dict], out_path: Path | str, prefix: str = "val_mbe", title: str = "", reference: str = "baseline"
) -> Path:
    """Per-layer MBE (mean over seeds, 95% t-CI whiskers), one bar per method group, for records of one setup."""
    groups = [g for g in group_records(records) if g.ok]
    keys = sorted(
        {
            k
            for g in groups
            for r in g.ok
            for k in (r.get("metrics") or {})
            if re.match(rf"^{re.escape(prefix)}_layer_\d+$", k)
        },
        key=natural_key,
    )
    order = {
        m: i for i, m in enumerate(method_order({g.method for g in groups}, reference, controls_by_method(records)))
    }
    groups.sort(key=lambda g: (order[g.method], g.variant))
    fig = Figure(figsize=(max(6.0, 0.9 * len(keys) + 2), 4))
    ax = fig.subplots()
    width = 0.8 / max(1, len(groups))
    for j, g in enumerate(groups):
        means, errs = [], []
        for k in keys:
            d = stats.describe([v for _, v in g.seed_values(k)])
            means.append(d["mean"] if d["mean"] is not None else float("nan"))
            errs.append(0.0 if d["ci_low"] is None else (d["ci_high"] - d["ci_low"]) / 2)
        xs = [i + (j - (len(groups) - 1) / 2) * width for i in range(len(keys))]
        n = len(g.ok)
        ax.bar(xs, means, width, yerr=errs, capsize=2, color=_method_color(g.method, j), label=f"{g.label} (n={n})")
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels([k.rsplit("_", 1)[-1] for k in keys])
    ax.set_xlabel("layer")
    ax.set_ylabel(f"{prefix} (matrix-based entropy)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or f"per-layer {prefix}: mean ± 95% CI over seeds")
    return _save(fig, out_path)


def capacity_series(records: Sequence[dict]) -> dict[tuple, list[dict]]:
    """(model (n_layer, n_embd), method) -> points sorted by data bits: {"x": data bits, "y": mean memorized bits
    over seeds (strict), "n": runs, "budget": how many of them stopped on the step budget (not converged)}."""
    cells: dict[tuple, dict[float, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        m = r.get("metrics") or {}
        if r.get("status", "ok") != "ok" or m.get("data_bits") is None or m.get("mem_bits") is None:
            continue
        model = (r.get("config") or {}).get("model") or {}
        cells[((model.get("n_layer"), model.get("n_embd")), r.get("method", ""))][float(m["data_bits"])].append(
            {
                "mem_bits": float(m["mem_bits"]),
                "budget": stopped_on_budget({"stop_reason": r.get("stop_reason"), "converged": m.get("converged")}),
            }
        )
    return {
        key: [
            {
                "x": x,
                "y": sum(p["mem_bits"] for p in pts) / len(pts),
                "n": len(pts),
                "budget": sum(p["budget"] for p in pts),
            }
            for x, pts in sorted(series.items())
        ]
        for key, series in cells.items()
    }


def _ceiling_alpha(records: Sequence[dict]) -> tuple[float, str]:
    """The paper's slope in the plot's (strict) convention: 3.64 x (S-1)/S when the runs share one S."""
    seq_lens = {((r.get("config") or {}).get("train") or {}).get("seq_len") for r in records}
    if len(seq_lens) == 1 and isinstance(s := next(iter(seq_lens)), int) and s > 1:
        a = PAPER_ALPHA_SLOPE * (s - 1) / s
        return a, f"α·P, α = {PAPER_ALPHA_SLOPE:g}·(S−1)/S = {a:.3g} (paper's slope, strict convention, S={s})"
    return PAPER_ALPHA_SLOPE, f"α·P, α = {PAPER_ALPHA_SLOPE:g} bits/param (paper convention)"


def capacity_figure(records: Sequence[dict], alpha: float | None = None, title: str = "") -> Figure:
    """Memorized bits vs data entropy: one line per (model, method), mean over seeds per data size; colour by
    model (with its α·P ceiling dashed), line style by method; the y = x line (no model memorizes more than the
    data holds). Points whose runs stopped on the step budget (not converged: a lower bound) are hollow."""
    from matplotlib.ticker import NullFormatter

    series = capacity_series(records)
    params: dict[tuple, list[float]] = defaultdict(list)
    for r in records:
        model = (r.get("config") or {}).get("model") or {}
        if r.get("n_params") and r.get("status", "ok") == "ok":
            params[(model.get("n_layer"), model.get("n_embd"))].append(float(r["n_params"]))
    if alpha is None:
        alpha, alpha_label = _ceiling_alpha(records)
    else:
        alpha_label = f"α·P, α = {alpha:g} bits/param"
    models = sorted({k for k, _ in series}, key=lambda k: (k[0] or 0, k[1] or 0))
    methods = sorted({meth for _, meth in series}, key=lambda x: (x != "baseline", x))
    styles = ["-", "--", "-.", ":"]
    fig = Figure(figsize=(7.5, 5))
    ax = fig.subplots()
    all_x: list[float] = []
    any_budget = False
    for (key, method), pts in sorted(series.items(), key=lambda kv: (models.index(kv[0][0]), methods.index(kv[0][1]))):
        xs, ys = [p["x"] for p in pts], [p["y"] for p in pts]
        all_x += xs
        color = _cmap_color(models.index(key), len(models))
        p = sum(params[key]) / len(params[key]) if params[key] else None
        label = f"L={key[0]}, d={key[1]}" + (f" (P={_fmt_params(p)})" if p else "") + f", {method}"
        ax.plot(xs, ys, "o", ls=styles[methods.index(method) % len(styles)], color=color, label=label)
        hollow = [q for q in pts if q["budget"]]
        if hollow:
            any_budget = True
            ax.plot(
                [q["x"] for q in hollow],
                [q["y"] for q in hollow],
                "o",
                ls="none",
                color=color,
                markerfacecolor="white",
                zorder=3,
            )
    for key in models:
        if params[key]:
            ax.axhline(
                alpha * sum(params[key]) / len(params[key]),
                color=_cmap_color(models.index(key), len(models)),
                ls=(0, (6, 3)),
                lw=0.8,
                alpha=0.7,
            )
    if all_x:
        lo, hi = min(all_x), max(all_x)
        ax.plot([lo, hi], [lo, hi], ":", color="gray", label="memorized = data entropy")
        if hi / max(lo, 1e-12) > 20:
            ax.set_xscale("log")
            ax.set_yscale("log")
            for axis in (ax.xaxis, ax.yaxis):
                axis.set_minor_formatter(NullFormatter())
    ax.plot([], [], ls=(0, (6, 3)), color="black", lw=0.8, label=alpha_label)
    if any_budget:
        ax.plot([], [], "o", ls="none", color="black", markerfacecolor="white", label=BUDGET_LABEL)
    ax.set_xlabel("data entropy H(X) (bits, strict convention)")
    ax.set_ylabel("memorized bits (strict convention)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    ax.set_title(title or "capacity plateau: memorization saturates at α·P")
    return fig


def plot_capacity(records: Sequence[dict], out_path: Path | str, alpha: float | None = None, title: str = "") -> Path:
    """`capacity_figure` written to a PNG."""
    return _save(capacity_figure(records, alpha, title), out_path)


def _fmt_params(p: float) -> str:
    return f"{p / 1e6:.3g}M" if p >= 1e6 else f"{p / 1e3:.3g}k" if p >= 1e3 else f"{p:.0f}"


def plot_alignment(curves: dict[str, Sequence[dict]], out_path: Path | str, title: str = "") -> Path:
    """Cosine between the CE and MBE gradients over steps, one line per run; phases shaded when one run has them."""
    fig = Figure(figsize=(8, 3.8))
    ax = fig.subplots()
    phased = [(label, rows) for label, rows in curves.items() if any(r.get("phase") == 2 for r in rows)]
    if len(phased) == 1:
        _shade(ax, phase_spans(phased[0][1]))
    for i, (label, rows) in enumerate(curves.items()):
        ax.plot(*_series(rows, "align_cos"), "-", lw=1.2, color=_method_color(label.split()[0], i), label=label)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_ylim(-1.05, 1.05)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cos(∇CE, ∇MBE)")
    ax.grid(alpha=0.3)
    handles, _ = ax.get_legend_handles_labels()
    if len(phased) == 1:
        handles.append(Patch(color=PHASE2_COLOR, alpha=0.4, label=f"{PHASE2_LABEL} of {phased[0][0]}"))
    ax.legend(handles=handles, fontsize=8)
    ax.set_title(title or "gradient alignment of CE and MBE")
    return _save(fig, out_path)


# ---------------------------------------------------------------------------------------------------------------
# text memorization: figures drawn from `analysis.analyse_memorization` results

METHOD_STYLES = ["-", "--", "-.", ":"]


def _mem_series(result: dict):
    """(group, model, colour, line style, label) for every (method, model) of a memorization result."""
    groups = result.get("groups") or []
    labels = sorted(
        {m["label"] for g in groups for m in g["models"]},
        key=lambda lb: min(m["n_params"] or 0 for g in groups for m in g["models"] if m["label"] == lb),
    )
    methods = sorted({g["method"] for g in groups}, key=lambda x: (x != result.get("reference", "baseline"), x))
    for g in groups:
        for m in g["models"]:
            color = _cmap_color(labels.index(m["label"]), len(labels))
            style = METHOD_STYLES[methods.index(g["method"]) % len(METHOD_STYLES)]
            prec = f" {g['precision']}" if len({x["precision"] for x in groups}) > 1 else ""
            yield g, m, color, style, f"{m['label']} (P={_fmt_params(m['n_params'] or 0)}), {g['method']}{prec}"


def _errbar(ax: Any, xs: list, ds: list[dict], color: Any, style: str, label: str, marker: str = "o") -> None:
    ys = [d["mean"] if d.get("mean") is not None else float("nan") for d in ds]
    lo = [y - d["ci_low"] if d.get("ci_low") is not None else 0.0 for y, d in zip(ys, ds)]
    hi = [d["ci_high"] - y if d.get("ci_high") is not None else 0.0 for y, d in zip(ys, ds)]
    ax.errorbar(xs, ys, yerr=[lo, hi], fmt=marker, ls=style, color=color, capsize=2, label=label, ms=4)


def memorization_unintended_figure(result: dict, title: str = "") -> Figure:
    """Total unintended memorization of the training set (against the same-size reference) against N, one line per
    (model, method), mean with 95% t-CI over seeds; a rise then a fall is the paper's text finding."""
    fig = Figure(figsize=(7.5, 4.8))
    ax = fig.subplots()
    for _g, m, color, style, label in _mem_series(result):
        cells = m["cells"]
        _errbar(ax, [c["n_sequences"] for c in cells], [c["mem_u_bits"] for c in cells], color, style, label)
    ax.set_xscale("log")
    ax.set_xlabel("training sequences N")
    ax.set_ylabel("unintended memorization Σ max(0, log2 p̂ − log2 p_ref) (bits)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    ax.set_title(title or "unintended memorization vs N (mean ± 95% CI over seeds)")
    return fig


def memorization_double_descent_figure(result: dict, title: str = "") -> Figure:
    """Test CE (solid markers) and train CE (hollow) against the realised data-to-capacity ratio; ratio 1 marked,
    the band within a factor 2 of it shaded, each model's highest mean test CE circled."""
    fig = Figure(figsize=(7.5, 4.8))
    ax = fig.subplots()
    for _g, m, color, style, label in _mem_series(result):
        cells = m["cells"]
        xs = [c["ratio"]["mean"] for c in cells]
        _errbar(ax, xs, [c["test_ce"] for c in cells], color, style, f"{label}: test")
        ax.plot(
            xs,
            [c["train_ce"]["mean"] for c in cells],
            "o",
            ls=style,
            color=color,
            markerfacecolor="white",
            lw=0.8,
            alpha=0.7,
            ms=4,
        )
        dd = m.get("double_descent") or {}
        if dd.get("peak_ratio") is not None:
            ax.plot(
                [dd["peak_ratio"]],
                [dd["peak_loss"]],
                "o",
                ms=12,
                markerfacecolor="none",
                color=color,
                markeredgewidth=1.5 if dd.get("located") else 0.6,
            )
    ax.axvspan(0.5, 2.0, color="gray", alpha=0.1, lw=0)
    ax.axvline(1.0, color="black", lw=0.8, ls=":")
    ax.plot([], [], "o", ls="none", color="black", markerfacecolor="white", label="train CE (hollow)")
    ax.plot(
        [],
        [],
        "o",
        ms=12,
        ls="none",
        markerfacecolor="none",
        color="black",
        label="highest mean test CE (thick: bracketed)",
    )
    ax.set_xscale("log")
    ax.set_xlabel("data / capacity = Σ −log2 p_ref(x) / (α·P)")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    ax.set_title(title or "double descent: test loss vs data-to-capacity ratio (paper: peak at 1)")
    return fig


def memorization_extraction_figure(result: dict, title: str = "") -> Figure:
    """Greedy extraction rate against N, one panel per prefix length: training sequences (filled) and non-members
    (hollow, dotted), which the training rate should converge to."""
    groups = result.get("groups") or []
    prefixes = sorted({p for g in groups for p in g.get("prefixes") or []})
    fig = Figure(figsize=(4.0 * max(1, len(prefixes)), 4.2))
    axes = fig.subplots(1, max(1, len(prefixes)), squeeze=False, sharey=True)[0]
    for ax, p in zip(axes, prefixes):
        for _g, m, color, style, label in _mem_series(result):
            cells = [c for c in m["cells"] if str(p) in c["extraction"]]
            xs = [c["n_sequences"] for c in cells]
            _errbar(ax, xs, [c["extraction"][str(p)]["train"] for c in cells], color, style, f"{label}: train")
            ax.plot(
                xs,
                [c["extraction"][str(p)]["test"]["mean"] for c in cells],
                "o",
                ls=":",
                color=color,
                markerfacecolor="white",
                ms=4,
            )
        ax.set_xscale("log")
        ax.set_title(f"{p}-token prefix", fontsize=9)
        ax.set_xlabel("training sequences N")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("exact greedy extraction rate")
    axes[0].plot([], [], "o", ls=":", color="black", markerfacecolor="white", label="non-members (test)")
    axes[0].legend(fontsize=6)
    fig.suptitle(title or "extraction vs N: training rate converges to the non-member rate")
    return fig


def memorization_membership_figure(result: dict, title: str = "") -> Figure:
    """Membership-inference F1 of every run against N/P, cell means with 95% CIs, the paper's law (corrected form)
    and the law fitted to these runs; 0.5 = chance."""
    import numpy as np

    from gapt_bench.results.analysis import laws

    fig = Figure(figsize=(7.5, 4.8))
    ax = fig.subplots()
    xs_all: list[float] = []
    for _g, m, color, style, label in _mem_series(result):
        cells = m["cells"]
        xs = [c["d_over_p"] for c in cells]
        xs_all += [x for x in xs if x]
        _errbar(ax, xs, [c["mi_f1"] for c in cells], color, style, label)
    if xs_all:
        grid = np.geomspace(min(xs_all) / 2, max(xs_all) * 2, 200)
        ax.plot(grid, laws.mi_law_paper_corrected(grid), color="black", lw=1.5, label="paper's law (corrected form)")
        for i, g in enumerate(result.get("groups") or []):
            law = g.get("mi_law") or {}
            fit = law.get("fit") if (law.get("fit") or {}).get("ok") else law.get("fit_log10")
            if fit and fit.get("ok"):
                ps = fit["params"]
                u = grid if fit["x_scale"] == "linear" else np.log10(grid)
                ax.plot(
                    grid,
                    laws.mi_law_form(u, ps["c1"], ps["a"], ps["b"]),
                    color=_method_color(g["method"], i),
                    lw=1,
                    ls=(0, (4, 2)),
                    label=f"fitted law, {g['method']} ({fit['x_scale']}, rms {fit['rms']:.3f})",
                )
        ax.set_xscale("log")
    ax.axhline(0.5, color="gray", lw=0.8, ls=":", label="chance (0.5)")
    ax.set_xlabel("training sequences per parameter N/P (|D|/P)")
    ax.set_ylabel("loss-threshold membership F1")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    ax.set_title(title or "membership inference vs N/P")
    return fig


MEMORIZATION_FIGURES = {
    "unintended": memorization_unintended_figure,
    "double_descent": memorization_double_descent_figure,
    "extraction": memorization_extraction_figure,
    "membership": memorization_membership_figure,
}


def plot_memorization(result: dict, out_dir: Path | str, prefix: str = "text_memorization") -> list[Path]:
    """The four text-memorization figures of an `analyse_memorization` result, as `<prefix>_<name>.png`."""
    out_dir = Path(out_dir)
    return [_save(fn(result), out_dir / f"{prefix}_{name}.png") for name, fn in MEMORIZATION_FIGURES.items()]


# ---------------------------------------------------------------------------------------------------------------


def find_curve(results_dir: Path, record: dict) -> Path | None:
    """A run's curve.jsonl: <results>/runs/<run_id>/curve.jsonl (or <results>/<run_id>/curve.jsonl)."""
    run_id = str(record.get("run_id", ""))
    for p in (results_dir / "runs" / run_id / "curve.jsonl", results_dir / run_id / "curve.jsonl"):
        if run_id and p.is_file():
            return p
    return None


def _representative(g: Group) -> dict:
    """The lowest-seed ok run: one curve per group, the same seed for every method (seed 2 before seed 10)."""
    return min(g.ok, key=lambda r: (natural_key(str(r.get("seed"))), natural_key(str(r.get("run_id")))))


def plot_all(results_dir: Path | str, out_dir: Path | str) -> list[Path]:
    """Every figure the results allow: curves per group, alignment and layer bars per setup, capacity plateau,
    the text-memorization figures. Records are read as the store merges them (runs.jsonl and OUT/records)."""
    from gapt_bench.results.store import has_results, read_records, runs_file, split_kinds

    results_dir, out_dir = Path(results_dir), Path(out_dir)
    runs = runs_file(results_dir)
    results_dir = runs.parent
    records = split_kinds(read_records(runs, warn=False))[0] if has_results(runs) else []
    groups = [g for g in group_records(records) if g.ok]
    written: list[Path] = []
    by_setup: dict[tuple, list[Group]] = defaultdict(list)
    for g in groups:
        by_setup[(g.task, g.setup_hash)].append(g)
    for (task, setup_hash), gs in sorted(by_setup.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        setup = gs[0].setup_label
        suffix = f"{task}_{str(setup_hash)[:8]}"
        written += _curves_for_setup(results_dir, out_dir, task, setup, gs)
        recs = [r for g in gs for r in g.ok]
        for prefix in ("val_mbe", "ood_mbe", "mbe"):
            if any(re.match(rf"^{prefix}_layer_\d+$", k) for r in recs for k in (r.get("metrics") or {})):
                written.append(
                    plot_layer_mbe(
                        recs,
                        out_dir / f"layers_{prefix}_{_slug(suffix)}.png",
                        prefix,
                        title=f"{task}{f' [{setup}]' if setup else ''}: per-layer {prefix}",
                    )
                )
    cap = [r for g in groups if g.task == CAPACITY_TASK for r in g.ok]
    if any("mem_bits" in (r.get("metrics") or {}) for r in cap):
        written.append(plot_capacity(cap, out_dir / "capacity_plateau.png"))
    mem = [r for g in groups if g.task == MEMORIZATION_TASK for r in g.ok]
    if mem:
        from gapt_bench.results.analysis import analyse_memorization

        result = analyse_memorization(mem)
        if result["groups"]:
            written += plot_memorization(result, out_dir)
    return written


def _curves_for_setup(results_dir: Path, out_dir: Path, task: str, setup: str, gs: list[Group]) -> list[Path]:
    written, aligned = [], {}
    for g in gs:
        rec = _representative(g)
        path = find_curve(results_dir, rec)
        if path is None:
            continue
        rows = read_curve(path)
        if not rows:
            continue
        name = f"curve_{task}_{g.label}_{str(g.config_hash)[:8]}"
        title = f"{task} / {g.label}{f' [{setup}]' if setup else ''} (seed {rec.get('seed')})"
        written.append(plot_training_curve(rows, out_dir / f"{_slug(name)}.png", title))
        if any(r.get("align_cos") is not None for r in rows):
            aligned[f"{g.label} (seed {rec.get('seed')})"] = rows
    if aligned:
        name = f"alignment_{task}_{gs[0].setup_hash}"[:60]
        written.append(
            plot_alignment(
                aligned, out_dir / f"{_slug(name)}.png", f"{task}{f' [{setup}]' if setup else ''}: cos(∇CE, ∇MBE)"
            )
        )
    return written
