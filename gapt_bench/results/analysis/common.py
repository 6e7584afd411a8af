"""Small helpers every analysis module shares: the error type, the default alpha, JSON-ready cleaning.

Analyses return plain dicts and lists that `json.dumps` accepts as they are (no NaN, no numpy scalars): `clean`
is applied once, at the end of each public analysis function.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

ALPHA = 0.05


class ReportError(ValueError):
    """Records that cannot be analysed (e.g. none at all, or nothing shared to compare); str() is one line."""


def clean(obj: Any) -> Any:
    """JSON-ready: numpy scalars to Python, NaN/inf to None, tuples and sets to lists, keys to str."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def mean_of(xs: Iterable[Any]) -> float | None:
    """Mean of the finite numbers among xs (None entries skipped); None when there are none."""
    vals = [float(x) for x in xs if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)]
    return sum(vals) / len(vals) if vals else None


def natural_key(s: str) -> tuple:
    """Sort key that orders "layer_2" before "layer_10"."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s))


def unique(items: Iterable[Any]) -> list:
    """Items in first-seen order without repeats."""
    out: list = []
    for x in items:
        if x not in out:
            out.append(x)
    return out
