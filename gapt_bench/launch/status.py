"""Where a sweep stands: each run of a plan as done, running, queued, failed, diverged or missing (from the store,
the run folders, the claims and Slurm's `squeue`), and the command that resubmits what is left.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from gapt_bench.config import RunConfig
from gapt_bench.data.claims import live_claim
from gapt_bench.launch.cluster import _key_of
from gapt_bench.launch.job import _key
from gapt_bench.launch.options import (
    LAUNCHER_FILE,
    STATES,
    SUBMITIT_DIR,
    LaunchError,
    read_launcher_config,
)
from gapt_bench.launch.queue import _last_jobs, queued_runs
from gapt_bench.results.store import has_results, read_store
from gapt_bench.training.runtime import CHECKPOINT

# ----------------------------------------------------------------------------------------------------------------
# Status of a plan


@dataclass
class RunState:
    cfg: RunConfig
    state: str  # done | running | queued | failed | diverged | missing
    detail: str
    job: dict | None = None  # the last job submitted for this run (OUT/submitit/jobs.jsonl)


def plan_status(plan: list[RunConfig], out: Path) -> list[RunState]:
    """The state of every run of `plan` in the results folder `out`."""
    from gapt_bench.launch.execute import find_unfinished

    out = Path(out)
    records = {_key(r): r for r in read_store(out, warn=False).records} if has_results(out) else {}
    jobs = _last_jobs(out / SUBMITIT_DIR)
    in_queue = queued_runs(out, jobs)
    states = []
    for cfg in plan:
        key = _key_of(cfg)
        rec = records.get(key)
        job = jobs.get(key)
        if rec is not None and rec["status"] == "ok":
            states.append(RunState(cfg, "done", rec["run_id"], job))
            continue
        if rec is not None and rec["status"] == "diverged":
            states.append(RunState(cfg, "diverged", _error(rec), job))
            continue
        owner = live_claim(out, key)
        if owner is not None:
            where = f"pid {owner.get('pid')} on {owner.get('host')}"
            if owner.get("job"):
                where += f", job {owner['job']}"
            states.append(RunState(cfg, "running", f"{where} since {owner.get('since', '?')}", job))
            continue
        if key in in_queue:
            states.append(RunState(cfg, "queued", f"Slurm job {in_queue[key][0]}: {in_queue[key][1]}", job))
            continue
        if rec is not None:
            states.append(RunState(cfg, "failed", _error(rec), job))
            continue
        folder = find_unfinished(out, cfg) if (out / "runs").is_dir() else None
        if folder is not None and (folder / CHECKPOINT).exists():
            detail = f"interrupted, checkpoint kept in {folder}"
        elif folder is not None:
            detail = f"interrupted before its first checkpoint ({folder})"
        elif job is not None and not Path(str(job.get("stdout"))).exists():
            detail = f"not started (job {job.get('job_id')} has no log yet: still queued?)"
        else:
            detail = "not started"
        states.append(RunState(cfg, "missing", detail, job))
    return states


def _error(rec: dict) -> str:
    err = rec.get("error") or {}
    return f"{rec['run_id']}: {str(err.get('message', ''))[:160]}".rstrip(": ")


def status_lines(states: list[RunState], out: Path, resubmit: str) -> list[str]:
    """The report `gapt-bench status` prints: counts, one line per run, and what to do next."""
    counts = {s: sum(1 for x in states if x.state == s) for s in STATES}
    lines = [
        f"gapt-bench status: {len(states)} runs in the plan, results in {out}",
        "  " + "   ".join(f"{s} {counts[s]}" for s in STATES),
    ]
    width = max([len(s.cfg.task) for s in states] + [4])
    mwidth = max([len(s.cfg.method) for s in states] + [6])
    lines.append(f"{'state':<9} {'task':<{width}} {'method':<{mwidth}} {'seed':>4}  {'config':<8}  detail")
    for s in states:
        detail = s.detail
        if s.state != "done" and s.job:
            detail += f"  [last job {s.job.get('job_id')}, log {s.job.get('stderr')}]"
        lines.append(
            f"{s.state:<9} {s.cfg.task:<{width}} {s.cfg.method:<{mwidth}} {s.cfg.seed:>4}  "
            f"{s.cfg.config_hash()[:8]:<8}  {detail}"
        )
    redo = counts["missing"] + counts["failed"]
    queued = sum(1 for x in states if x.state == "missing" and "still queued?" in x.detail)
    if queued:
        lines.append(
            f"{queued} missing run(s) have a submitted job without a log yet: check `squeue` before "
            "resubmitting them (a duplicate job would only wait for, or skip, what the first one does)"
        )
    if redo:
        lines.append(
            f"resubmit the {redo} missing or failed run(s) (finished runs are skipped, running ones left "
            "alone, interrupted ones resume from their checkpoint):"
        )
        lines.append(f"  {resubmit}")
    elif counts["running"] or counts["queued"]:
        lines.append(f"{counts['running']} run(s) still running and {counts['queued']} queued; nothing to resubmit")
    if counts["diverged"]:
        lines.append(
            f"{counts['diverged']} diverged run(s) are final (deterministic); change the config to run them differently"
        )
    if counts["done"] == len(states):
        lines.append("all runs are done")
    return lines


def plan_argv(
    tasks: str,
    methods: str | None,
    seeds: str | None,
    preset: str,
    overrides: Iterable[str] = (),
    includes: Iterable[str] = (),
) -> list[str]:
    """The plan's arguments as `gapt-bench run` and `status` take them (methods / seeds None: the preset's)."""
    argv = ["--tasks", tasks]
    argv += ["--methods", methods] if methods is not None else []
    argv += ["--seeds", seeds] if seeds is not None else []
    argv += ["--preset", preset]
    for o in overrides:
        argv += ["--set", o]
    for path in includes:
        argv += ["--include", path]
    return argv


def resubmit_command(plan_argv: list[str], out: Path) -> str:
    """`gapt-bench run <plan args> --out OUT --resume`, plus the last submission's launcher (OUT/submitit)."""
    argv = ["gapt-bench", "run", *plan_argv, "--out", str(out)]
    launcher_file = Path(out) / SUBMITIT_DIR / LAUNCHER_FILE
    if launcher_file.is_file():
        try:
            launcher = read_launcher_config(launcher_file).get("launcher", "submitit")
        except LaunchError:
            launcher = "submitit"
        argv += ["--launcher", str(launcher), "--launcher-config", str(launcher_file)]
    argv.append("--resume")
    return shlex.join(argv)
