"""Speed benchmarks (opt-in: `pytest -m benchmark benchmarks`). Figures are ratios measured in one run, so they
hold across machines; absolute times are stored per machine under baselines/bench by pytest-benchmark.

- trainer vs a minimal plain-PyTorch loop on the same model and batches (tokens/s ratio, target >= 0.9)
- GAPT step in the compression phase vs the baseline step (time ratio, target <= 1.15)
- the MBE term per call (all layers, with backward)
- report generation on 10k records
"""
from __future__ import annotations

import random
import statistics
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from gapt_bench.entropy import layer_entropies
from gapt_bench.methods.baseline import Baseline
from gapt_bench.methods.gapt import GAPT
from gapt_bench.models import build_model
from gapt_bench.runner import make_plan
from gapt_bench.runtime import RunContext
from gapt_bench.train import train_lm

pytestmark = pytest.mark.benchmark

STEPS = 30
L, D, H, V, S, B = 2, 64, 4, 256, 64, 32


class FixedBatches:
    """A minimal LM task: pre-drawn random batches, so both loops see identical data."""

    def __init__(self, n: int = 8) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = [torch.randint(0, V, (B, S), generator=g) for _ in range(n)]

    def get_batch(self, step: int):
        x = self.x[step % len(self.x)]
        y = torch.roll(x, -1, dims=1)
        return x, y

    def check(self, *a):
        return False


def _cfg(method: str, **sets):
    overrides = [f"train.tokens={STEPS * B * S}", f"train.batch_size={B}", f"train.seq_len={S}", "train.warmup_steps=1",
                 f"train.log_every={10 * STEPS}", f"model.n_layer={L}", f"model.n_embd={D}", f"model.n_head={H}",
                 "data.vocab_size=256", "data.n_sequences=64", "mbe.patch_size=8", "reg.layers=all"]
    overrides += [f"{k}={v}" for k, v in sets.items()]
    (cfg,) = make_plan(["synthetic_capacity"], [method], [0], "tiny", overrides)
    return cfg


def _model():
    torch.manual_seed(0)
    return build_model(n_layer=L, n_embd=D, n_head=H, vocab_size=V, n_positions=S)


def time_trainer(method_cls, cfg, tmp: Path) -> float:
    model, task = _model(), FixedBatches()
    method = method_cls(cfg, L)
    tmp.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    train_lm(model, task, method, cfg, RunContext(run_dir=tmp))
    return (time.perf_counter() - t0) / STEPS


def time_plain_loop() -> float:
    model, task = _model(), FixedBatches()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    t0 = time.perf_counter()
    for step in range(STEPS):
        x, y = task.get_batch(step)
        logits = model(input_ids=x).logits
        loss = F.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return (time.perf_counter() - t0) / STEPS


def alternate(a, b, rounds: int = 5) -> tuple[float, float]:
    """Median per-step times of a and b, run in alternating order so machine noise hits both alike."""
    ta, tb = [], []
    for r in range(rounds):
        pair = [(a, ta), (b, tb)] if r % 2 == 0 else [(b, tb), (a, ta)]
        for fn, sink in pair:
            sink.append(fn())
    return statistics.median(ta), statistics.median(tb)


def test_trainer_vs_plain_loop(benchmark, tmp_path):
    cfg = _cfg("baseline")
    trainer, plain = alternate(lambda: time_trainer(Baseline, cfg, tmp_path / str(time.time_ns())), time_plain_loop)
    ratio = plain / trainer  # tokens/s of the trainer relative to the plain loop
    benchmark.extra_info.update({"trainer_step_s": trainer, "plain_step_s": plain, "tokens_per_s_ratio": ratio})
    print(f"\ntrainer {B * S / trainer:,.0f} tok/s, plain loop {B * S / plain:,.0f} tok/s: ratio {ratio:.3f} (target >= 0.9)")
    benchmark.pedantic(lambda: time_trainer(Baseline, cfg, tmp_path / "bench"), rounds=1, iterations=1)


def test_gapt_compression_step_overhead(benchmark, tmp_path):
    base_cfg = _cfg("baseline")
    gapt_cfg = _cfg("gapt", **{"gapt.initial_phase": 2, "gapt.patience_c": 100_000, "gapt.tau": 1e9})
    base, gapt = alternate(lambda: time_trainer(Baseline, base_cfg, tmp_path / f"b{time.time_ns()}"),
                           lambda: time_trainer(GAPT, gapt_cfg, tmp_path / f"g{time.time_ns()}"))
    ratio = gapt / base
    benchmark.extra_info.update({"baseline_step_s": base, "gapt_compress_step_s": gapt, "step_time_ratio": ratio})
    print(f"\nbaseline {base * 1e3:.1f} ms/step, gapt in compression {gapt * 1e3:.1f} ms/step: ratio {ratio:.3f} (target <= 1.15)")
    benchmark.pedantic(lambda: time_trainer(GAPT, gapt_cfg, tmp_path / "bench"), rounds=1, iterations=1)


def test_mbe_term_per_call(benchmark):
    hidden = [torch.randn(B, S, D, requires_grad=True) for _ in range(L)]

    def call():
        layer_entropies(hidden, patch_size=8).mean().backward()

    benchmark(call)


def test_report_on_10k_records(benchmark):
    from gapt_bench.analysis import build_report

    rng = random.Random(0)
    records = []
    for i in range(10_000):
        task = f"task{i % 4}"
        method = ("baseline", "gapt", "mbe", "periodic")[(i // 4) % 4]
        seed = i // 16
        records.append({
            "schema_version": 1, "run_id": f"r{i}", "task": task, "task_version": "1", "method": method, "seed": seed,
            "config": {"data": {}, "train": {}}, "config_hash": f"{task}-{method}", "setup_hash": task, "preset": "quick",
            "metrics": {f"m{k}": rng.gauss(1.0, 0.1) for k in range(6)}, "metric_directions": {f"m{k}": "min" for k in range(6)},
            "status": "ok", "n_params": 1000, "tokens": 1, "wall_time_s": 1.0, "tokens_per_s": 1.0, "env": {}, "summary": {},
        })
    out = benchmark.pedantic(lambda: build_report(records), rounds=3, iterations=1)
    assert out["comparisons"]
