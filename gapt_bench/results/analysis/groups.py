"""Grouping run records: what counts as the seeds of one configuration, how groups are labelled and ordered.

A *group* is (task, task_version, method, config_hash): the seeds of one configuration. Only records with status
"ok" are replicates; diverged and failed runs are counted per group and shown, never silently dropped. Two groups
are *comparable* only if task, task_version and setup_hash (data, model, train, MBE) agree.

Reading order puts controls beside effects: a metric `X_centered` directly follows `X`; a method's controls (the
method class declares them, records carry them as `controls`) follow the method; setups that differ only in e.g.
`data.batch_layout` sit next to each other with their label.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# What arms share and what varies per method: the one definition is in config.py.
from gapt_bench.config import DIAGNOSTIC_SECTIONS, METHOD_SECTIONS, SETUP_SECTIONS
from gapt_bench.results.analysis.common import mean_of, natural_key, unique

CENTERED_SUFFIX = "_centered"
LAYER_RE = re.compile(r"_layer_\d+")
# Guess for records that lack metric_directions (old records): these names are "higher is better".
HIGHER_IS_BETTER_HINTS = ("acc", "separation", "bits", "mem_", "tokens_per_s", "win")


def is_layer_metric(name: str) -> bool:
    return bool(LAYER_RE.search(name))


def metric_sort_key(name: str) -> tuple:
    """Headline metrics first, per-layer last; `X_centered` right after `X`."""
    centered = name.endswith(CENTERED_SUFFIX)
    base = name[: -len(CENTERED_SUFFIX)] if centered else name
    return (is_layer_metric(name), natural_key(base), centered)


def direction_of(records: Iterable[dict], metric: str) -> str:
    """ "min" or "max": what the records declare, else a guess from the name (old records)."""
    for r in records:
        d = (r.get("metric_directions") or {}).get(metric)
        if d in ("min", "max"):
            return d
    return "max" if any(h in metric for h in HIGHER_IS_BETTER_HINTS) else "min"


def controls_by_method(records: Iterable[dict]) -> dict[str, list[str]]:
    """method -> its declared controls: the union over the method's records of `controls` (first-seen order).
    Records written before methods declared controls have none."""
    out: dict[str, list[str]] = {}
    for r in records:
        declared = r.get("controls") or []
        if isinstance(declared, (list, tuple)):
            out[r.get("method")] = unique([*out.get(r.get("method"), []), *map(str, declared)])
    return {m: cs for m, cs in out.items() if cs}


def method_order(
    methods: Iterable[str], reference: str = "baseline", controls: Mapping[str, Sequence[str]] | None = None
) -> list[str]:
    """Reference first, then alphabetical, each control placed right after the (first) method it controls."""
    present = set(methods)
    controls = controls or {}
    rest = sorted(present - {reference})
    ordered: list[str] = [reference] if reference in present else []
    placed_as_control = {c for m in rest for c in controls.get(m, ()) if c in present and c != m}
    for m in rest:
        if m in placed_as_control and m in ordered:
            continue
        if m in placed_as_control and any(m in controls.get(e, ()) for e in rest if e != m):
            continue  # placed after its effect method
        ordered.append(m)
        ordered.extend(c for c in controls.get(m, ()) if c in present and c not in ordered and c != reference)
    ordered += [m for m in rest if m not in ordered]  # controls of methods not present, cycles
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


def model_label(n_layer: Any, n_embd: Any) -> str:
    """A model's short name in every table: depth and width, "L2/d64"."""
    return f"L{n_layer}/d{n_embd}"


def precision_of(record: dict) -> str:
    """fp32, bf16 or bf16-weights: the task's summary, else the config, else what "auto" means on the device
    (bf16 on CUDA)."""
    summary = record.get("summary") or {}
    if summary.get("precision") in ("fp32", "bf16", "bf16-weights"):
        return summary["precision"]
    train = (record.get("config") or {}).get("train") or {}
    p = train.get("precision", "auto")
    if p in ("fp32", "bf16", "bf16-weights"):
        return p
    device = str((record.get("env") or {}).get("device") or train.get("device") or "cpu")
    return "bf16" if device.startswith("cuda") else "fp32"


@dataclass(eq=False)
class Group:
    """The records of one (task, task_version, method, config_hash); compared by identity."""

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
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                out.append((r.get("seed"), float(v)))
        return out

    def summary_mean(self, key: str) -> float | None:
        """Mean over ok runs of a numeric `summary` field (None when no run has it)."""
        return mean_of((r.get("summary") or {}).get(key) for r in self.ok)

    @property
    def n_params(self) -> float | None:
        return mean_of(r.get("n_params") for r in self.ok)


def group_records(records: Iterable[dict]) -> list[Group]:
    """Groups in a stable order, with setup labels (per task) and variant labels (per task and method)."""
    groups: dict[tuple, Group] = {}
    for r in records:
        key = (r.get("task"), str(r.get("task_version")), r.get("method"), r.get("config_hash"))
        g = groups.get(key)
        if g is None:
            g = groups[key] = Group(
                task=key[0],
                task_version=key[1],
                method=key[2],
                config_hash=key[3],
                setup_hash=r.get("setup_hash"),
                preset=r.get("preset", ""),
                config=r.get("config") or {},
            )
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
            variants = diff_labels(
                {g.config_hash: {s: g.config.get(s) for s in (*METHOD_SECTIONS, *DIAGNOSTIC_SECTIONS)} for g in mgs}
            )
            for g in mgs:
                g.variant = variants[g.config_hash]


def task_metrics(groups: Iterable[Group]) -> dict[str, list[str]]:
    """task -> every metric any of its ok runs reports, in reading order."""
    out: dict[str, set[str]] = defaultdict(set)
    for g in groups:
        out[g.task] |= g.metrics
    return {t: sorted(ms, key=metric_sort_key) for t, ms in out.items()}


def pair_by_seed(a: list[tuple[Any, float]], b: list[tuple[Any, float]]) -> tuple[list[float], list[float], bool]:
    """Values in seed order when both arms have the same unique seeds (paired design), else as they come."""
    sa, sb = [s for s, _ in a], [s for s, _ in b]
    paired = len(set(sa)) == len(sa) and set(sa) == set(sb) and len(sa) == len(sb) and None not in sa
    if not paired:
        return [v for _, v in a], [v for _, v in b], False
    da, db = dict(a), dict(b)
    order = sorted(sa, key=str)
    return [da[s] for s in order], [db[s] for s in order], True


def preset_about(records: Sequence[dict], others: Sequence[dict] = ()) -> dict | None:
    """{"variants", "deviations"} from the runs' `summary.preset_about` (a preset's `about:` block), deduplicated
    in first-seen order: variants of `records` (the method's arm), deviations of `records` and `others` (e.g. the
    reference arm of a comparison). None when no run carries one."""

    def abouts(rs: Sequence[dict]) -> list[dict]:
        return [a for a in ((r.get("summary") or {}).get("preset_about") for r in rs) if isinstance(a, dict)]

    mine, theirs = abouts(records), abouts(others)
    if not mine and not theirs:
        return None
    return {
        "variants": unique(str(a["variant"]) for a in mine if a.get("variant")),
        "deviations": unique(str(d) for a in mine + theirs for d in (a.get("deviations") or [])),
    }


def same_setup(g: Group, other: Group) -> bool:
    return g.task == other.task and g.task_version == other.task_version and g.setup_hash == other.setup_hash
