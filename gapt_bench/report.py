"""From run records to answers: per-seed aggregates, method-vs-reference comparisons, the paper side by side,
a leaderboard, and the regression gate.

Everything takes plain record dicts (one JSON object per line of `<results>/runs.jsonl`) and returns plain,
JSON-ready dicts and lists; renderers turn those into rich tables or markdown. Nothing here parses arguments,
prints unasked or exits: the CLI maps results and exceptions to exit codes.

Grouping. A *group* is (task, task_version, method, config_hash): the seeds of one configuration. Only records
with status "ok" are replicates; diverged and failed runs are counted per group and shown, never silently
dropped. Two groups are *comparable* only if task, task_version and setup_hash (data, model, train, MBE) agree.

Controls beside effects. Rows are ordered so that a reader sees whether an effect survives its control: a metric
`X_centered` directly follows `X`, method `periodic` follows `gapt`, and setups that differ only in e.g.
`data.batch_layout` (grouped vs shuffled in the forgetting task) sit next to each other with their label.
"""
from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from gapt_bench import stats

ALPHA = 0.05
CENTERED_SUFFIX = "_centered"
LAYER_RE = re.compile(r"_layer_\d+")
# method -> its controls, listed right after it
CONTROL_METHODS: dict[str, tuple[str, ...]] = {"gapt": ("periodic",)}
SETUP_SECTIONS = ("data", "model", "train", "mbe")
METHOD_SECTIONS = ("reg", "gapt", "align")
ARROWS = {"min": "↓", "max": "↑"}
# Guess for records that lack metric_directions (old records): these names are "higher is better".
HIGHER_IS_BETTER_HINTS = ("acc", "separation", "bits", "mem_", "tokens_per_s", "win")


class ReportError(ValueError):
    """Records that cannot be reported on (e.g. none at all); str() is a one-line message."""


# ---------------------------------------------------------------------------------------------------------------
# Small helpers


def is_layer_metric(name: str) -> bool:
    return bool(LAYER_RE.search(name))


def _natural(s: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s))


def metric_sort_key(name: str) -> tuple:
    """Headline metrics first, per-layer last; `X_centered` right after `X`."""
    centered = name.endswith(CENTERED_SUFFIX)
    base = name[: -len(CENTERED_SUFFIX)] if centered else name
    return (is_layer_metric(name), _natural(base), centered)


def method_order(methods: Iterable[str], reference: str) -> list[str]:
    """Reference first, then alphabetical, each control method placed right after the method it controls."""
    rest = sorted(set(methods) - {reference})
    ordered: list[str] = [reference] if reference in set(methods) else []
    controls = {c for cs in CONTROL_METHODS.values() for c in cs}
    for m in rest:
        if m in controls and any(m in CONTROL_METHODS.get(e, ()) and e in rest for e in CONTROL_METHODS):
            continue  # placed after its effect method
        ordered.append(m)
        ordered.extend(c for c in CONTROL_METHODS.get(m, ()) if c in rest)
    return ordered


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def diff_labels(configs: dict[Any, dict]) -> dict[Any, str]:
    """A short label per config naming only the keys whose values differ between them ("" if all agree)."""
    flat = {k: _flatten(c) for k, c in configs.items()}
    keys = sorted(set().union(*flat.values())) if flat else []
    varying = [k for k in keys if len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flat.values()}) > 1]
    labels = {}
    for k, f in flat.items():
        parts = [f"{key.rsplit('.', 1)[-1]}={f.get(key)}" for key in varying]
        labels[k] = ", ".join(parts[:4]) + (", …" if len(parts) > 4 else "")
    return labels


def _clean(obj: Any) -> Any:
    """JSON-ready: numpy scalars to Python, NaN/inf to None, tuples to lists."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _mean(xs: Sequence[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def _direction(records: Iterable[dict], metric: str) -> str:
    for r in records:
        d = (r.get("metric_directions") or {}).get(metric)
        if d in ("min", "max"):
            return d
    return "max" if any(h in metric for h in HIGHER_IS_BETTER_HINTS) else "min"


def precision_of(record: dict) -> str:
    """fp32 or bf16 for a run: the config value, or, for "auto" (bf16 on CUDA), what the run's env implies."""
    summary = record.get("summary") or {}
    if summary.get("precision") in ("fp32", "bf16"):
        return summary["precision"]
    train = (record.get("config") or {}).get("train") or {}
    p = train.get("precision", "auto")
    if p in ("fp32", "bf16"):
        return p
    device = str((record.get("env") or {}).get("device") or train.get("device", "cpu"))
    return "bf16" if device.startswith("cuda") else "fp32"


# ---------------------------------------------------------------------------------------------------------------
# Groups


@dataclass
class Group:
    """The records of one (task, task_version, method, config_hash)."""

    task: str
    task_version: str
    method: str
    config_hash: str
    setup_hash: str
    preset: str
    config: dict
    ok: list[dict] = field(default_factory=list)
    n_diverged: int = 0
    n_failed: int = 0
    schema_versions: set = field(default_factory=set)
    setup_label: str = ""
    variant: str = ""

    @property
    def label(self) -> str:
        return f"{self.method} [{self.variant}]" if self.variant else self.method

    @property
    def layout(self) -> str | None:
        return (self.config.get("data") or {}).get("batch_layout")

    @property
    def metrics(self) -> set[str]:
        return {m for r in self.ok for m in (r.get("metrics") or {})}

    def seed_values(self, metric: str) -> list[tuple[Any, float]]:
        """(seed, value) of every ok run with a finite value for the metric."""
        out = []
        for r in self.ok:
            v = (r.get("metrics") or {}).get(metric)
            if isinstance(v, (int, float)) and math.isfinite(v):
                out.append((r.get("seed"), float(v)))
        return out

    @property
    def n_params(self) -> float | None:
        return _mean([r.get("n_params") for r in self.ok])


