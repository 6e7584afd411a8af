"""`build_site`: a results folder in, a folder of self-contained HTML pages out (`gapt-bench site`)."""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gapt_bench.data.files import StoreError
from gapt_bench.results.site import names, pages, provenance
from gapt_bench.results.site.content import gather
from gapt_bench.results.site.figures import task_figures
from gapt_bench.results.site.html import GENERATOR, page
from gapt_bench.results.store import read_records, runs_file, split_kinds


@dataclass
class Site:
    """What was written: the folder, its pages, and how many figures and runs they hold."""

    out: Path
    pages: list[Path] = field(default_factory=list)
    n_figures: int = 0
    n_runs: int = 0


def default_command(results: str | Path, out: str | Path, reference: str = "baseline") -> str:
    parts = ["gapt-bench", "site", str(results), "-o", str(out)]
    if reference != "baseline":
        parts += ["--reference", reference]
    return shlex.join(parts)


def build_site(
    results: str | Path,
    out: str | Path,
    *,
    records: Sequence[dict] | None = None,
    reference: str = "baseline",
    command: str | None = None,
    figures: bool = True,
    evaluations: Sequence[dict] = (),
) -> Site:
    """Write the site of the records at `results` (a folder with runs.jsonl, or a .jsonl file) into `out`.

    `records`: already read from `results` (else read here). `command` is the command line printed on every page
    as the way to rebuild it (default: the plain `gapt-bench site RESULTS -o OUT`). `figures=False` skips the
    matplotlib figures (the per-run curves stay). `evaluations`: records of saved models (`gapt-bench eval`), shown
    on a page of their own; the training pages never see them. The pages are built aside and swapped in at the end: a build
    that fails midway leaves the folder's previous site whole."""
    if records is None:
        records, evaluations = split_kinds(read_records(results))
    records = list(records)
    if not records:
        raise StoreError(f"no run records in {results}; point at a results folder that `gapt-bench run --out` filled")
    results_dir = runs_file(results).parent
    content = gather(records, reference)
    prov = provenance.collect(records, command or default_command(results, out, reference))
    foot = provenance.footer(prov)
    nav = [
        (names.INDEX, "Leaderboard"),
        (names.PAPER, "Papers' claims"),
        *[(names.task_page(t), t) for t in content.tasks],
        *([(names.EVALUATIONS, "Evaluated models")] if evaluations else []),
    ]
    site = Site(Path(out), n_runs=len(records))
    site.out.mkdir(parents=True, exist_ok=True)
    staging = _staging_folder(site.out)
    try:

        def write(name: str, title: str, body: str, here: str | None = None) -> None:
            (staging / name).write_text(page(f"{title} · gapt-bench", body, nav, here or name, foot), encoding="utf-8")
            site.pages.append(site.out / name)

        write(names.INDEX, "Leaderboard", pages.index_body(content))
        write(names.PAPER, "Papers' claims", pages.paper_body(content))
        if evaluations:
            write(names.EVALUATIONS, "Evaluated models", pages.evaluations_body(evaluations))
        for task in content.tasks:
            figs = task_figures(results_dir, content.records_of(task)) if figures else []
            site.n_figures += len(figs)
            write(names.task_page(task), task, pages.task_body(content, task, figs))
            for g in content.groups[task]:
                write(g.page, f"{task} / {g.label}", pages.runs_body(g, results_dir), names.task_page(task))
        for path in site.pages:  # every page is built: swap them in (a rename each, same file system)
            os.replace(staging / path.name, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    remove_stale(site)
    return site


def _staging_folder(out: Path) -> Path:
    """Where the pages are built before they replace the old ones, so that a build failing midway leaves the
    previous site whole: a hidden sibling of `out` (of the folder a link points to: renames stay on one file
    system), or a hidden folder inside it where the parent is read-only."""
    out = out.resolve()
    try:
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    except OSError:
        return Path(tempfile.mkdtemp(prefix=".building-", dir=out))


def remove_stale(site: Site) -> list[Path]:
    """Pages an earlier build left in the folder that this one did not write (a task or configuration no longer in
    the records): removed, so a published folder holds no page that nothing links to. Only pages that this module
    generated (its generator tag) are touched."""
    written = {p.name for p in site.pages}
    removed = []
    for path in sorted(site.out.glob("*.html")):
        if path.name in written or not path.name.startswith(("task-", "runs-")):
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            head = f.read(600)
        if GENERATOR in head:
            path.unlink()
            removed.append(path)
    return removed
