"""One factory for run records in tests: every field of `gapt_bench.results.store.RunRecord`, hashes computed the way the
core does (without the seed), metrics and config parts overridable."""

from __future__ import annotations

import copy
import hashlib
import json

SETUP_SECTIONS = ("data", "model", "train", "mbe")
DIRECTIONS = {
    "val_ce": "min",
    "val_mbe": "min",
    "val_mbe_centered": "min",
    "ood_answer_ce": "min",
    "ood_digit_acc": "max",
    "separation": "max",
    "retained_l1": "min",
    "finetuned_l1": "min",
    "mem_bits": "max",
    "mem_bits_paper_conv": "max",
    "data_bits": "max",
    "bits_per_param": "max",
    "bits_per_param_paper_conv": "max",
}
# What the tasks declare as their quality (records' `primary_metrics`) and the methods as their controls.
PRIMARY_METRICS = {
    "fineweb_lm": ["val_ce"],
    "arithmetic_ood": ["ood_answer_ce", "ood_digit_acc"],
    "forgetting_separation": ["retained_l1", "finetuned_l1"],
    "synthetic_capacity": [],
}
CONTROLS = {"gapt": ["periodic", "mbe"]}


def _h(d: dict) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def make_record(
    task: str = "fineweb_lm",
    method: str = "baseline",
    seed: int = 0,
    metrics: dict | None = None,
    status: str = "ok",
    task_version: str = "1",
    data: dict | None = None,
    model: dict | None = None,
    reg_weight: float = 1.0,
    precision: str = "fp32",
    n_params: int = 120_000,
    schema_version: int = 1,
    preset: str = "quick",
    **extra,
) -> dict:
    """A run record with the fields of runs.jsonl; hashes computed the way the core does (without the seed)."""
    config = {
        "data": data or {"seq_len": 64},
        "model": model or {"n_layer": 2, "n_embd": 64, "n_head": 4},
        "train": {"tokens": 10_000, "precision": precision},
        "mbe": {"alpha": 2.0},
        "reg": {"weight": reg_weight},
        "gapt": {"patience_m": 125},
        "align": {"every": 0},
    }
    full = {"task": task, "method": method, "preset": preset, **config}
    setup = {"task": task, **{s: config[s] for s in SETUP_SECTIONS}}
    metrics = metrics or {}
    rec = {
        "schema_version": schema_version,
        "run_id": f"{task}-{method}-{seed}-{_h(full)[:6]}",
        "task": task,
        "task_version": task_version,
        "method": method,
        "seed": seed,
        "config": copy.deepcopy(config),
        "config_hash": _h(full),
        "setup_hash": _h(setup),
        "preset": preset,
        "metrics": metrics,
        "metric_directions": {k: DIRECTIONS.get(k, "min") for k in metrics},
        "status": status,
        "error": None,
        "n_params": n_params,
        "tokens": 10_000,
        "steps": 100,
        "stop_reason": "budget",
        "wall_time_s": 1.0,
        "tokens_per_s": 1e4,
        "summary": {},
        "env": {},
        "started_at": "2026-01-01T00:00:00+00:00",
        "finished_at": "2026-01-01T00:00:01+00:00",
        "primary_metrics": list(PRIMARY_METRICS.get(task, [])),
        "controls": list(CONTROLS.get(method, [])),
    }
    rec.update(extra)
    return rec
