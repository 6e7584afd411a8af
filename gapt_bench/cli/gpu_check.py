"""The GPU check's measured parts (`gapt-bench doctor --gpu`): the CUDA tests, GPT-2-small throughput and MFU with
torch.compile on and off and GAPT's step ratio, and capacity steps/s on the smallest paper model."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

PAPER_STEPS = 1_000_000
# GAPT's overrides that keep it in the compression phase for the whole timing (what its step time is compared on);
# the report shows a run's other overrides as its variant.
STAY_COMPRESSING = ("gapt.initial_phase=2", "gapt.patience_c=1000000", "gapt.tau=1000000000")


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
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-m",
                "gpu",
                "-q",
                "-p",
                "no:cacheprovider",
                str(root / "tests" / "test_gpu.py"),
            ],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        text, error = done.stdout + done.stderr, None
    except subprocess.TimeoutExpired as e:
        text = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        error = f"pytest -m gpu ran past its {timeout_s:.0f} s share of the budget"
    return {
        **parse_pytest_summary(text),
        "duration_s": round(time.perf_counter() - t0, 1),
        "error": error,
        "output_tail": text[-3000:],
    }


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
    from gapt_bench.data import TokenCache

    data = TokenCache().get("offline", "gpt2", val_tokens=2048, train_tokens=max_tokens)
    return data.train.tokens


def _method_cfg(method: str, compile_: bool, sizes: Sizes, overrides: list[str] = ()):
    from gapt_bench.launch.plan import make_plan

    layers, width, heads = sizes.gpt2
    base = [
        "data.source=offline",
        "data.tokenizer=gpt2",
        "data.pad_vocab_multiple=64",
        "data.val_tokens=2048",
        f"model.n_layer={layers}",
        f"model.n_embd={width}",
        f"model.n_head={heads}",
        f"train.batch_size={sizes.batch}",
        "train.grad_accum=1",
        f"train.seq_len={sizes.seq_len}",
        "train.tokens=1048576000",
        "train.precision=bf16",
        f"train.device={sizes.device}",
        f"train.compile={str(compile_).lower()}",
        "train.warmup_steps=0",
        "train.log_every=1000000",
    ]
    (cfg,) = make_plan(["fineweb_lm"], [method], [0], "paper", [*base, *overrides])
    return cfg


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(method: str, compile_: bool, tokens, sizes: Sizes, overrides: list[str] = ()) -> dict:
    """Median and mean step time of the suite's optimizer step, after the warm-up steps (compilation)."""
    import torch

    from gapt_bench.methods import METHODS
    from gapt_bench.training.model import build_model
    from gapt_bench.training.runtime import RunContext
    from gapt_bench.training.trainer import OPTIMIZERS, optimizer_step

    cfg = _method_cfg(method, compile_, sizes, overrides)
    m, device = cfg.model, torch.device(sizes.device)
    torch.manual_seed(0)
    raw = build_model(
        n_layer=m.n_layer, n_embd=m.n_embd, n_head=m.n_head, vocab_size=m.vocab_size, n_positions=m.n_positions
    ).to(device)
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
    return {
        "method": method,
        "compile": compile_,
        "overrides": list(overrides),
        "steps_timed": len(times),
        "warmup_steps": warm,
        "warmup_s": round(warmup_s, 1),
        "step_s_median": times[len(times) // 2],
        "step_s_mean": sum(times) / len(times),
        "peak_memory_gib": peak,
    }


def throughput(budget_s: float, sizes: Sizes = Sizes()) -> dict:
    import torch

    from gapt_bench.training.model import build_model, flops_per_token, mfu, peak_flops

    t_start = time.perf_counter()
    tokens = _gpt2_tokens(sizes.corpus_tokens)
    cfg = _method_cfg("baseline", False, sizes)
    m, t = cfg.model, cfg.train
    with torch.device("meta"):
        shell = build_model(
            n_layer=m.n_layer, n_embd=m.n_embd, n_head=m.n_head, vocab_size=m.vocab_size, n_positions=m.n_positions
        )
    fpt = flops_per_token(shell, t.seq_len)
    peak, _ = peak_flops(torch.device(sizes.device))
    per_step = t.batch_size * t.seq_len
    stay = STAY_COMPRESSING
    plan_ = [
        ("baseline", False, ()),
        ("gapt", False, stay),
        ("gapt", False, (*stay, "reg.layers=middle", "reg.step_mode=sum")),
    ]
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
            name = (
                "paper (rotate 2..L-3, alternate)"
                if "reg.layers=middle" not in r["overrides"]
                else "summed, all middle layers"
            )
            ratios[name] = r["step_s_median"] / base["step_s_median"]
    return {
        "model": f"GPT-2 L{m.n_layer} d{m.n_embd} h{m.n_head}, V {m.vocab_size} (padded)",
        "seq_len": t.seq_len,
        "batch": t.batch_size,
        "precision": "bf16 autocast",
        "tokens_per_step": per_step,
        "flops_per_token": fpt,
        "peak_flops": peak,
        "runs": runs,
        "gapt_step_ratio": ratios,
        "error": None,
    }


def capacity(budget_s: float, sizes: Sizes = Sizes()) -> dict:
    import torch

    from gapt_bench.launch.plan import make_plan
    from gapt_bench.methods.baseline import Baseline
    from gapt_bench.tasks.synthetic_capacity.task import SyntheticCapacity
    from gapt_bench.training.model import build_model, paper_param_count
    from gapt_bench.training.runtime import RunContext
    from gapt_bench.training.trainer import OPTIMIZERS, lr_factor, optimizer_step

    layers, width, heads = sizes.capacity_model
    overrides = [
        f"model.n_layer={layers}",
        f"model.n_embd={width}",
        f"model.n_head={heads}",
        "data.capacity_ratio=1.0",
        f"train.batch_size={sizes.capacity_batch}",
        f"train.device={sizes.device}",
        "train.precision=bf16",
        "train.eval_every=0",
        "train.warmup_steps=500",
    ]
    (cfg,) = make_plan(["synthetic_capacity"], ["baseline"], [0], "paper", overrides)
    task = SyntheticCapacity(cfg)
    task.setup()
    m, t = cfg.model, cfg.train
    device = torch.device(sizes.device)
    torch.manual_seed(0)
    model = build_model(
        n_layer=m.n_layer, n_embd=m.n_embd, n_head=m.n_head, vocab_size=m.vocab_size, n_positions=m.n_positions
    ).to(device)
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
    model = build_model(
        n_layer=m.n_layer, n_embd=m.n_embd, n_head=m.n_head, vocab_size=m.vocab_size, n_positions=m.n_positions
    ).to(device)
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
    return {
        "model": f"L{m.n_layer}/d{m.n_embd} V={m.vocab_size} S={t.seq_len} batch {t.batch_size} bf16",
        "n_params": p,
        "n_sequences": cfg.data.n_sequences,
        "data_bits": task.data_bits,
        "steps": total,
        "steps_per_s": total / seconds,
        "bits_per_param": mem / p,
        "bits_per_param_paper_conv": mem * conv / p,
        "mem_fraction": mem / task.data_bits,
        "projected_paper_hours": PAPER_STEPS / (total / seconds) / 3600,
        "error": None,
    }
