"""`gapt-bench doctor --gpu`: one prepared check that proves the CUDA paths and measures what only a GPU can show.

GPU time is rare and short (one H100/H200 for minutes), so the check is one command with a time budget (default
8 minutes) that writes `gpu_check.json` and `gpu_check.md` (the figures docs/gpu.md quotes):

1. tests: `pytest -m gpu` (tests/test_gpu.py: bf16 autocast and bf16-weights, fused AdamW, compile on and off,
   MBE on bf16 hidden states against fp32, checkpoint and resume on CUDA, a one-rank nccl run, MFU arithmetic);
2. throughput: GPT-2 small (12 layers, d = 768, GPT-2 BPE on the bundled corpus, seq 1024, bf16) through the
   suite's own optimizer step: tokens/s and MFU with torch.compile off and on, and the step time of GAPT in the
   compression phase against the baseline's (paper variant and the summed all-middle-layers variant);
3. capacity: the smallest paper model (1 layer, d = 32, V = 2048, S = 64, batch 2048, bf16) at data = capacity
   for as many steps as fit in its share of the budget: bits/parameter reached, steps/s and the projected time
   of the paper's 10^6 steps;
4. environment: GPU name, driver, CUDA, torch and transformers versions.
Each part records its own error instead of ending the check. The JSON's schema is `SCHEMA` below. On a machine
without CUDA the command prints what it would run and exits 1 with one line.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import platform
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gapt_bench.cli.common import UsageError
from gapt_bench.cli.gpu_check import STAY_COMPRESSING, Sizes, capacity, gpu_tests, throughput

SCHEMA_ID = "gapt_bench.gpu_check/1"
BUDGET_S = 480.0
# Shares of the budget (the rest is start-up and writing): tests, throughput, capacity.
SHARES = {"tests": 0.28, "throughput": 0.34, "capacity": 0.32}
TARGETS = {"mfu_min": 0.40, "gapt_step_ratio_max": 1.10}
# The JSON's schema: key -> type or nested schema ("?" marks a value that may be null).
SCHEMA: dict[str, Any] = {
    "schema": "str",
    "started_at": "str",
    "budget_s": "float",
    "elapsed_s": "float",
    "env": {
        "gpu_name": "str?",
        "driver": "str?",
        "cuda": "str?",
        "torch": "str",
        "transformers": "str",
        "python": "str",
        "gapt_bench": "str",
        "git_sha": "str?",
        "machine_class": "str",
    },
    "tests": {
        "passed": "int",
        "failed": "int",
        "skipped": "int",
        "errors": "int",
        "duration_s": "float",
        "failures": "list",
        "error": "str?",
    },
    "throughput": {
        "model": "str",
        "seq_len": "int",
        "batch": "int",
        "precision": "str",
        "tokens_per_step": "int",
        "flops_per_token": "float",
        "peak_flops": "float?",
        "runs": "list",
        "gapt_step_ratio": "dict",
        "error": "str?",
    },
    "capacity": {
        "model": "str",
        "n_params": "int",
        "n_sequences": "int",
        "data_bits": "float",
        "steps": "int",
        "steps_per_s": "float",
        "bits_per_param": "float",
        "bits_per_param_paper_conv": "float",
        "mem_fraction": "float",
        "projected_paper_hours": "float",
        "error": "str?",
    },
    "targets": {"mfu": "dict", "gapt_step_ratio": "dict"},
}


class NoCuda(RuntimeError):
    """The check needs a CUDA device."""


def plan(budget_s: float = BUDGET_S) -> list[str]:
    """What the check runs, in order, with each part's share of the budget."""
    return [
        f"gapt-bench doctor --gpu: budget {budget_s / 60:.0f} min, writes gpu_check.json and gpu_check.md",
        f"  1. pytest -m gpu tests/test_gpu.py (CUDA paths)                      ~{SHARES['tests'] * budget_s:.0f} s",
        f"  2. GPT-2 small bf16 seq 1024: tokens/s and MFU, compile off/on; GAPT compression step vs baseline step"
        f"  ~{SHARES['throughput'] * budget_s:.0f} s",
        f"  3. capacity, paper model L1/d32 V=2048 S=64 batch 2048 bf16 at data = capacity: bits/param, steps/s"
        f"  ~{SHARES['capacity'] * budget_s:.0f} s",
        "  4. environment: GPU, driver, CUDA, torch, transformers",
    ]


def environment() -> dict:
    import torch
    import transformers

    from gapt_bench import __version__
    from gapt_bench.launch import environment as env

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    info = env.capture("cuda" if gpu else "cpu")
    return {
        "gpu_name": gpu,
        "driver": info.get("gpu_driver"),
        "cuda": torch.version.cuda,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "gapt_bench": __version__,
        "git_sha": info.get("git_sha"),
        "machine_class": info["machine_class"],
    }