def group_records(records: Iterable[dict]) -> list[Group]:
    """Groups in a stable order, with setup labels (per task) and variant labels (per task and method)."""
    groups: dict[tuple, Group] = {}
    for r in records:
        key = (r.get("task"), str(r.get("task_version")), r.get("method"), r.get("config_hash"))
        g = groups.get(key)
        if g is None:
            g = groups[key] = Group(task=key[0], task_version=key[1], method=key[2], config_hash=key[3],
                                    setup_hash=r.get("setup_hash"), preset=r.get("preset", ""),
                                    config=r.get("config") or {})
        g.schema_versions.add(r.get("schema_version"))
        status = r.get("status", "ok")
        if status == "ok":
            g.ok.append(r)
        elif status == "diverged":
            g.n_diverged += 1
        else:
            g.n_failed += 1
    out = sorted(groups.values(), key=lambda g: (g.task, g.task_version, g.method, g.config_hash))
    _label_groups(out)
    return out


def _label_groups(groups: list[Group]) -> None:
    by_task: dict[str, list[Group]] = defaultdict(list)
    for g in groups:
        by_task[g.task].append(g)
    for gs in by_task.values():
        setups = {g.setup_hash: {s: g.config.get(s) for s in SETUP_SECTIONS} for g in gs}
        labels = diff_labels(setups)
        by_method: dict[str, list[Group]] = defaultdict(list)
        for g in gs:
            g.setup_label = labels[g.setup_hash]
            by_method[g.method].append(g)
        for mgs in by_method.values():
            variants = diff_labels({g.config_hash: {s: g.config.get(s) for s in METHOD_SECTIONS} for g in mgs})
            for g in mgs:
                g.variant = variants[g.config_hash]


