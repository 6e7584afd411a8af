"""`gapt-bench doctor --gpu`: one prepared check that proves the CUDA paths and measures what only a GPU can show.

GPU time is rare and short (one H100/H200 for minutes), so the check is one command with a time budget (default
8 minutes) that writes `gpu_check.json` and `gpu_check.md` (the figures the README's GPU section quotes):

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
import os
import platform
import re
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

SCHEMA_ID = "gapt_bench.gpu_check/1"
BUDGET_S = 480.0
# Shares of the budget (the rest is start-up and writing): tests, throughput, capacity.
SHARES = {"tests": 0.28, "throughput": 0.34, "capacity": 0.32}
TARGETS = {"mfu_min": 0.40, "gapt_step_ratio_max": 1.10}
PAPER_STEPS = 1_000_000
# GAPT's overrides that keep it in the compression phase for the whole timing (what its step time is compared on);
# the report shows a run's other overrides as its variant.
STAY_COMPRESSING = ("gapt.initial_phase=2", "gapt.patience_c=1000000", "gapt.tau=1000000000")
# The JSON's schema: key -> type or nested schema ("?" marks a value that may be null).
SCHEMA: dict[str, Any] = {
    "schema": "str", "started_at": "str", "budget_s": "float", "elapsed_s": "float",
    "env": {"gpu_name": "str?", "driver": "str?", "cuda": "str?", "torch": "str", "transformers": "str",
            "python": "str", "gapt_bench": "str", "git_sha": "str?", "machine_class": "str"},
    "tests": {"passed": "int", "failed": "int", "skipped": "int", "errors": "int", "duration_s": "float",
              "failures": "list", "error": "str?"},
    "throughput": {"model": "str", "seq_len": "int", "batch": "int", "precision": "str", "tokens_per_step": "int",
                   "flops_per_token": "float", "peak_flops": "float?", "runs": "list", "gapt_step_ratio": "dict",
                   "error": "str?"},
    "capacity": {"model": "str", "n_params": "int", "n_sequences": "int", "data_bits": "float", "steps": "int",
                 "steps_per_s": "float", "bits_per_param": "float", "bits_per_param_paper_conv": "float",
                 "mem_fraction": "float", "projected_paper_hours": "float", "error": "str?"},
    "targets": {"mfu": "dict", "gapt_step_ratio": "dict"},
}


class NoCuda(RuntimeError):
    """The check needs a CUDA device."""


@dataclass(frozen=True)
class Sizes:
    """What the check measures. The defaults are the check's own (GPT-2 small at seq 1024, batch 32; the paper's
    smallest capacity model); a CPU test runs the same code on tiny sizes."""

    device: str = "cuda"
    gpt2: tuple[int, int, int] = (12, 768, 12)  # layers, width, heads
    batch: int = 32
    seq_len: int = 1024
    timed_steps: int = 20
    warmup_steps: int = 5
    compile: bool = True
    capacity_model: tuple[int, int, int] = (1, 32, 1)
    capacity_batch: int = 2048
    corpus_tokens: int = 4_000_000


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

    from gapt_bench import __version__, env

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    info = env.capture("cuda" if gpu else "cpu")
    return {"gpu_name": gpu, "driver": info.get("gpu_driver"), "cuda": torch.version.cuda,
            "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "gapt_bench": __version__, "git_sha": info.get("git_sha"),
            "machine_class": info["machine_class"]}


def run_check(out: Path, budget_s: float = BUDGET_S, sizes: Sizes = Sizes(), tests: bool = True) -> dict:
    """All four parts within `budget_s`; writes out/gpu_check.json and out/gpu_check.md; returns the result."""
    import torch

    if sizes.device == "cuda" and not torch.cuda.is_available():
        raise NoCuda("no CUDA device: run `gapt-bench doctor --gpu` on a GPU machine (see README, GPU)")
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"schema": SCHEMA_ID, "started_at": _now(), "budget_s": budget_s,
                              "env": environment()}
    result["tests"] = _guard(lambda: gpu_tests(SHARES["tests"] * budget_s)) if tests else {
        "passed": 0, "failed": 0, "skipped": 0, "errors": 0, "duration_s": 0.0, "failures": [],
        "error": "not run"}
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


# ---------------------------------------------------------------------------------------------------------------
# 1. the CUDA tests


def parse_pytest_summary(text: str) -> dict:
    """Counts from pytest's last line ("3 passed, 1 failed, 2 skipped in 4.1s") and the FAILED lines."""
    counts = {k: 0 for k in ("passed", "failed", "skipped", "errors")}
    for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?|error)", text):
        counts["errors" if word.startswith("error") else word] += int(n)
    failures = re.findall(r"^(?:FAILED|ERROR) (\S+)", text, re.M)
    return {**counts, "failures": failures}