# ---------------------------------------------------------------------------------------------------------------
# 1. the CUDA tests


# ---------------------------------------------------------------------------------------------------------------
# 2. throughput on GPT-2 small


# ---------------------------------------------------------------------------------------------------------------
# 3. capacity on the smallest paper model


# ---------------------------------------------------------------------------------------------------------------
# targets, schema, writing


def targets(result: dict) -> dict:
    """The check's TARGETS (MFU and GAPT's step time against the baseline's), met or not, from the measured
    figures (None where a figure is missing)."""
    runs = (result.get("throughput") or {}).get("runs") or []
    best = max((r["mfu"] for r in runs if r.get("mfu") is not None and r["method"] == "baseline"), default=None)
    ratios = (result.get("throughput") or {}).get("gapt_step_ratio") or {}
    worst = max(ratios.values(), default=None)
    return {
        "mfu": {
            "target_min": TARGETS["mfu_min"],
            "best": best,
            "met": None if best is None else best >= TARGETS["mfu_min"],
        },
        "gapt_step_ratio": {
            "target_max": TARGETS["gapt_step_ratio_max"],
            "worst": worst,
            "met": None if worst is None else worst <= TARGETS["gapt_step_ratio_max"],
        },
    }


def schema_problems(obj: Any, schema: Any = None, where: str = "") -> list[str]:
    """Where `obj` departs from SCHEMA (missing keys, wrong types); [] when it conforms. A part that failed may
    carry only {"error", "traceback"}."""
    schema = SCHEMA if schema is None else schema
    problems = []
    if isinstance(schema, dict):
        if not isinstance(obj, dict):
            return [f"{where or 'result'} is not an object"]
        if obj.get("error") and set(obj) <= {"error", "traceback"}:
            return []
        for key, sub in schema.items():
            if key not in obj:
                problems.append(f"{where}{key} missing")
            else:
                problems += schema_problems(obj[key], sub, f"{where}{key}.")
        return problems
    optional = schema.endswith("?")
    kind = schema.rstrip("?")
    if obj is None:
        return [] if optional else [f"{where[:-1]} is null"]
    types = {"str": str, "int": int, "float": (int, float), "list": list, "dict": dict}[kind]
    if not isinstance(obj, types) or isinstance(obj, bool):
        return [f"{where[:-1]} is {type(obj).__name__}, not {kind}"]
    return []


def markdown(result: dict) -> str:
    """The summary docs/gpu.md quotes."""
    e = result.get("env", {})
    lines = [
        f"# GPU check {result.get('started_at', '')}",
        "",
        f"{e.get('gpu_name')} (driver {e.get('driver')}, CUDA {e.get('cuda')}), torch {e.get('torch')}, "
        f"transformers {e.get('transformers')}, gapt_bench {e.get('gapt_bench')} ({e.get('git_sha')}); "
        f"{result.get('elapsed_s')} s of a {result.get('budget_s')} s budget.",
        "",
    ]
    tests = result.get("tests", {})
    lines += [
        "## CUDA tests",
        "",
        f"{tests.get('passed', 0)} passed, {tests.get('failed', 0)} failed, "
        f"{tests.get('skipped', 0)} skipped, {tests.get('errors', 0)} errors in {tests.get('duration_s')} s"
        + (f"; {tests['error']}" if tests.get("error") else ""),
        "",
    ]
    lines += [f"- failed: {f}" for f in tests.get("failures", [])]
    thr = result.get("throughput", {})
    lines += ["", "## Throughput: " + str(thr.get("model", "")), ""]
    if thr.get("error"):
        lines.append(f"error: {thr['error']}")
    lines += ["| method | compile | ms/step | tokens/s | MFU | warm-up s | peak GiB |", "|---|---|---|---|---|---|---|"]
    for r in thr.get("runs", []):
        if "step_s_median" not in r:
            lines.append(f"| {r['method']} | {r['compile']} | {r.get('skipped', '')} | | | | |")
            continue
        mfu_txt = "—" if r.get("mfu") is None else f"{r['mfu'] * 100:.1f}%"
        peak = "—" if r.get("peak_memory_gib") is None else f"{r['peak_memory_gib']:.1f}"
        variant = "".join(f" {o}" for o in r["overrides"] if o not in STAY_COMPRESSING)
        lines.append(
            f"| {r['method']}{variant} | {r['compile']} | {r['step_s_median'] * 1e3:.1f} | "
            f"{r['tokens_per_s']:,.0f} | {mfu_txt} | {r['warmup_s']} | {peak} |"
        )
    for name, ratio in (thr.get("gapt_step_ratio") or {}).items():
        lines.append(f"\nGAPT compression step / baseline step ({name}): {ratio:.3f}")
    cap = result.get("capacity", {})
    lines += ["", "## Capacity: " + str(cap.get("model", "")), ""]
    if cap.get("error"):
        lines.append(f"error: {cap['error']}")
    else:
        lines.append(
            f"{cap['steps']:,} steps at {cap['steps_per_s']:.1f} steps/s: {cap['bits_per_param']:.2f} "
            f"bits/param strict ({cap['bits_per_param_paper_conv']:.2f} in the paper's convention), "
            f"{cap['mem_fraction'] * 100:.1f}% of the data; the paper's 10^6 steps would take "
            f"{cap['projected_paper_hours']:.1f} h"
        )
    tg = result.get("targets", {})
    lines += [
        "",
        "## Targets",
        "",
        f"- MFU >= {TARGETS['mfu_min'] * 100:.0f}%: {_met(tg.get('mfu', {}), 'best', True)}",
        f"- GAPT step <= {TARGETS['gapt_step_ratio_max']} x baseline: "
        f"{_met(tg.get('gapt_step_ratio', {}), 'worst', False)}",
    ]
    return "\n".join(lines) + "\n"