def _task_metrics(groups: list[Group]) -> dict[str, list[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for g in groups:
        out[g.task] |= g.metrics
    return {t: sorted(ms, key=metric_sort_key) for t, ms in out.items()}


def _group_row(g: Group, metric: str, direction: str) -> dict:
    pairs = g.seed_values(metric)
    d = stats.describe([v for _, v in pairs])
    row = {"task": g.task, "task_version": g.task_version, "method": g.method, "variant": g.variant,
           "label": g.label, "metric": metric, "direction": direction, **d,
           "seeds": [s for s, _ in pairs], "config_hash": g.config_hash, "setup_hash": g.setup_hash,
           "setup": g.setup_label, "layout": g.layout, "preset": g.preset, "n_diverged": g.n_diverged,
           "n_failed": g.n_failed, "n_params": g.n_params,
           "precision": precision_of(g.ok[0]) if g.ok else None,
           "model": {k: (g.config.get("model") or {}).get(k) for k in ("n_layer", "n_embd", "n_head")}}
    return row


# ---------------------------------------------------------------------------------------------------------------
# Comparisons


def pair_by_seed(a: list[tuple[Any, float]], b: list[tuple[Any, float]]) -> tuple[list[float], list[float], bool]:
    """Values in seed order when both arms have the same unique seeds (paired design), else as they come."""
    sa, sb = [s for s, _ in a], [s for s, _ in b]
    paired = len(set(sa)) == len(sa) and set(sa) == set(sb) and len(sa) == len(sb) and None not in sa
    if not paired:
        return [v for _, v in a], [v for _, v in b], False
    db = dict(b)
    order = sorted(sa, key=str)
    return [dict(a)[s] for s in order], [db[s] for s in order], True


def _compare_groups(g: Group, ref: Group, metric: str, direction: str, alpha: float) -> dict:
    a, b, paired = pair_by_seed(g.seed_values(metric), ref.seed_values(metric))
    res = stats.compare(a, b, paired=paired, higher_is_better=direction == "max", alpha=alpha)
    return {"task": g.task, "task_version": g.task_version, "metric": metric, "direction": direction,
            "method": g.method, "variant": g.variant, "label": g.label, "reference": ref.method,
            "reference_label": ref.label, "setup": g.setup_label, "layout": g.layout, "setup_hash": g.setup_hash,
            "config_hash": g.config_hash, "reference_config_hash": ref.config_hash, "preset": g.preset,
            "n_params": g.n_params, "paired": paired, **res}


def _pick_reference(g: Group, refs: list[Group]) -> Group | None:
    same = [r for r in refs if r.task == g.task and r.task_version == g.task_version and r.setup_hash == g.setup_hash]
    return max(same, key=lambda r: len(r.ok), default=None)


def build_report(records: Sequence[dict], reference: str = "baseline", alpha: float = ALPHA) -> dict:
    """{"groups": [...], "comparisons": [...], "notes": [...]}; Holm over the report's comparisons, with
    per-layer metrics as a separate family (see `_apply_holm`)."""
    groups = group_records(records)
    if not groups:
        raise ReportError("no run records to report on; run `gapt-bench run` first or point at a results folder")
    task_metrics = _task_metrics(groups)
    directions = {(t, m): _direction((r for g in groups if g.task == t for r in g.ok), m)
                  for t, ms in task_metrics.items() for m in ms}
    group_rows = []
    for g in groups:
        metrics = task_metrics.get(g.task, []) if not g.ok else sorted(g.metrics, key=metric_sort_key)
        group_rows += [_group_row(g, m, directions[(g.task, m)]) for m in metrics]
    refs = [g for g in groups if g.method == reference]
    comparisons, notes = [], []
    for g in groups:
        if g.method == reference or not g.ok:
            continue
        ref = _pick_reference(g, refs)
        if ref is None:
            notes.append(f"{g.task}/{g.label}: no '{reference}' runs with the same task version and setup"
                         f"{f' ({g.setup_label})' if g.setup_label else ''}; not compared")
            continue
        for m in sorted(g.metrics & ref.metrics, key=metric_sort_key):
            comparisons.append(_compare_groups(g, ref, m, directions[(g.task, m)], alpha))
    _apply_holm(comparisons, alpha)
    _sort_rows(group_rows, reference)
    _sort_rows(comparisons, reference)
    for g in groups:
        if g.n_diverged or g.n_failed:
            notes.append(f"{g.task}/{g.label}: {g.n_diverged} diverged, {g.n_failed} failed (not counted)")
    return _clean({"reference": reference, "alpha": alpha, "groups": group_rows,
                   "comparisons": comparisons, "notes": notes})


def _apply_holm(comparisons: list[dict], alpha: float) -> None:
    """Holm within two families: headline metrics (every task, metric and method of the report) and per-layer
    metrics. Per-layer MBE adds dozens of diagnostic tests; in one family they would swamp the headline claims."""
    for family in ("headline", "per-layer"):
        members = [c for c in comparisons if (family == "per-layer") == is_layer_metric(c["metric"])]
        for c, p_adj in zip(members, stats.holm([c["p"] for c in members])):
            c["p_holm"], c["holm_family"] = p_adj, family
            c["verdict"] = stats.verdict(c["delta"], p_adj, c["direction"] == "max", alpha)


def _sort_rows(rows: list[dict], reference: str) -> None:
    """Task, metric (X then X_centered), method (gapt then periodic), variant, setup (grouped then shuffled)."""
    order = {t: {m: i for i, m in enumerate(method_order({r["method"] for r in rows if r["task"] == t}, reference))}
             for t in {r["task"] for r in rows}}
    rows.sort(key=lambda r: (r["task"], metric_sort_key(r["metric"]), order[r["task"]][r["method"]],
                             _natural(r.get("variant") or ""), _natural(r.get("setup") or "")))


# ---------------------------------------------------------------------------------------------------------------
# Rendering the report


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


def _group_index(report: dict) -> dict[tuple, dict]:
    return {(g["config_hash"], g["metric"]): g for g in report["groups"]}


def report_table_rows(report: dict, task: str, include_layers: bool = False) -> list[dict]:
    """Display rows of one task: every comparison, plus groups that are in no comparison (reference-only etc.)."""
    idx = _group_index(report)
    rows, covered = [], set()
    for i, c in enumerate(report["comparisons"]):
        if c["task"] != task or (is_layer_metric(c["metric"]) and not include_layers):
            continue
        covered |= {(c["config_hash"], c["metric"]), (c["reference_config_hash"], c["metric"])}
        ref_row = idx.get((c["reference_config_hash"], c["metric"]))
        grp_row = idx.get((c["config_hash"], c["metric"]))
        rows.append(_display_row(c["metric"], c["direction"], c["setup"], ref_row, c["label"], grp_row, c)
                    | {"_pos": (0, i)})
    for i, g in enumerate(report["groups"]):
        if g["task"] != task or (g["config_hash"], g["metric"]) in covered:
            continue
        if is_layer_metric(g["metric"]) and not include_layers:
            continue
        is_ref = g["method"] == report.get("reference", "baseline")
        rows.append(_display_row(g["metric"], g["direction"], g["setup"], g if is_ref else None,
                                 "" if is_ref else g["label"], None if is_ref else g, None) | {"_pos": (1, i)})
    # comparisons keep their (method, variant, setup) order; groups without a comparison follow their metric
    rows.sort(key=lambda r: (r["_order"], r["_pos"]))
    return rows


def _display_row(metric: str, direction: str, setup: str, ref: dict | None, label: str, grp: dict | None,
                 c: dict | None) -> dict:
    delta = "" if c is None else "—"
    if c is not None and c.get("delta") is not None:
        delta = f"{fmt(c['delta'], 3)} ({fmt_pct(c.get('rel_delta'))})"
    ci = "" if c is None else "—" if c.get("ci_low") is None else f"[{fmt(c['ci_low'], 3)}, {fmt(c['ci_high'], 3)}]"
    note = ""
    if c is not None:
        note = "; ".join(x for x in (c.get("degenerate"), c.get("mwu_note")) if x)
    return {"_order": metric_sort_key(metric), "metric": metric, "dir": ARROWS.get(direction, "?"),
            "setup": setup or "", "reference": fmt_mean_ci(ref), "method": label,
            "value": fmt_mean_ci(grp) if grp is not None else "",
            "delta": delta, "ci": ci, "test": "" if c is None else ("paired" if c["paired"] else "Welch"),
            "p_holm": "" if c is None else fmt_p(c.get("p_holm")),
            "verdict": "" if c is None else c["verdict"], "note": note}


REPORT_COLUMNS = [("metric", "metric"), ("dir", ""), ("setup", "setup"), ("reference", "reference"),
                  ("method", "method"), ("value", "value"), ("delta", "Δ (rel)"), ("ci", "95% CI of Δ"),
                  ("test", "test"), ("p_holm", "p (Holm)"), ("verdict", "verdict")]
VERDICT_STYLE = {"better": "green", "worse": "red", "inconclusive": "yellow", "replicates": "green",
                 "does not": "red", "REGRESSION": "bold red", "IMPROVED": "green", "WARN": "yellow",
                 "INCONCLUSIVE": "yellow", "INCOMPATIBLE": "bold magenta", "PASS": "", "no runs": "dim"}


def _tasks(report: dict) -> list[str]:
    return sorted({g["task"] for g in report["groups"]})


def _columns(rows: list[dict], columns: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Drop columns that are empty in every row (e.g. setup when a task has one setup)."""
    return [(k, h) for k, h in columns if any(r.get(k) not in ("", None) for r in rows)]


def render_rich(report: dict, console: Any = None, include_layers: bool = False) -> list:
    """One rich Table per task (plus notes), printed to `console` (stdout when None); returns the renderables."""
    from rich.table import Table
    from rich.text import Text

    out: list = []
    for task in _tasks(report):
        rows = report_table_rows(report, task, include_layers)
        cols = _columns(rows, REPORT_COLUMNS)
        table = Table(title=f"{task}  (reference: {report.get('reference', 'baseline')})", title_justify="left",
                      caption=_caption(report, task, include_layers), caption_justify="left")
        for key, head in cols:
            table.add_column(report.get("reference", head) if key == "reference" else head, overflow="fold")
        prev = None
        for r in rows:
            if prev is not None and r["metric"] != prev:
                table.add_section()
            prev = r["metric"]
            table.add_row(*[_cell(k, r[k]) for k, _ in cols])
        out.append(table)
    if report.get("notes"):
        out.append(Text("\n".join(f"note: {n}" for n in report["notes"]), style="dim"))
    return _print(out, console)


def _print(renderables: list, console: Any) -> list:
    """Print to `console`, or to a new stdout Console (wide when not a terminal, so piped tables stay unwrapped)."""
    from rich.console import Console

    if console is None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=200)
    for r in renderables:
        console.print(r)
    return renderables


def _cell(key: str, value: Any) -> Any:
    """A rich cell as plain Text (labels like "gapt [weight=0.1]" must not be read as markup); verdicts coloured."""
    from rich.text import Text

    return Text(str(value), style=VERDICT_STYLE.get(str(value), "") if key == "verdict" else "")


def _caption(report: dict, task: str, include_layers: bool) -> str:
    parts = ["mean ± 95% t-CI half-width (n seeds); Δ = method − reference; p Holm-adjusted over the report's "
             "headline comparisons (per-layer metrics: own family)"]
    n_layer = len({g["metric"] for g in report["groups"] if g["task"] == task and is_layer_metric(g["metric"])})
    if n_layer and not include_layers:
        parts.append(f"{n_layer} per-layer metrics hidden (see --format json)")
    notes = {c["mwu_note"] for c in report["comparisons"] if c["task"] == task and c.get("mwu_note")}
    if notes:
        parts.append("Mann-Whitney: rank test uninformative at these seed counts")
    return "; ".join(parts)


def _md_escape(s: Any) -> str:
    return str(s).replace("|", "\\|")


def markdown_table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    head = "| " + " | ".join(h or k for k, h in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(_md_escape(r.get(k, "")) for k, _ in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def render_markdown(report: dict, include_layers: bool = False) -> str:
    parts = []
    for task in _tasks(report):
        rows = report_table_rows(report, task, include_layers)
        cols = [(k, report.get("reference", h) if k == "reference" else h) for k, h in _columns(rows, REPORT_COLUMNS)]
        parts.append(f"### {task}\n\n{markdown_table(rows, cols)}\n\n"
                     f"_{_caption(report, task, include_layers)}_\n")
    if report.get("notes"):
        parts.append("\n".join(f"- {n}" for n in report["notes"]) + "\n")
    return "\n".join(parts)


def render_json(obj: Any) -> str:
    return json.dumps(_clean(obj), indent=2, sort_keys=False)


# ---------------------------------------------------------------------------------------------------------------
# The paper side by side


@dataclass(frozen=True)
class Claim:
    task: str
    metric: str
    claimed: float  # relative change (-0.048 = -4.8%) or, for kind "absolute", the value itself
    text: str
    kind: str = "relative"  # relative | absolute
    method: str = "gapt"
    precision: str | None = None  # absolute capacity claims are per precision


PAPER_CLAIMS: tuple[Claim, ...] = (
    Claim("fineweb_lm", "val_ce", -0.048, "GAPT: FineWeb validation CE −4.8%"),
    Claim("fineweb_lm", "val_mbe", -0.50, "GAPT: FineWeb MBE −50%"),
    Claim("arithmetic_ood", "ood_answer_ce", -0.35, "GAPT: arithmetic OOD +35% (read as OOD answer CE −35%)"),
    Claim("forgetting_separation", "separation", 0.97, "GAPT: representation separation +97%"),
    Claim("synthetic_capacity", "bits_per_param", 3.51, "capacity 3.51 bits/param (bf16)", "absolute",
          "baseline", "bf16"),
    Claim("synthetic_capacity", "bits_per_param", 3.83, "capacity 3.83 bits/param (fp32)", "absolute",
          "baseline", "fp32"),
)
# The paper's own spread of per-model capacity ratios (± 0.1 bits/param): the band an absolute claim is held to.
CAPACITY_BAND = 0.1

PAPER_COLUMNS = [("claim", "claim"), ("role", "row"), ("setup", "setup"), ("claimed_text", "claimed"),
                 ("measured_text", "measured"), ("ci_text", "95% CI"), ("n", "n"), ("scale", "preset / scale"),
                 ("p_holm_text", "p (Holm)"), ("verdict", "verdict"), ("note", "note")]


def claim_verdict(claimed: float, rel: float | None, lo: float | None, hi: float | None, p_holm: float | None,
                  alpha: float = ALPHA) -> tuple[str, str]:
    """Verdict and a short reason for a relative claim, from the measured relative change and its 95% CI.

    - "replicates": significant after Holm, same sign as the claim, and the CI reaches the claimed magnitude
      (contains it or lies beyond it).
    - "does not": significant with the opposite sign, or the CI stops short of the claimed magnitude (the data
      rule out an effect as large as claimed, even if a smaller one is real).
    - "inconclusive": otherwise (no test possible, or a CI wide enough to hold both 0 and the claim).
    """
    if rel is None or lo is None or hi is None or p_holm is None:
        return "inconclusive", "no test possible (n < 2 or zero variance)"
    significant, same_sign = p_holm < alpha, (rel > 0) == (claimed > 0)
    reaches = lo <= claimed if claimed < 0 else hi >= claimed
    if significant and not same_sign:
        return "does not", "significant effect in the opposite direction"
    if not reaches:
        return "does not", ("smaller effect than claimed" if significant else "CI excludes the claimed effect")
    if significant:
        return "replicates", "significant, CI reaches the claim"
    return "inconclusive", "CI holds both no effect and the claim"


def absolute_verdict(claimed: float, mean: float | None, lo: float | None, hi: float | None,
                     band: float = CAPACITY_BAND) -> tuple[str, str]:
    """For capacity: "replicates" if the mean lies within claim ± band; "does not" if the whole CI lies outside
    the band; "inconclusive" otherwise (one value only, or a CI reaching into the band from outside)."""
    if mean is None or lo is None or hi is None:
        return "inconclusive", "fewer than 2 values"
    if hi < claimed - band or lo > claimed + band:
        return "does not", f"CI outside {claimed:g} ± {band:g}"
    if abs(mean - claimed) <= band:
        return "replicates", f"mean within {claimed:g} ± {band:g}"
    return "inconclusive", f"mean outside {claimed:g} ± {band:g}, CI reaches it"


def _scale(preset: Any, n_params: float | None) -> str:
    params = ""
    if n_params is not None:
        params = f"{n_params / 1e6:.3g}M params" if n_params >= 1e5 else f"{n_params:,.0f} params"
    return ", ".join(x for x in (str(preset) if preset else "", params) if x)


def _relative_rows(claim: Claim, report: dict, reference: str) -> list[dict]:
    """The claim row(s) (one per setup, e.g. both batch layouts) and their controls: periodic, centred MBE."""
    def find(metric: str, method: str) -> list[dict]:
        return [c for c in report["comparisons"] if c["task"] == claim.task and c["metric"] == metric
                and c["method"] == method and c["reference"] == reference]

    rows = [_rel_row(claim, c, "claim") for c in find(claim.metric, claim.method)]
    if not rows:
        rows = [_no_runs_row(claim, reference)]
    controls = [(claim.metric + CENTERED_SUFFIX, claim.method, "control: centred MBE")] if "mbe" in claim.metric else []
    controls += [(claim.metric, c, f"control: {c}") for c in CONTROL_METHODS.get(claim.method, ())]
    for metric, method, role in controls:
        rows += [_rel_row(claim, c, role) for c in find(metric, method)]
    return rows


def _rel_row(claim: Claim, c: dict, role: str) -> dict:
    return {"claim": claim.text, "task": claim.task, "metric": c["metric"], "method": c["label"],
            "reference": c["reference"], "role": role, "setup": c.get("setup") or "", "kind": "relative",
            "claimed": claim.claimed if role == "claim" else None, "measured": c["rel_delta"],
            "ci_low": c.get("rel_ci_low"), "ci_high": c.get("rel_ci_high"), "n": c["n"], "test": c["test"],
            "p": c["p"], "preset": c.get("preset"), "n_params": c.get("n_params"),
            "direction": c["direction"], "delta": c["delta"]}


def _no_runs_row(claim: Claim, reference: str) -> dict:
    return {"claim": claim.text, "task": claim.task, "metric": claim.metric, "method": claim.method,
            "reference": reference, "role": "claim", "setup": claim.precision or "", "kind": claim.kind,
            "claimed": claim.claimed, "measured": None, "ci_low": None, "ci_high": None, "n": 0, "test": None,
            "p": None, "preset": None, "n_params": None, "verdict": "no runs", "note": ""}


def _capacity_row(claim: Claim, capacity_analysis: dict | None) -> dict:
    """The capacity claim (mean of per-model ratios, as the paper's 3.51/3.83) from `capacity.analyse`.

    Runs that failed the held-out sanity check are already excluded there; the CI is over seeds.
    """
    precision = claim.precision or "fp32"
    group = next((g for g in (capacity_analysis or {}).get("groups", [])
                  if g["method"] == claim.method and g["precision"] == precision and g["alpha_mean"]["n"]), None)
    if group is None:
        return _no_runs_row(claim, claim.method)
    alpha = group["alpha_mean"]
    verdict, note = absolute_verdict(claim.claimed, alpha["mean"], alpha["ci_low"], alpha["ci_high"])
    models = group["models"]
    return {"claim": claim.text, "task": claim.task, "metric": claim.metric, "method": claim.method,
            "reference": None, "role": "claim", "setup": precision, "kind": "absolute",
            "claimed": claim.claimed, "measured": alpha["mean"], "ci_low": alpha["ci_low"],
            "ci_high": alpha["ci_high"], "n": alpha["n"], "test": None, "p": None,
            "preset": ",".join(group["presets"]), "n_params": _mean([m.get("n_params") for m in models]),
            "verdict": verdict, "note": f"{note}; mean of per-model ratios over {len(models)} models, CI over seeds",
            "models": models}


def paper_table(report_or_records: dict | Sequence[dict], reference: str = "baseline",
                alpha: float = ALPHA) -> list[dict]:
    """The seed papers' claims beside the measured effect, with controls right under each claim.

    Relative claims use the method-vs-reference comparison of the report (relative change = Δ / |reference mean|
    with the CI scaled the same way); the Holm family is every row of this table that has a p-value (claims and
    controls). Capacity claims are absolute (see `_capacity_row`, `absolute_verdict`). Claim rows are judged by
    `claim_verdict`; control rows carry the plain statistical verdict (better/worse/...).
    """
    from gapt_bench import capacity

    if isinstance(report_or_records, dict):
        report, cap = report_or_records, report_or_records.get("capacity")
    else:
        report = build_report(report_or_records, reference, alpha)
        cap = capacity.analyse(report_or_records, reference=reference)
    rows: list[dict] = []
    for claim in PAPER_CLAIMS:
        if claim.kind == "absolute":
            rows.append(_capacity_row(claim, cap))
        else:
            rows += _relative_rows(claim, report, reference)
    for row, p_adj in zip(rows, stats.holm([r["p"] for r in rows])):
        row["p_holm"] = p_adj
        if row["kind"] != "relative" or row.get("verdict") == "no runs":
            continue
        if row["role"] == "claim":
            row["verdict"], row["note"] = claim_verdict(row["claimed"], row["measured"], row["ci_low"],
                                                        row["ci_high"], p_adj, alpha)
        else:
            row["verdict"] = stats.verdict(row["delta"], p_adj, row["direction"] == "max", alpha)
            row["note"] = ""
    return _clean(rows)


def _paper_display(row: dict) -> dict:
    rel = row["kind"] == "relative"
    show = fmt_pct if rel else (lambda x: fmt(x, 3))
    ci = "—" if row["ci_low"] is None else f"[{show(row['ci_low'])}, {show(row['ci_high'])}]"
    return {**row, "claim": row["claim"] if row["role"] == "claim" else "",
            "role": "claim" if row["role"] == "claim" else f"↳ control: {row['method']} · {row['metric']}",
            "claimed_text": "" if row["claimed"] is None else show(row["claimed"]),
            "measured_text": show(row["measured"]), "ci_text": ci, "n": row["n"],
            "scale": _scale(row.get("preset"), row.get("n_params")), "p_holm_text": fmt_p(row.get("p_holm")),
            "note": row.get("note") or ""}


def render_paper_rich(rows: list[dict], console: Any = None) -> list:
    from rich.table import Table

    disp = [_paper_display(r) for r in rows]
    cols = _columns(disp, PAPER_COLUMNS)
    table = Table(title="Seed papers' claims vs measured (method vs baseline)", title_justify="left",
                  caption="relative change = Δ / |baseline mean|; controls listed under each claim",
                  caption_justify="left")
    for _, head in cols:
        table.add_column(head, overflow="fold")
    for i, r in enumerate(disp):
        if i and r["claim"]:
            table.add_section()
        table.add_row(*[_cell(k, r[k]) for k, _ in cols])
    return _print([table], console)


def render_paper_markdown(rows: list[dict]) -> str:
    disp = [_paper_display(r) for r in rows]
    return markdown_table(disp, _columns(disp, PAPER_COLUMNS)) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# Leaderboard


def leaderboard(records: Sequence[dict], reference: str = "baseline") -> list[dict]:
    """Methods ranked by mean win rate (HELM): per column (task, setup, metric) the share of other methods a
    method beats on the mean (ties count half), averaged over the columns it appears in; per task the same over
    that task's columns. Per-layer metrics, and columns with a single method, are not columns. Evidence per cell
    is 'mean (n=…)'. Methods are compared only within one setup (same setup_hash)."""
    report = build_report(records, reference)
    columns: dict[tuple, list[dict]] = defaultdict(list)
    for g in report["groups"]:
        if g["n"] and not is_layer_metric(g["metric"]):
            columns[(g["task"], g["setup_hash"], g["metric"])].append(g)
    wins: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    evidence: dict[str, dict[str, str]] = defaultdict(dict)
    for (task, _, metric), gs in columns.items():
        if len(gs) < 2:
            continue  # nothing to rank against
        for g in gs:
            where = f"{task}/{metric}" + (f" [{g['setup']}]" if g["setup"] else "")
            evidence[g["label"]][where] = f"{fmt(g['mean'])} (n={g['n']})"
        sign = 1 if gs[0]["direction"] == "max" else -1
        for g in gs:
            others = [o for o in gs if o is not g]
            score = sum(1.0 if sign * g["mean"] > sign * o["mean"] else 0.5 if g["mean"] == o["mean"] else 0.0
                        for o in others) / len(others)
            wins[g["label"]][task].append(score)
    rows = []
    for label in set(evidence) | set(wins):
        per_task = {t: {"win_rate": sum(s) / len(s), "n_columns": len(s)} for t, s in wins[label].items()}
        all_scores = [x for s in wins[label].values() for x in s]
        rows.append({"method": label, "win_rate": sum(all_scores) / len(all_scores) if all_scores else None,
                     "n_columns": len(all_scores), "tasks": per_task,
                     "evidence": dict(sorted(evidence[label].items()))})
    _rank(rows)
    return _clean(rows)


def _rank(rows: list[dict]) -> None:
    rows.sort(key=lambda r: (-(r["win_rate"] if r["win_rate"] is not None else -1), r["method"]))
    for i, r in enumerate(rows, 1):
        r["rank"] = i if r["win_rate"] is not None else None
    for task in {t for r in rows for t in r["tasks"]}:
        ranked = sorted((r for r in rows if task in r["tasks"]), key=lambda r: -r["tasks"][task]["win_rate"])
        for i, r in enumerate(ranked, 1):
            r["tasks"][task]["rank"] = i


def _leaderboard_display(rows: list[dict]) -> tuple[list[dict], list[tuple[str, str]]]:
    tasks = sorted({t for r in rows for t in r["tasks"]})
    disp = []
    for r in rows:
        d = {"rank": r["rank"] or "—", "method": r["method"],
             "win_rate": f"{r['win_rate']:.2f} ({r['n_columns']} cols)" if r["win_rate"] is not None else "—"}
        for t in tasks:
            tt = r["tasks"].get(t)
            d[t] = f"{tt['win_rate']:.2f} (#{tt['rank']})" if tt else "—"
        disp.append(d)
    cols = [("rank", "#"), ("method", "method"), ("win_rate", "mean win rate")] + [(t, t) for t in tasks]
    return disp, cols


def _evidence_rows(rows: list[dict]) -> list[dict]:
    return [{"method": r["method"], "where": w, "value": v} for r in rows for w, v in r["evidence"].items()]


def render_leaderboard_rich(rows: list[dict], console: Any = None) -> list:
    from rich.table import Table

    disp, cols = _leaderboard_display(rows)
    table = Table(title="Leaderboard: mean win rate over (task, metric) columns", title_justify="left")
    for _, h in cols:
        table.add_column(h)
    for d in disp:
        table.add_row(*[_cell(k, d[k]) for k, _ in cols])
    ev = Table(title="Evidence: mean (n seeds)", title_justify="left")
    for h in ("method", "task/metric", "value"):
        ev.add_column(h)
    for e in _evidence_rows(rows):
        ev.add_row(*[_cell(k, e[k]) for k in ("method", "where", "value")])
    return _print([table, ev], console)


def render_leaderboard_markdown(rows: list[dict]) -> str:
    disp, cols = _leaderboard_display(rows)
    ev = markdown_table(_evidence_rows(rows), [("method", "method"), ("where", "task/metric"), ("value", "mean (n)")])
    return f"{markdown_table(disp, cols)}\n\n{ev}\n"


# ---------------------------------------------------------------------------------------------------------------
# Compare two result sets, and the regression gate

GATE_EXIT = {"INCOMPATIBLE": 2, "REGRESSION": 1, "INCONCLUSIVE": 3}


def _match(base: list[Group], cand: list[Group]) -> tuple[list[tuple[Group, Group]], list[dict]]:
    """Pairs (baseline group, candidate group) with the same task, method, task_version and config_hash, and
    rows for what does not match: INCOMPATIBLE (same task and method, different version/config/schema),
    NEW (only in the candidate) and MISSING (only in the baseline)."""
    pairs, rows = [], []
    keys = sorted({(g.task, g.method) for g in base + cand})
    for task, method in keys:
        bs = [g for g in base if (g.task, g.method) == (task, method)]
        cs = [g for g in cand if (g.task, g.method) == (task, method)]
        matched_b = set()
        for c in cs:
            b = next((b for b in bs if b.config_hash == c.config_hash and b.task_version == c.task_version), None)
            if b is None:
                if bs:
                    rows.append(_status_row(c, "INCOMPATIBLE", _why_incompatible(bs[0], c)))
                else:
                    rows.append(_status_row(c, "NEW", "only in the candidate"))
            elif b.schema_versions != c.schema_versions:
                matched_b.add(id(b))
                rows.append(_status_row(c, "INCOMPATIBLE", f"schema_version {sorted(map(str, b.schema_versions))} "
                                                           f"vs {sorted(map(str, c.schema_versions))}"))
            else:
                matched_b.add(id(b))
                pairs.append((b, c))
        if cs and any(r["verdict"] == "INCOMPATIBLE" and r["task"] == task and r["method"] == method for r in rows):
            continue  # the incompatibility already explains the unmatched baseline groups
        rows += [_status_row(b, "MISSING", "only in the baseline") for b in bs if id(b) not in matched_b]
    return pairs, rows


def _matched(base_records: Sequence[dict], cand_records: Sequence[dict]) -> tuple[list[tuple[Group, Group]], list[dict]]:
    """`_match` of two record sets; comparing nothing (no shared task/method, or an empty side) is an error, never
    a pass."""
    base, cand = group_records(base_records), group_records(cand_records)
    pairs, rows = _match(base, cand)
    if not pairs and not any(r["verdict"] == "INCOMPATIBLE" for r in rows):
        bt, ct = sorted({g.task for g in base}), sorted({g.task for g in cand})
        raise ReportError(f"nothing to compare: the baseline ({', '.join(bt) or 'no runs'}) and the candidate "
                          f"({', '.join(ct) or 'no runs'}) share no task, method and config; point both at "
                          f"results of the same plan")
    return pairs, rows


def _why_incompatible(b: Group, c: Group) -> str:
    if b.task_version != c.task_version:
        return f"task_version {b.task_version} vs {c.task_version}"
    diff = diff_labels({"b": b.config, "c": c.config})
    return f"config differs: {diff['b']} → {diff['c']}" if diff["b"] or diff["c"] else "config_hash differs"


def _status_row(g: Group, verdict: str, note: str) -> dict:
    return {"task": g.task, "method": g.method, "label": g.label, "metric": "*", "setup": g.setup_label,
            "config_hash": g.config_hash, "verdict": verdict, "note": note, "n_baseline": None, "n_candidate": None,
            "baseline_mean": None, "candidate_mean": None, "delta": None, "rel_change": None}


def _metric_pairs(pairs: list[tuple[Group, Group]], include_layers: bool) -> list[tuple[Group, Group, str, str]]:
    out = []
    for b, c in pairs:
        for m in sorted(b.metrics & c.metrics, key=metric_sort_key):
            if is_layer_metric(m) and not include_layers:
                continue
            out.append((b, c, m, _direction(b.ok + c.ok, m)))
    return out


def _two_arm(b: Group, c: Group, metric: str, direction: str, alpha: float) -> dict:
    """Candidate (c) vs baseline (b) on one metric; the row layout shared by compare() and gate()."""
    cand, base, paired = pair_by_seed(c.seed_values(metric), b.seed_values(metric))
    res = stats.compare(cand, base, paired=paired, higher_is_better=direction == "max", alpha=alpha)
    return {"task": c.task, "method": c.method, "label": c.label, "metric": metric, "direction": direction,
            "setup": c.setup_label, "config_hash": c.config_hash, "n_baseline": res["n_b"],
            "n_candidate": res["n_a"], "baseline_mean": res["mean_b"], "candidate_mean": res["mean_a"],
            "delta": res["delta"], "rel_change": res["rel_delta"], "ci_low": res["ci_low"], "ci_high": res["ci_high"],
            "test": res["test"], "paired": paired, "p": res["p"], "p_greater": res["p_greater"],
            "p_less": res["p_less"], "mwu_p": res["mwu_p"], "mwu_p_min": res["mwu_p_min"],
            "mwu_note": res["mwu_note"], "degenerate": res["degenerate"], "note": ""}


def compare(a_records: Sequence[dict], b_records: Sequence[dict], alpha: float = ALPHA,
            include_layers: bool = False) -> list[dict]:
    """How B differs from A (like `asv compare A B`): per matched (task, method, config, metric) a two-sided
    test of B − A, Holm over the rows, verdict better/worse/no significant difference/inconclusive for B."""
    pairs, rows = _matched(a_records, b_records)
    tested = [_two_arm(b, c, m, d, alpha) for b, c, m, d in _metric_pairs(pairs, include_layers)]
    for r, p_adj in zip(tested, stats.holm([r["p"] for r in tested])):
        r["p_holm"] = p_adj
        r["verdict"] = stats.verdict(r["delta"], p_adj, r["direction"] == "max", alpha)
    return _clean(_sorted_pair_rows(tested + rows))


def _sorted_pair_rows(rows: list[dict], reference: str = "baseline") -> list[dict]:
    """Task, method (reference first, controls after their method), metric, setup: the report's reading order."""
    order = {t: {m: i for i, m in enumerate(method_order({r["method"] for r in rows if r["task"] == t}, reference))}
             for t in {r["task"] for r in rows}}
    return sorted(rows, key=lambda r: (r["task"], order[r["task"]][r["method"]], r["metric"] == "*",
                                       metric_sort_key(r["metric"]), _natural(r.get("setup") or "")))


def gate(baseline_records: Sequence[dict], candidate_records: Sequence[dict], tolerance: float | str | dict = 0.05,
         alpha: float = ALPHA, min_n: int = 3, strict: bool = False,
         include_layers: bool = False) -> tuple[list[dict], int]:
    """Regression gate of a candidate against stored baseline results: (rows, exit code).

    Per (task, method, metric), with worse = (cand − base) · (−1 if higher is better else 1) and
    worse_rel = worse / |base mean| (any change counts as past tolerance when the base mean is 0):
    - INCOMPATIBLE (exit 2): same task and method but task_version, config_hash or schema_version differ.
    - REGRESSION (exit 1): worse_rel > tolerance and the one-sided p (candidate worse; paired by seed when the
      seeds match, Welch otherwise), Holm-adjusted over the gate's family, is < alpha.
    - WARN: past tolerance, not significant. IMPROVED mirrors REGRESSION (its own Holm family). PASS otherwise.
    - INCONCLUSIVE: n < min_n in an arm, or no variance to test with while past tolerance (identical values with
      no change PASS). Exit 0, or 3 with strict; MISSING baseline groups count as inconclusive under strict.
    Exit code precedence: 2, then 1, then 3 (strict), else 0. `tolerance` may map metric names to tolerances
    ("default" for the rest).
    """
    pairs, rows = _matched(baseline_records, candidate_records)
    tested = [_two_arm(b, c, m, d, alpha) for b, c, m, d in _metric_pairs(pairs, include_layers)]
    for r in tested:
        sign = -1 if r["direction"] == "max" else 1
        r["worse_rel"] = _worse_rel(r, sign)
        r["p_worse"] = r["p_less"] if sign < 0 else r["p_greater"]
        r["p_better"] = r["p_greater"] if sign < 0 else r["p_less"]
        if min(r["n_baseline"], r["n_candidate"]) < min_n:
            r["p_worse"] = r["p_better"] = None
    worse_adj = stats.holm([r["p_worse"] for r in tested])
    better_adj = stats.holm([r["p_better"] for r in tested])
    for r, pw, pb in zip(tested, worse_adj, better_adj):
        r["p_worse_holm"], r["p_better_holm"] = pw, pb
        r["tolerance"] = _tolerance(tolerance, r["metric"])
        r["verdict"], r["note"] = _gate_verdict(r, alpha, min_n)
    out = _clean(_sorted_pair_rows(tested + rows))
    return out, gate_exit_code(out, strict)


def _worse_rel(r: dict, sign: int) -> float | None:
    if r["delta"] is None:
        return None
    worse = sign * r["delta"]
    if r["baseline_mean"]:
        return worse / abs(r["baseline_mean"])
    return 0.0 if worse == 0 else math.copysign(math.inf, worse)


def _tolerance(tolerance: float | str | dict, metric: str) -> float:
    """A fraction: 0.05, "0.05" or "5%"; a dict maps metric names (and "default") to such values."""
    if isinstance(tolerance, dict):
        return _tolerance(tolerance.get(metric, tolerance.get("default", 0.05)), metric)
    if isinstance(tolerance, str):
        text = tolerance.strip()
        return float(text[:-1]) / 100 if text.endswith("%") else float(text)
    return float(tolerance)


def _gate_verdict(r: dict, alpha: float, min_n: int) -> tuple[str, str]:
    tol, wr = r["tolerance"], r["worse_rel"]
    if wr is None:
        return "INCONCLUSIVE", "no values"
    past = wr > tol
    change = (f"{'worse' if wr > 0 else 'better'} by {abs(wr) * 100:.1f}%" if wr else "no change") + \
        f" (tolerance {tol * 100:g}%)"
    if min(r["n_baseline"], r["n_candidate"]) < min_n:
        return "INCONCLUSIVE", f"n < {min_n}; {change}"
    if r["p_worse"] is None:
        if abs(wr) <= tol:
            return "PASS", change if wr == 0 else f"{change}; not testable ({r['degenerate']})"
        return "INCONCLUSIVE", f"{r['degenerate'] or 'no test'}; {change}"
    if past:
        if r["p_worse_holm"] is not None and r["p_worse_holm"] < alpha:
            return "REGRESSION", change
        return "WARN", f"~ {change}, not significant"
    if -wr > tol and r["p_better_holm"] is not None and r["p_better_holm"] < alpha:
        return "IMPROVED", change
    return "PASS", change


def gate_exit_code(rows: list[dict], strict: bool = False) -> int:
    verdicts = {r["verdict"] for r in rows}
    if "INCOMPATIBLE" in verdicts:
        return 2
    if "REGRESSION" in verdicts:
        return 1
    if strict and verdicts & {"INCONCLUSIVE", "MISSING"}:
        return 3
    return 0


GATE_COLUMNS = [("task", "task"), ("label", "method"), ("metric", "metric"), ("dir", ""), ("setup", "setup"),
                ("base", "baseline"), ("cand", "candidate"), ("rel", "change"), ("p_text", "p (Holm)"),
                ("verdict", "verdict"), ("note", "note")]


def _gate_display(rows: list[dict]) -> list[dict]:
    disp = []
    for r in rows:
        p = r.get("p_worse_holm") if r.get("worse_rel") is not None and r["worse_rel"] > 0 else r.get("p_better_holm")
        if "p_worse_holm" not in r:
            p = r.get("p_holm")
        base = "—" if r["baseline_mean"] is None else f"{fmt(r['baseline_mean'])} (n={r['n_baseline']})"
        cand = "—" if r["candidate_mean"] is None else f"{fmt(r['candidate_mean'])} (n={r['n_candidate']})"
        disp.append({**r, "dir": ARROWS.get(r.get("direction", ""), ""), "base": base, "cand": cand,
                     "rel": fmt_pct(r.get("rel_change")), "p_text": fmt_p(p), "setup": r.get("setup") or ""})
    return disp


def render_gate_rich(rows: list[dict], exit_code: int | None = None, console: Any = None) -> list:
    from rich.table import Table

    disp = _gate_display(rows)
    cols = _columns(disp, GATE_COLUMNS)
    title = "Comparison" if exit_code is None else f"Regression gate: exit {exit_code}"
    table = Table(title=title, title_justify="left")
    for _, h in cols:
        table.add_column(h, overflow="fold")
    for d in disp:
        table.add_row(*[_cell(k, d[k]) for k, _ in cols])
    return _print([table], console)


def render_gate_markdown(rows: list[dict], exit_code: int | None = None) -> str:
    disp = _gate_display(rows)
    counts = defaultdict(int)
    for r in rows:
        counts[r["verdict"]] += 1
    summary = ", ".join(f"{v}: {n}" for v, n in sorted(counts.items()))
    head = "" if exit_code is None else f"**Regression gate: exit {exit_code}** ({summary})\n\n"
    return head + markdown_table(disp, _columns(disp, GATE_COLUMNS)) + "\n"