def gpu_tests(timeout_s: float) -> dict:
    root = Path(__file__).resolve().parent.parent
    t0 = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
                               str(root / "tests" / "test_gpu.py")], cwd=root, capture_output=True, text=True,
                              timeout=timeout_s, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        text, error = done.stdout + done.stderr, None
    except subprocess.TimeoutExpired as e:
        text = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        error = f"pytest -m gpu ran past its {timeout_s:.0f} s share of the budget"
    return {**parse_pytest_summary(text), "duration_s": round(time.perf_counter() - t0, 1), "error": error,
            "output_tail": text[-3000:]}


# ---------------------------------------------------------------------------------------------------------------
# 2. throughput on GPT-2 small


class TokenBatches:
    """Batches of consecutive windows of a token array (what fineweb_lm's get_batch does, without the split)."""

    def __init__(self, tokens, batch: int, seq_len: int) -> None:
        import numpy as np
        import torch

        self.tokens, self.batch, self.seq_len = np.asarray(tokens, dtype=np.int64), batch, seq_len
        self.n = (len(self.tokens) - 1) // seq_len
        self._torch = torch

    def get_batch(self, step: int):
        import numpy as np

        starts = ((step * self.batch + np.arange(self.batch)) % self.n) * self.seq_len
        rows = self.tokens[starts[:, None] + np.arange(self.seq_len + 1)[None, :]]
        t = self._torch.from_numpy(rows)
        x, y = t[:, :-1].contiguous(), t[:, 1:].contiguous()
        return (x.pin_memory(), y.pin_memory()) if self._torch.cuda.is_available() else (x, y)

    def check(self, *a) -> bool:
        return False


def _gpt2_tokens(max_tokens: int = 4_000_000):
    """The bundled corpus in GPT-2 BPE (tokenised once, a few seconds with tiktoken)."""
    from gapt_bench.text import TokenCache

    data = TokenCache().get("offline", "gpt2", val_tokens=2048, train_tokens=max_tokens)
    return data.train.tokens


