"""The figures of a task page: exactly what `plots.plot_all` writes for that task, embedded as PNG data URIs.

`plot_all` works on a results folder, so each task gets a throw-away view of one: a runs.jsonl holding only that
task's records, and a link to the real `runs/` folder for the curves. The figures are then that task's by
construction (no guessing from file names), and the PNGs (axis labels, units, legends: the plots module's) go
into the page as base64, so the site has no image files to lose and no address to fetch.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# What each kind of figure `plot_all` writes shows (by its file-name prefix), for the caption.
KINDS = (
    (
        "curve_",
        "training curve of one seed: train CE and per-layer MBE over optimizer steps, compression phases shaded",
    ),
    ("layers_", "per-layer MBE at the end of training, mean ± 95% CI over seeds"),
    ("alignment_", "gradient alignment cos(∇CE, ∇MBE) over optimizer steps"),
    ("capacity_", "capacity plateau: memorized bits against data entropy, α·P ceilings dashed"),
)


@dataclass(frozen=True)
class Figure:
    name: str  # the file name plot_all gave it
    caption: str
    data_uri: str


def caption_of(name: str) -> str:
    for prefix, text in KINDS:
        if name.startswith(prefix):
            return f"{text} ({name})"
    return name


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def task_figures(results_dir: Path, records: Sequence[dict]) -> list[Figure]:
    """Every figure `plot_all` draws from these records (one task's), with curves from `results_dir/runs`."""
    from gapt_bench.results import plots  # matplotlib: only when a site is built

    with tempfile.TemporaryDirectory(prefix="gapt-site-") as tmp:
        view = Path(tmp) / "results"
        view.mkdir()
        with open(view / "runs.jsonl", "w") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
        runs = Path(results_dir) / "runs"
        if runs.is_dir():
            try:
                os.symlink(runs.resolve(), view / "runs", target_is_directory=True)
            except OSError:  # no symlinks here (some Windows setups): the figures that need no curve still come
                pass
        paths = plots.plot_all(view, Path(tmp) / "figures")
        return [Figure(p.name, caption_of(p.name), data_uri(p.read_bytes())) for p in paths]