def _met(t: dict, key: str, pct: bool) -> str:
    v = t.get(key)
    if v is None:
        return "not measured"
    shown = f"{v * 100:.1f}%" if pct else f"{v:.3f}"
    return f"{shown}: {'met' if t.get('met') else 'not met'}"


def write(result: dict, out: Path) -> tuple[Path, Path]:
    def finite(o: Any) -> Any:
        if isinstance(o, float) and not math.isfinite(o):
            return None
        if isinstance(o, dict):
            return {k: finite(v) for k, v in o.items()}
        if isinstance(o, list):
            return [finite(v) for v in o]
        return o

    j, md = out / "gpu_check.json", out / "gpu_check.md"
    j.write_text(json.dumps(finite(result), indent=2, default=str) + "\n")
    md.write_text(markdown(result))
    return j, md


def cmd_doctor(args) -> int:
    """The environment; with --gpu the GPU check (on a machine without CUDA: what it would run, then exit 1)."""
    from gapt_bench.cli import doctor

    if args.budget < 60:
        raise UsageError(f"--budget must be at least 60 seconds, got {args.budget}")
    env = doctor.environment()
    print(
        f"gapt_bench {env['gapt_bench']} ({env['git_sha']}), torch {env['torch']}, CUDA {env['cuda']}, "
        f"machine class {env['machine_class']}"
    )
    if not args.gpu:
        return 0
    print("\n".join(doctor.plan(args.budget)), flush=True)
    try:
        result = doctor.run_check(Path(args.out), args.budget)
    except doctor.NoCuda as e:
        print(f"gapt-bench: error: {e}", file=sys.stderr)
        return 1
    print(doctor.markdown(result))
    print(f"wrote {Path(args.out) / 'gpu_check.json'} and {Path(args.out) / 'gpu_check.md'}")
    failed = (
        result["tests"].get("failed")
        or result["tests"].get("errors")
        or any(result[p].get("error") for p in ("tests", "throughput", "capacity"))
    )
    return 1 if failed else 0


def run_check(out: Path, budget_s: float = BUDGET_S, sizes: Sizes | None = None, tests: bool = True) -> dict:
    """All four parts within `budget_s`; writes out/gpu_check.json and out/gpu_check.md; returns the result."""
    sizes = sizes or Sizes()
    import torch

    if sizes.device == "cuda" and not torch.cuda.is_available():
        raise NoCuda("no CUDA device: run `gapt-bench doctor --gpu` on a GPU machine (see docs/gpu.md)")
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"schema": SCHEMA_ID, "started_at": _now(), "budget_s": budget_s, "env": environment()}
    result["tests"] = (
        _guard(lambda: gpu_tests(SHARES["tests"] * budget_s))
        if tests
        else {
            "passed": 0,
            "failed": 0,
            "skipped": 0,
            "errors": 0,
            "duration_s": 0.0,
            "failures": [],
            "error": "not run",
        }
    )
    result["throughput"] = _guard(lambda: throughput(SHARES["throughput"] * budget_s, sizes))
    result["capacity"] = _guard(lambda: capacity(SHARES["capacity"] * budget_s, sizes))
    result["targets"] = targets(result)
    result["elapsed_s"] = round(time.perf_counter() - t0, 1)
    write(result, out)
    return result


def _guard(fn: Callable[[], dict]) -> dict:
    try:
        return fn()
    except Exception as e:  # one failing part must not take the others' figures with it
        return {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-2000:]}


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