def _method_cfg(method: str, compile_: bool, sizes: Sizes, overrides: list[str] = ()):
    from gapt_bench.runner import make_plan

    layers, width, heads = sizes.gpt2
    base = ["data.source=offline", "data.tokenizer=gpt2", "data.pad_vocab_multiple=64", "data.val_tokens=2048",
            f"model.n_layer={layers}", f"model.n_embd={width}", f"model.n_head={heads}",
            f"train.batch_size={sizes.batch}", "train.grad_accum=1", f"train.seq_len={sizes.seq_len}",
            "train.tokens=1048576000", "train.precision=bf16", f"train.device={sizes.device}",
            f"train.compile={str(compile_).lower()}", "train.warmup_steps=0", "train.log_every=1000000"]
    (cfg,) = make_plan(["fineweb_lm"], [method], [0], "paper", [*base, *overrides])
    return cfg


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(method: str, compile_: bool, tokens, sizes: Sizes, overrides: list[str] = ()) -> dict:
    """Median and mean step time of the suite's optimizer step, after the warm-up steps (compilation)."""
    import torch

    from gapt_bench.models import build_model
    from gapt_bench.registry import METHODS
    from gapt_bench.runtime import RunContext
    from gapt_bench.train import OPTIMIZERS, optimizer_step

    cfg = _method_cfg(method, compile_, sizes, overrides)
    m, device = cfg.model, torch.device(sizes.device)
    torch.manual_seed(0)
    raw = build_model(n_layer=m.n_layer, n_embd=m.n_embd, n_head=m.n_head, vocab_size=m.vocab_size,
                      n_positions=m.n_positions).to(device)
    model = torch.compile(raw) if compile_ else raw
    opts = OPTIMIZERS[cfg.train.optimizer](raw, cfg.train, device)
    method_obj = METHODS.get(method)(cfg, m.n_layer)
    task = TokenBatches(tokens, cfg.train.batch_size, cfg.train.seq_len)
    ctx = RunContext(run_dir=Path("."), device=device)
    times, warm = [], sizes.warmup_steps
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t_warm = time.perf_counter()
    warmup_s = 0.0
    for step in range(warm + sizes.timed_steps):
        if step == warm:
            warmup_s = time.perf_counter() - t_warm
        _sync(device)
        t0 = time.perf_counter()
        optimizer_step(model, raw, task, method_obj, cfg, ctx, step, opts)
        _sync(device)
        if step >= warm:
            times.append(time.perf_counter() - t0)
    times.sort()
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    return {"method": method, "compile": compile_, "overrides": list(overrides), "steps_timed": len(times),
            "warmup_steps": warm, "warmup_s": round(warmup_s, 1), "step_s_median": times[len(times) // 2],
            "step_s_mean": sum(times) / len(times), "peak_memory_gib": peak}


def throughput(budget_s: float, sizes: Sizes = Sizes()) -> dict:
    import torch

    from gapt_bench.models import build_model, flops_per_token, mfu, peak_flops

    t_start = time.perf_counter()
    tokens = _gpt2_tokens(sizes.corpus_tokens)
    cfg = _method_cfg("baseline", False, sizes)
    m, t = cfg.model, cfg.train
    with torch.device("meta"):
        shell = build_model(n_layer=m.n_layer, n_embd=m.n_embd, n_head=m.n_head, vocab_size=m.vocab_size,
                            n_positions=m.n_positions)
    fpt = flops_per_token(shell, t.seq_len)
    peak, _ = peak_flops(torch.device(sizes.device))
    per_step = t.batch_size * t.seq_len
    stay = STAY_COMPRESSING
    plan_ = [("baseline", False, ()), ("gapt", False, stay), ("gapt", False, (*stay, "reg.layers=middle",
                                                                               "reg.step_mode=sum"))]
    if sizes.compile:
        plan_.append(("baseline", True, ()))
    runs = []
    for method, compile_, overrides in plan_:
        if time.perf_counter() - t_start > budget_s * 0.8:
            runs.append({"method": method, "compile": compile_, "skipped": "out of budget"})
            continue
        r = time_steps(method, compile_, tokens, sizes, list(overrides))
        r["tokens_per_s"] = per_step / r["step_s_median"]
        r["mfu"] = mfu(fpt, r["tokens_per_s"], peak)
        runs.append(r)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    base = next((r for r in runs if r["method"] == "baseline" and not r["compile"] and "step_s_median" in r), None)
    ratios = {}
    for r in runs:
        if r["method"] == "gapt" and base and "step_s_median" in r:
            name = "paper (rotate 2..L-3, alternate)" if "reg.layers=middle" not in r["overrides"] else \
                "summed, all middle layers"
            ratios[name] = r["step_s_median"] / base["step_s_median"]
    return {"model": f"GPT-2 L{m.n_layer} d{m.n_embd} h{m.n_head}, V {m.vocab_size} (padded)",
            "seq_len": t.seq_len, "batch": t.batch_size, "precision": "bf16 autocast", "tokens_per_step": per_step, "flops_per_token": fpt, "peak_flops": peak,
            "runs": runs, "gapt_step_ratio": ratios, "error": None}


# ---------------------------------------------------------------------------------------------------------------
# 3. capacity on the smallest paper model


def capacity(budget_s: float, sizes: Sizes = Sizes()) -> dict:
    import torch

    from gapt_bench.methods.baseline import Baseline
    from gapt_bench.models import build_model, paper_param_count
    from gapt_bench.runner import make_plan
    from gapt_bench.runtime import RunContext
    from gapt_bench.tasks.synthetic_capacity.task import SyntheticCapacity
    from gapt_bench.train import OPTIMIZERS, lr_factor, optimizer_step

    layers, width, heads = sizes.capacity_model
    overrides = [f"model.n_layer={layers}", f"model.n_embd={width}", f"model.n_head={heads}",
                 "data.capacity_ratio=1.0", f"train.batch_size={sizes.capacity_batch}",
                 f"train.device={sizes.device}", "train.precision=bf16", "train.eval_every=0",
                 "train.warmup_steps=500"]
    (cfg,) = make_plan(["synthetic_capacity"], ["baseline"], [0], "paper", overrides)
    task = SyntheticCapacity(cfg)
    task.setup()
    m, t = cfg.model, cfg.train
    device = torch.device(sizes.device)
    torch.manual_seed(0)
    model = build_model(n_layer=m.n_layer, n_embd=m.n_embd, n_head=m.n_head, vocab_size=m.vocab_size,
                        n_positions=m.n_positions).to(device)
    ctx = RunContext(run_dir=Path("."), device=device)
    method = Baseline(cfg, m.n_layer)
    # calibrate the step rate, then give the cosine schedule exactly the steps that fit in the budget
    opts = OPTIMIZERS[t.optimizer](model, t, device)
    t0 = time.perf_counter()
    for step in range(20):
        optimizer_step(model, model, task, method, cfg, ctx, step, opts)
    _sync(device)
    rate = 20 / (time.perf_counter() - t0)
    total = max(20, int(rate * (budget_s * 0.8 - (time.perf_counter() - t0))))
    torch.manual_seed(0)
    model = build_model(n_layer=m.n_layer, n_embd=m.n_embd, n_head=m.n_head, vocab_size=m.vocab_size,
                        n_positions=m.n_positions).to(device)
    opts = OPTIMIZERS[t.optimizer](model, t, device)
    t1 = time.perf_counter()
    for step in range(total):
        lr = t.lr * lr_factor(step, total, t)
        for opt in opts:
            for g in opt.param_groups:
                g["lr"] = lr
        optimizer_step(model, model, task, method, cfg, ctx, step, opts)
    _sync(device)
    seconds = time.perf_counter() - t1
    mem = task.mem_bits(model, device)
    p = paper_param_count(m.n_layer, m.n_embd, m.vocab_size, m.n_positions)
    conv = t.seq_len / (t.seq_len - 1)
    return {"model": f"L{m.n_layer}/d{m.n_embd} V={m.vocab_size} S={t.seq_len} batch {t.batch_size} bf16",
            "n_params": p, "n_sequences": cfg.data.n_sequences, "data_bits": task.data_bits, "steps": total,
            "steps_per_s": total / seconds, "bits_per_param": mem / p, "bits_per_param_paper_conv": mem * conv / p,
            "mem_fraction": mem / task.data_bits, "projected_paper_hours": PAPER_STEPS / (total / seconds) / 3600,
            "error": None}


# ---------------------------------------------------------------------------------------------------------------
# targets, schema, writing


def targets(result: dict) -> dict:
    """The check's TARGETS (MFU and GAPT's step time against the baseline's), met or not, from the measured
    figures (None where a figure is missing)."""
    runs = (result.get("throughput") or {}).get("runs") or []
    best = max((r["mfu"] for r in runs if r.get("mfu") is not None and r["method"] == "baseline"), default=None)
    ratios = (result.get("throughput") or {}).get("gapt_step_ratio") or {}
    worst = max(ratios.values(), default=None)
    return {"mfu": {"target_min": TARGETS["mfu_min"], "best": best,
                    "met": None if best is None else best >= TARGETS["mfu_min"]},
            "gapt_step_ratio": {"target_max": TARGETS["gapt_step_ratio_max"], "worst": worst,
                                "met": None if worst is None else worst <= TARGETS["gapt_step_ratio_max"]}}


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
    """The summary the README's GPU section quotes."""
    e = result.get("env", {})
    lines = [f"# GPU check {result.get('started_at', '')}", "",
             f"{e.get('gpu_name')} (driver {e.get('driver')}, CUDA {e.get('cuda')}), torch {e.get('torch')}, "
             f"transformers {e.get('transformers')}, gapt_bench {e.get('gapt_bench')} ({e.get('git_sha')}); "
             f"{result.get('elapsed_s')} s of a {result.get('budget_s')} s budget.", ""]
    tests = result.get("tests", {})
    lines += ["## CUDA tests", "", f"{tests.get('passed', 0)} passed, {tests.get('failed', 0)} failed, "
              f"{tests.get('skipped', 0)} skipped, {tests.get('errors', 0)} errors in {tests.get('duration_s')} s"
              + (f"; {tests['error']}" if tests.get("error") else ""), ""]
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
        lines.append(f"| {r['method']}{variant} | {r['compile']} | {r['step_s_median'] * 1e3:.1f} | "
                     f"{r['tokens_per_s']:,.0f} | {mfu_txt} | {r['warmup_s']} | {peak} |")
    for name, ratio in (thr.get("gapt_step_ratio") or {}).items():
        lines.append(f"\nGAPT compression step / baseline step ({name}): {ratio:.3f}")
    cap = result.get("capacity", {})
    lines += ["", "## Capacity: " + str(cap.get("model", "")), ""]
    if cap.get("error"):
        lines.append(f"error: {cap['error']}")
    else:
        lines.append(f"{cap['steps']:,} steps at {cap['steps_per_s']:.1f} steps/s: {cap['bits_per_param']:.2f} "
                     f"bits/param strict ({cap['bits_per_param_paper_conv']:.2f} in the paper's convention), "
                     f"{cap['mem_fraction'] * 100:.1f}% of the data; the paper's 10^6 steps would take "
                     f"{cap['projected_paper_hours']:.1f} h")
    tg = result.get("targets", {})
    lines += ["", "## Targets", "",
              f"- MFU >= {TARGETS['mfu_min'] * 100:.0f}%: {_met(tg.get('mfu', {}), 'best', True)}",
              f"- GAPT step <= {TARGETS['gapt_step_ratio_max']} x baseline: "
              f"{_met(tg.get('gapt_step_ratio', {}), 'worst', False)}"]
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
