"""From a request (tasks x methods x seeds x preset x overrides) to a validated plan of RunConfigs.

Everything that can be wrong with a request is found here, before any folder is created: unknown task and method
names (the registries are consulted here, not by the config), bad types or values, impossible combinations,
unusable devices or data sources, a matched control without the run it copies.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable
from pathlib import Path

from gapt_bench.config import (
    ConfigError,
    RunConfig,
    apply_overrides,
    build_run_config,
    expand_grid,
    resolve_preset,
    split_plan_keys,
)
from gapt_bench.methods import METHODS
from gapt_bench.results.store import finished_keys, has_results, iter_raw_records, ok_keys
from gapt_bench.results.store import run_key as record_key
from gapt_bench.tasks import TASKS

MAX_SEED = 2**32 - 1  # seeds land in JSON records read by pandas/numpy: stay well inside int64
MAX_SEEDS = 10_000
MAX_PLAN_RUNS = 100_000


def parse_seeds(text: str) -> list[int]:
    """'0-2' -> [0, 1, 2]; '0,3,5' -> [0, 3, 5]; ranges and lists combine ('0-2,7'). Bounded: at most MAX_SEEDS
    seeds, each in [0, MAX_SEED] (checked before any list is built)."""
    spans: list[tuple[int, int]] = []
    for part in [p.strip() for p in str(text).split(",")]:
        try:
            if "-" in part[1:]:
                a, b = part.split("-", 1) if not part.startswith("-") else (part, "")
                lo, hi = int(a), int(b)
                if hi < lo:
                    raise ValueError
            else:
                lo = hi = int(part)
        except ValueError:
            raise ConfigError(
                f"bad seeds '{text}': use a list or range of non-negative integers like 0-2 or 0,3,5"
            ) from None
        if lo < 0:
            raise ConfigError(f"bad seeds '{text}': seeds must be non-negative")
        if hi > MAX_SEED:
            raise ConfigError(f"bad seeds '{text}': seeds must be at most {MAX_SEED}")
        spans.append((lo, hi))
    if not spans:
        raise ConfigError("no seeds given: use e.g. --seeds 0-2")
    count = sum(hi - lo + 1 for lo, hi in spans)
    if count > MAX_SEEDS:
        raise ConfigError(f"bad seeds '{text}': {count:,} seeds requested, at most {MAX_SEEDS:,}; split the sweep")
    seeds = [s for lo, hi in spans for s in range(lo, hi + 1)]
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"bad seeds '{text}': a seed is listed twice")
    return seeds


def parse_names(text: str, what: str) -> list[str]:
    names = [n.strip() for n in str(text).split(",") if n.strip()]
    if not names:
        raise ConfigError(f"empty {what} list: name at least one (see `gapt-bench ls`)")
    if len(set(names)) != len(names):
        raise ConfigError(f"{what} list '{text}' names one twice")
    return names


DEFAULT_METHODS = ("baseline", "gapt")
DEFAULT_SEEDS = (0, 1, 2)


def make_plan(
    tasks: Iterable[str],
    methods: Iterable[str] | None,
    seeds: Iterable[int] | None,
    preset: str,
    overrides: Iterable[str] = (),
) -> list[RunConfig]:
    """Every run of the request as a validated RunConfig. Each (task, grid point, method) is resolved and checked
    once; its seeds are copies that differ only in the seed. Grid points that overrides make identical give one
    run each (a plan never holds a run key twice).

    methods / seeds None: the preset's own `methods:` / `seeds:` (a tier preset names them), else DEFAULT_METHODS
    and DEFAULT_SEEDS."""
    tasks, overrides = list(tasks), list(overrides)
    if not tasks:
        raise ConfigError("empty task list: name at least one task (see `gapt-bench ls`)")
    plan: list[RunConfig] = []
    seen: set[tuple[str, str]] = set()
    for task in tasks:
        if task not in TASKS:
            raise ConfigError(TASKS.unknown_message(task))
        task_cls = TASKS.get(task)
        sections, plan_keys = split_plan_keys(resolve_preset(task_cls.load_presets(), task, preset))
        task_methods = _plan_methods(methods, plan_keys, task, preset)
        task_seeds = _plan_seeds(seeds, plan_keys, task, preset)
        points = expand_grid(sections)
        size = len(plan) + len(points) * len(task_methods) * len(task_seeds) * (len(tasks) - tasks.index(task))
        if size > MAX_PLAN_RUNS:
            raise ConfigError(
                f"the plan would have over {MAX_PLAN_RUNS:,} runs; use fewer seeds, methods or grid points"
            )
        for point in points:
            point = apply_overrides(point, overrides)
            for method in task_methods:
                first = build_run_config(
                    task,
                    method,
                    task_seeds[0],
                    preset,
                    point,
                    task_cls.Options,
                    method_sections=METHODS.get(method).config_sections,
                )
                task_cls.finalize(first)
                task_cls.check_ignored(first)
                check_run(first)
                if (task, first.config_hash()) in seen:
                    continue
                seen.add((task, first.config_hash()))
                for seed in task_seeds:
                    cfg = first if seed == task_seeds[0] else copy.deepcopy(first)
                    cfg.seed = seed
                    plan.append(cfg)
    return plan


def _plan_methods(given: Iterable[str] | None, plan_keys: dict, task: str, preset: str) -> list[str]:
    if given is not None:
        names = list(given)
    elif "methods" in plan_keys:
        value = plan_keys["methods"]
        names = parse_names(value, "method") if isinstance(value, str) else list(value)
        if not names or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"preset '{preset}' of task '{task}': `methods:` must be a list of method names")
    else:
        names = list(DEFAULT_METHODS)
    for name in names:
        if name not in METHODS:
            raise ConfigError(METHODS.unknown_message(name))
    return names


def _plan_seeds(given: Iterable[int] | None, plan_keys: dict, task: str, preset: str) -> list[int]:
    if given is not None:
        return list(given)
    if "seeds" in plan_keys:
        value = plan_keys["seeds"]
        try:
            return parse_seeds(value if isinstance(value, str) else ",".join(str(int(v)) for v in value))
        except (TypeError, ValueError):
            raise ConfigError(
                f"preset '{preset}' of task '{task}': `seeds:` must be a range like 0-9 or a list of integers"
            ) from None
    return list(DEFAULT_SEEDS)


def check_run(cfg: RunConfig) -> None:
    """Cross-field checks every task shares."""
    m, t = cfg.model, cfg.train
    if m.n_embd % m.n_head:
        raise ConfigError(f"model.n_embd={m.n_embd} is not divisible by model.n_head={m.n_head}; change one of them")
    from gapt_bench.tasks.base import LMTask
    from gapt_bench.training.runtime import steps_for_budget

    lm = issubclass(TASKS.get(cfg.task), LMTask)
    if lm and t.seq_len % cfg.mbe.patch_size:
        raise ConfigError(
            f"train.seq_len={t.seq_len} is not a multiple of mbe.patch_size={cfg.mbe.patch_size}; "
            "change one so MBE patches tile the sequence"
        )
    if t.batch_size % t.grad_accum:
        raise ConfigError(f"train.batch_size={t.batch_size} is not divisible by train.grad_accum={t.grad_accum}")
    if lm and t.warmup_steps and t.warmup_steps >= steps_for_budget(cfg):
        raise ConfigError(
            f"train.warmup_steps={t.warmup_steps} is not below the run's steps; lower it or raise train.tokens"
        )
    if t.optimizer == "muon":
        check_muon()
    check_device(t.device)


def check_muon() -> None:
    """train.optimizer=muon builds torch.optim.Muon(adjust_lr_fn=...), which torch 2.1-2.8 lack."""
    import inspect

    import torch

    muon = getattr(torch.optim, "Muon", None)
    if muon is None or "adjust_lr_fn" not in inspect.signature(muon).parameters:
        raise ConfigError(
            f"train.optimizer=muon needs torch.optim.Muon with adjust_lr_fn (torch >= 2.9), but this is "
            f"torch {torch.__version__}; upgrade torch or use train.optimizer=adamw"
        )


def check_device(spec: str) -> None:
    """train.device must name a device this machine has: auto, cpu, cuda or cuda:<index>."""
    import re

    if spec in ("auto", "cpu"):
        return
    m = re.fullmatch(r"cuda(?::(\d+))?", spec)
    if m is None:
        raise ConfigError(f"train.device='{spec}' is not auto, cpu, cuda or cuda:<index>")
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(f"train.device={spec} but this machine has no CUDA device; use train.device=auto or cpu")
    if m.group(1) is not None and int(m.group(1)) >= torch.cuda.device_count():
        raise ConfigError(f"train.device={spec} but only {torch.cuda.device_count()} CUDA device(s) are visible")


def reference_config(cfg: RunConfig) -> RunConfig | None:
    """The config of the run a matched control copies (same task, setup, seed and method sections), or None."""
    name = METHODS.get(cfg.method).matches(cfg)
    if name is None:
        return None
    return dataclasses.replace(cfg, method=name, method_sections=tuple(METHODS.get(name).config_sections))


def check_matches(plan: list[RunConfig], out: Path) -> None:
    """Every matched control needs the run it copies recorded ok in `out`, or planned and not yet recorded
    (ConfigError otherwise): a diverged run is never trained again and has no schedule to copy."""
    planned, finished, ok = {run_key(c) for c in plan}, finished_keys(out), ok_keys(out)
    for cfg in plan:
        ref = reference_config(cfg)
        if ref is None or run_key(ref) in ok:
            continue
        which = f"the {ref.method} run of the same task, setup and seed (task {cfg.task}, seed {cfg.seed})"
        if run_key(ref) in finished:
            raise ConfigError(
                f"{cfg.method} is matched to {which}, which is recorded as diverged in {out} and has "
                f"no schedule to copy; set {cfg.method}.match=none or leave {cfg.method} out"
            )
        if run_key(ref) not in planned:
            raise ConfigError(
                f"{cfg.method} is matched to {which}, which is neither planned nor in {out}; add "
                f"{ref.method} to --methods or set {cfg.method}.match=none"
            )


def matched_summary(cfg: RunConfig, out: Path) -> dict | None:
    """The record (run_id and summary) of the run `cfg` copies; RuntimeError if it is missing or did not finish ok."""
    ref = reference_config(cfg)
    if ref is None:
        return None
    key = run_key(ref)
    rec = (
        next((r for r in iter_raw_records(out, warn=False) if record_key(r) == key and r["status"] == "ok"), None)
        if has_results(out)
        else None
    )
    if rec is None:
        raise RuntimeError(
            f"the {ref.method} run this {cfg.method} run is matched to (seed {cfg.seed}) has no ok "
            f"record in {out}; run it first, or set {cfg.method}.match=none"
        )
    return {"run_id": rec["run_id"], "summary": rec.get("summary") or {}}


MAX_GROUP = 8  # members of one batched group at most (the forgetting MLP's gain flattens beyond ~5)


def batch_groups(plan: list[RunConfig], workers: int = 1) -> list[list[RunConfig]]:
    """The plan as units of work: runs that differ only in their seed, of a task and method that can train as one
    batched model (`Task.batchable`, `Method.batchable`, `train.batched` on, CPU), in groups of at most MAX_GROUP,
    split evenly, and so that a plan of few configs still gives every worker work; every other run alone. Plan
    order is kept (matched controls after their references stays true)."""
    units: list[list[RunConfig]] = []
    groups: dict[tuple, list[RunConfig]] = {}
    for cfg in plan:
        if (
            cfg.train.batched
            and cfg.train.device in ("auto", "cpu")
            and TASKS.get(cfg.task).batchable
            and METHODS.get(cfg.method).batchable
        ):
            key = (cfg.task, cfg.method, cfg.config_hash())
            if key not in groups:
                groups[key] = []
                units.append(groups[key])
            groups[key].append(cfg)
        else:
            units.append([cfg])
    n_groups = sum(len(u) > 1 for u in units)
    out: list[list[RunConfig]] = []
    for unit in units:
        chunks = max(-(-len(unit) // MAX_GROUP), min(workers // max(n_groups, 1), len(unit) // 2), 1)
        size = -(-len(unit) // chunks)
        out += [unit[i : i + size] for i in range(0, len(unit), size)]
    return out


def run_key(cfg: RunConfig) -> tuple:
    """The store's key of a run: (task, method, config_hash, seed)."""
    return (cfg.task, cfg.method, cfg.config_hash(), cfg.seed)
