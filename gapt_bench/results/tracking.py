"""Training curves where researchers already look: TensorBoard event files, W&B or trackio runs.

Optional by design: nothing here runs unless asked (`gapt-bench export RESULTS --tensorboard DIR`, or
`gapt-bench run ... --track tensorboard:DIR`), and a backend's package is imported only then. A missing package is
refused before any training starts, with the command that installs it. TensorBoard files are written locally
(works offline); W&B and trackio log wherever the user's own setup sends them (`WANDB_MODE=offline` keeps W&B
local).

Each run (a record and its `runs/<run_id>/curve.jsonl`) becomes one TensorBoard event folder / W&B run / trackio
run named by its run_id and grouped by task/method: every numeric curve column as a scalar over optimizer steps
(`train/ce`, `train/mbe`, `train/phase`, `train/lr`, ...; per-layer MBE as `mbe_layer/<i>`), the final metrics as
`final/<metric>` at the last step, and the config as text (TensorBoard) or as the run's config (W&B, trackio).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# backend -> (module to import, how to install it)
BACKENDS = {
    "tensorboard": ("tensorboard", "pip install 'gapt-bench[tracking]' (or pip install tensorboard)"),
    "wandb": ("wandb", "pip install wandb"),
    "trackio": ("trackio", "pip install trackio"),
}
LAYER_KEY = re.compile(r"^(.*)_layer_(\d+)$")
SKIP = {"step"}


class TrackingError(ValueError):
    """A tracking destination that cannot be used (bad spelling, package not installed); one line, exit 2."""


class ExportError(RuntimeError):
    """A backend failed midway (a full disk, a W&B login): one line saying where and how many runs got there."""


@dataclass(frozen=True)
class Target:
    kind: str  # a key of BACKENDS
    where: str  # a folder (tensorboard) or a project name (wandb, trackio)

    def __str__(self) -> str:
        return f"{self.kind}:{self.where}"


def check_available(kind: str) -> None:
    module, install = BACKENDS[kind]
    if importlib.util.find_spec(module) is None:
        raise TrackingError(f"{kind} is not installed, so curves cannot go there; install it with: {install}")


def parse_target(text: str) -> Target:
    """'tensorboard:DIR', 'wandb:PROJECT' or 'trackio:PROJECT', checked (known kind, package installed)."""
    kind, sep, where = str(text).partition(":")
    if kind not in BACKENDS or not sep or not where:
        raise TrackingError(
            f"a tracking destination is KIND:WHERE with KIND one of {', '.join(BACKENDS)} "
            f"(tensorboard:DIR, wandb:PROJECT, trackio:PROJECT); got {text!r}"
        )
    check_available(kind)
    return Target(kind, where)


def tag(key: str) -> str:
    """The scalar's name: per-layer values side by side under one section, the rest under train/."""
    m = LAYER_KEY.match(key)
    return f"{m.group(1)}_layer/{m.group(2)}" if m else f"train/{key}"


def scalars(row: dict) -> dict[str, float]:
    """The numeric, finite columns of one curve row, by their tag."""
    return {
        tag(k): float(v)
        for k, v in row.items()
        if k not in SKIP and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }


def final_scalars(record: dict) -> dict[str, float]:
    return {
        f"final/{k}": float(v)
        for k, v in (record.get("metrics") or {}).items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }


def _steps(record: dict, rows: Sequence[dict]) -> list[tuple[int, dict[str, float]]]:
    """(step, scalars) per curve row, then the final metrics at the last step."""
    out = [(int(r["step"]), scalars(r)) for r in rows if isinstance(r.get("step"), (int, float))]
    last = out[-1][0] if out else int(record.get("steps") or 0)
    final = final_scalars(record)
    if final:
        out.append((last, final))
    return out


def _run_config(record: dict) -> dict:
    return {
        **(record.get("config") or {}),
        "task": record.get("task"),
        "method": record.get("method"),
        "seed": record.get("seed"),
        "run_id": record.get("run_id"),
        "status": record.get("status"),
        "config_hash": record.get("config_hash"),
    }


def to_tensorboard(folder: Path, record: dict, rows: Sequence[dict]) -> Path:
    """One event folder per run, FOLDER/<run_id>/; an earlier export of the run is replaced, not appended to."""
    from torch.utils.tensorboard import SummaryWriter

    from gapt_bench.results.site.names import (
        slug,  # the site's file-name-safe form of a name
    )

    log_dir = Path(folder) / slug(str(record.get("run_id")))
    if log_dir.is_dir():
        for old in log_dir.glob("events.out.tfevents.*"):
            old.unlink()
    writer = SummaryWriter(log_dir=str(log_dir))
    try:
        for step, values in _steps(record, rows):
            for name, v in values.items():
                writer.add_scalar(name, v, global_step=step)
        writer.add_text("config", "```\n" + json.dumps(_run_config(record), indent=2, default=str) + "\n```")
    finally:
        writer.close()
    return log_dir


def _accepts(fn: Callable, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return True
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def to_logger(kind: str, project: str, record: dict, rows: Sequence[dict]) -> None:
    """One W&B or trackio run (the two share init/log/finish), named by run_id and grouped by task/method."""
    mod: Any = importlib.import_module(BACKENDS[kind][0])
    kwargs: dict[str, Any] = {"project": project, "name": str(record.get("run_id")), "config": _run_config(record)}
    if _accepts(mod.init, "group"):
        kwargs["group"] = f"{record.get('task')}/{record.get('method')}"
    mod.init(**kwargs)
    try:
        for step, values in _steps(record, rows):
            mod.log(values, step=step)
    finally:
        mod.finish()


def export(results: str | Path, records: Sequence[dict], targets: Sequence[Target]) -> list[str]:
    """Every record's curve to every target; one line per target saying what went where."""
    from gapt_bench.results import plots
    from gapt_bench.results.store import runs_file

    results_dir = runs_file(results).parent
    curves = []
    for r in records:
        path = plots.find_curve(results_dir, r)
        curves.append((r, plots.read_curve(path) if path else []))
    lines = []
    for t in targets:
        check_available(t.kind)
        for i, (r, rows) in enumerate(curves):
            try:
                if t.kind == "tensorboard":
                    to_tensorboard(Path(t.where), r, rows)
                else:
                    to_logger(t.kind, t.where, r, rows)
            except Exception as e:  # any backend's own error: say how far the export got
                why = (str(e).strip().splitlines() or [""])[0][:200]
                raise ExportError(
                    f"{t} failed at run {r.get('run_id')} ({type(e).__name__}: {why}); {i} of "
                    f"{len(curves)} runs exported there" + "".join(f"; {x}" for x in lines)
                ) from e
        n_curves = sum(1 for _, rows in curves if rows)
        lines.append(f"{t.kind}: {len(curves)} runs ({n_curves} with a curve) -> {t.where}")
    return lines
