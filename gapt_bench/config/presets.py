"""Presets (a task's presets.yaml: `extends:`, `grid:`, `about:`) and `--set section.key=value` overrides.

Pure dict manipulation: the caller passes a task's presets (`Task.load_presets()`), so this module knows nothing
of the task registry.
"""

from __future__ import annotations

import copy
import difflib
import itertools
from pathlib import Path
from typing import Any

import yaml

from gapt_bench.config.schema import ConfigError


def read_preset_file(path: Path, task: str) -> dict:
    """A task's presets.yaml: preset name -> sections (plus `extends:`, `grid:` and `about:`)."""
    if not path.is_file():
        raise ConfigError(f"task '{task}' has no presets: add {path} (or a `presets` dict on the task class)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"preset file {path} is not valid YAML ({str(e).splitlines()[0]}); fix the file") from None
    if not isinstance(data, dict):
        raise ConfigError(f"preset file {path} must map preset names to sections")
    return data


def resolve_preset(presets: dict, task: str, preset: str) -> dict:
    """A preset's sections from a task's `presets`, with `extends: other` resolved (later keys win)."""
    chain: list[str] = []
    name: str | None = preset
    merged: dict = {}
    while name is not None:
        if name not in presets:
            close = difflib.get_close_matches(name, list(presets), n=2)
            hint = f"did you mean {close[0]!r}?" if close else f"presets: {', '.join(presets)}"
            raise ConfigError(f"task '{task}' has no preset '{name}': {hint}")
        if name in chain:
            raise ConfigError(f"preset '{name}' of task '{task}' extends itself; fix `extends:`")
        chain.append(name)
        name = (presets[name] or {}).get("extends")
    for name in reversed(chain):
        body = presets[name] or {}
        if not isinstance(body, dict):
            raise ConfigError(f"preset '{name}' of task '{task}' must map sections to values")
        merged = deep_merge(merged, {k: v for k, v in body.items() if k != "extends"})
    return merged


# Keys of a preset that describe the plan rather than a run's config: a tier preset (`cpu-verdict`) names its
# methods (with their controls) and seeds, so `gapt-bench run --preset cpu-verdict` needs no other flags.
PLAN_KEYS = ("methods", "seeds")


def split_plan_keys(sections: dict) -> tuple[dict, dict]:
    """(the run sections, the plan keys) of a resolved preset."""
    return {k: v for k, v in sections.items() if k not in PLAN_KEYS}, {
        k: sections[k] for k in PLAN_KEYS if k in sections
    }


def deep_merge(a: dict, b: dict) -> dict:
    out = copy.deepcopy(a)
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def expand_grid(sections: dict) -> list[dict]:
    """A preset's `grid:` (dotted key -> list of values or of section dicts) as a list of section dicts."""
    grid = sections.pop("grid", None) or {}
    if not isinstance(grid, dict):
        raise ConfigError("`grid:` must map dotted keys to lists of values")
    keys = list(grid)
    for k in keys:
        if not isinstance(grid[k], list) or not grid[k]:
            raise ConfigError(f"grid key '{k}' needs a non-empty list of values")
    points = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        point = copy.deepcopy(sections)
        for k, v in zip(keys, combo):
            _set_nested(point, k.split("."), v)
        points.append(point)
    return points or [sections]


def _set_nested(d: dict, path: list[str], value: Any) -> None:
    for i, p in enumerate(path[:-1]):
        d = d.setdefault(p, {})
        if not isinstance(d, dict):
            where = ".".join(path[: i + 1])
            raise ConfigError(f"'{'.'.join(path)}': {where} is a value, not a section; set it as {where}=VALUE")
    if isinstance(value, dict) and isinstance(d.get(path[-1]), dict):
        d[path[-1]] = deep_merge(d[path[-1]], value)
    else:
        d[path[-1]] = value


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b=value` -> (['a', 'b'], parsed YAML value)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like section.key=value (e.g. train.lr=3e-3)")
    key, _, raw = text.partition("=")
    path = [p for p in key.strip().split(".") if p]
    if len(path) < 2:
        raise ConfigError(f"override '{text}' must name a section and a key, e.g. train.lr=3e-3")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str) and _looks_like_float(value):
        value = float(value)  # YAML 1.1 reads "3e-3" as a string
    return path, value


def _looks_like_float(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return any(c in s.lower() for c in "e.") and s.strip().lower() not in ("nan", "inf", "-inf", "infinity")


def apply_overrides(sections: dict, overrides: list[str]) -> dict:
    out = copy.deepcopy(sections)
    for text in overrides:
        path, value = parse_override(text)
        _set_nested(out, path, value)
    return out
