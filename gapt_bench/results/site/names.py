"""The site's file names, in one place: every link is built from these, so links and files cannot drift apart.

All pages sit side by side in the site folder and link each other relatively, which is what makes the folder
work from `file://` and from any subpath of a static host.
"""

from __future__ import annotations

import re

INDEX = "index.html"
PAPER = "paper.html"
EVALUATIONS = "evaluations.html"  # saved models measured by `gapt-bench eval`


def slug(text: str) -> str:
    """A file-name-safe form of a task name or hash (letters, digits, '_', '.', '-')."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(text)).strip("-.") or "x"


def task_page(task: str) -> str:
    return f"task-{slug(task)}.html"


def runs_page(task: str, task_version: str, config_hash: str) -> str:
    return f"runs-{slug(task)}-v{slug(task_version)}-{slug(config_hash)}.html"


def run_anchor(run_id: str) -> str:
    return f"run-{slug(run_id)}"
