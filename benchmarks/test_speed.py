"""Speed benchmarks (`pytest -m benchmark benchmarks`; `.ci/run` runs them). The gated figures are ratios of two
loops measured in one process, interleaved, so they hold across machines; absolute times are stored per machine
under baselines/bench by pytest-benchmark when asked to (`--benchmark-autosave`).

- trainer vs a plain PyTorch loop doing the same training (same model, batches, AdamW groups, lr schedule and
  gradient clipping): tokens/s ratio, gated at >= TRAINER_MIN;
- a GAPT step in the compression phase vs a baseline step: time ratio, gated at <= GAPT_MAX;
- the MBE term per call (all layers, with backward); report generation on 10k records (not gated).

Both sides of a ratio are timed at steady state: the trainer's own `steady_time_s` (after its first steps, so
start-up costs such as building optimizers and opening files do not count) and the plain loop after as many
warm-up steps. ROUNDS interleaved rounds (alternating order) give one paired ratio each. The check reads the
median ratio and its distribution-free 95% interval (`stats.median_interval`: order statistics, no normality) and
fails only when the whole interval lies beyond the bound (`stats.bound_check`): noise alone then fails with
probability under 2.5%, while an interval that straddles the bound is reported as inconclusive, not failed.
`test_the_check_catches_an_injected_20_percent_slowdown` slows the trainer's step by 20% and checks that the
same rounds then fail.

`GAPT_BENCH_BENCH_JSON=path` also writes the figures in github-action-benchmark's `customBiggerIsBetter` format
(a list of {"name", "unit", "value", "range", "extra"}; "range" is the 95% interval), for a CI dashboard to chart.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from gapt_bench.launch.plan import make_plan
from gapt_bench.measures.entropy import layer_entropies
from gapt_bench.methods.baseline import Baseline
from gapt_bench.methods.gapt import GAPT
from gapt_bench.results import stats
from gapt_bench.training.model import build_model
from gapt_bench.training.runtime import RunContext
from gapt_bench.training.trainer import OPTIMIZERS, lr_factor, train_lm

pytestmark = pytest.mark.benchmark

STEPS, WARMUP, ROUNDS = 60, 10, 15
L, D, H, V, S, B = 2, 64, 4, 256, 64, 32
TRAINER_MIN = 0.95  # trainer tokens/s over the plain loop's
GAPT_MAX = 1.10  # GAPT compression step time over the baseline step's
FIGURES: list[dict] = []


class FixedBatches:
    """A minimal LM task: pre-drawn random batches, so both loops see identical data."""

    def __init__(self, n: int = 8) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = [torch.randint(0, V, (B, S), generator=g) for _ in range(n)]

    def get_batch(self, step: int):
        x = self.x[step % len(self.x)]
        return x, torch.roll(x, -1, dims=1)

    def check(self, *a):
        return False


def _cfg(method: str, **sets):
    overrides = [
        f"train.tokens={STEPS * B * S}",
        f"train.batch_size={B}",
        f"train.seq_len={S}",
        f"train.warmup_steps={WARMUP // 2}",
        f"train.log_every={10 * STEPS}",
        f"model.n_layer={L}",
        f"model.n_embd={D}",
        f"model.n_head={H}",
        "data.vocab_size=256",
        "data.n_sequences=64",
        "mbe.patch_size=8",
        "reg.layers=all",
    ]
    overrides += [f"{k}={v}" for k, v in sets.items()]
    (cfg,) = make_plan(["synthetic_capacity"], [method], [0], "tiny", overrides)
    return cfg


def _model():
    torch.manual_seed(0)
    return build_model(n_layer=L, n_embd=D, n_head=H, vocab_size=V, n_positions=S)


def time_trainer(method_cls, cfg, tmp: Path) -> float:
    """Seconds per step of the suite's trainer at steady state (its own clock, after its first steps)."""
    tmp.mkdir(parents=True, exist_ok=True)
    out = train_lm(_model(), FixedBatches(), method_cls(cfg, L), cfg, RunContext(run_dir=tmp))
    return out.summary["steady_time_s"] / (out.summary["steady_tokens"] / (B * S))


def time_plain_loop(cfg) -> float:
    """Seconds per step of a plain loop doing the same training, after as many warm-up steps as the trainer's."""
    model, task, t = _model(), FixedBatches(), cfg.train
    opts = OPTIMIZERS["adamw"](model, t, torch.device("cpu"))  # the same AdamW groups
    steady = min(WARMUP, STEPS // 5)
    for step in range(STEPS):
        if step == steady:
            t0 = time.perf_counter()
        for opt in opts:
            for g in opt.param_groups:
                g["lr"] = t.lr * lr_factor(step, STEPS, t)
        x, y = task.get_batch(step)
        logits = model(input_ids=x, use_cache=False).logits
        F.cross_entropy(logits.reshape(-1, V), y.reshape(-1)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        for opt in opts:
            opt.step()
            opt.zero_grad(set_to_none=True)
    return (time.perf_counter() - t0) / (STEPS - steady)


def interleaved(a, b, rounds: int = ROUNDS) -> list[tuple[float, float]]:
    """(a, b) per-step times of each round, the order alternating so machine noise hits both alike."""
    pairs = []
    for r in range(rounds):
        if r % 2 == 0:
            ta = a()
            tb = b()
        else:
            tb = b()
            ta = a()
        pairs.append((ta, tb))
    return pairs


def check(name: str, ratios: list[float], bound: float, higher_is_better: bool, extra: str) -> dict:
    """The ratio check (see the module docstring), printed as one line and recorded for the dashboard."""
    res = stats.bound_check(ratios, bound, higher_is_better)
    FIGURES.append(
        {
            "name": name,
            "unit": "ratio",
            "value": round(res["median"], 4),
            "range": f"{res['low']:.4f}..{res['high']:.4f}",
            "extra": f"median and 95% CI over {len(ratios)} interleaved rounds; bound "
            f"{'>=' if higher_is_better else '<='} {bound}: {res['verdict']}; {extra}",
        }
    )
    return res


def line(label: str, res: dict, bound: float, higher_is_better: bool) -> str:
    return (
        f"{label}: median {res['median']:.3f} (95% CI {res['low']:.3f}..{res['high']:.3f}) over {res['n']} rounds "
        f"(bound {'>=' if higher_is_better else '<='} {bound}): {res['verdict']}"
    )


@pytest.fixture(scope="module", autouse=True)
def dashboard_json():
    yield
    path = os.environ.get("GAPT_BENCH_BENCH_JSON")
    if path and FIGURES:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(FIGURES, indent=2) + "\n")


def trainer_vs_plain(cfg, tmp_path: Path) -> tuple[list[float], list[float]]:
    """Per-round tokens/s ratios of the trainer over the plain loop, and the trainer's step times."""
    pairs = interleaved(
        lambda: time_trainer(Baseline, cfg, tmp_path / str(time.time_ns())), lambda: time_plain_loop(cfg)
    )
    return [plain / trainer for trainer, plain in pairs], [t for t, _ in pairs]


def test_trainer_vs_plain_loop(benchmark, tmp_path):
    cfg = _cfg("baseline")
    ratios, steps = trainer_vs_plain(cfg, tmp_path)
    name = "trainer tokens/s relative to a plain PyTorch loop"
    res = check(name, ratios, TRAINER_MIN, True, f"median step {statistics.median(steps) * 1e3:.1f} ms")
    benchmark.extra_info.update({"ratios": ratios, **res})
    print("\n" + line("trainer/plain tokens/s", res, TRAINER_MIN, True))
    benchmark.pedantic(lambda: time_trainer(Baseline, cfg, tmp_path / "bench"), rounds=1, iterations=1)
    assert res["verdict"] != "fail", f"the trainer runs below {TRAINER_MIN} of a plain loop's tokens/s: {res}"


def test_the_check_catches_an_injected_20_percent_slowdown(monkeypatch, tmp_path):
    """The same measurement with every trainer step 25% longer (tokens/s 20% lower): the check must fail."""
    from gapt_bench.training import trainer

    real_step = trainer.optimizer_step

    def slower_step(*args, **kwargs):
        t0 = time.perf_counter()
        out = real_step(*args, **kwargs)
        time.sleep(0.25 * (time.perf_counter() - t0))
        return out

    monkeypatch.setattr(trainer, "optimizer_step", slower_step)
    ratios, _ = trainer_vs_plain(_cfg("baseline"), tmp_path)
    res = stats.bound_check(ratios, TRAINER_MIN, higher_is_better=True)
    print("\n" + line("trainer/plain tokens/s, 20% slowdown injected", res, TRAINER_MIN, True))
    assert res["verdict"] == "fail", f"an injected 20% slowdown went unnoticed: {res}"


def test_gapt_compression_step_overhead(benchmark, tmp_path):
    base_cfg = _cfg("baseline")
    gapt_cfg = _cfg("gapt", **{"gapt.initial_phase": 2, "gapt.patience_c": 100_000, "gapt.tau": 1e9})
    pairs = interleaved(
        lambda: time_trainer(Baseline, base_cfg, tmp_path / f"b{time.time_ns()}"),
        lambda: time_trainer(GAPT, gapt_cfg, tmp_path / f"g{time.time_ns()}"),
    )
    ratios = [gapt / base for base, gapt in pairs]
    name = "GAPT compression step time relative to a baseline step (smaller is better)"
    res = check(name, ratios, GAPT_MAX, False, f"MBE on all {L} layers, patches of 8")
    benchmark.extra_info.update({"ratios": ratios, **res})
    print("\n" + line("gapt-compression/baseline step time", res, GAPT_MAX, False))
    benchmark.pedantic(lambda: time_trainer(GAPT, gapt_cfg, tmp_path / "bench"), rounds=1, iterations=1)
    assert res["verdict"] != "fail", f"a GAPT compression step takes more than {GAPT_MAX} x a baseline step: {res}"


def test_mbe_term_per_call(benchmark):
    hidden = [torch.randn(B, S, D, requires_grad=True) for _ in range(L)]

    def call():
        layer_entropies(hidden, patch_size=8).mean().backward()

    benchmark(call)


def test_report_on_10k_records(benchmark):
    from gapt_bench.results.analysis import build_report

    rng = random.Random(0)
    records = []
    for i in range(10_000):
        task = f"task{i % 4}"
        method = ("baseline", "gapt", "mbe", "periodic")[(i // 4) % 4]
        seed = i // 16
        records.append(
            {
                "schema_version": 1,
                "run_id": f"r{i}",
                "task": task,
                "task_version": "1",
                "method": method,
                "seed": seed,
                "config": {"data": {}, "train": {}},
                "config_hash": f"{task}-{method}",
                "setup_hash": task,
                "preset": "quick",
                "metrics": {f"m{k}": rng.gauss(1.0, 0.1) for k in range(6)},
                "metric_directions": {f"m{k}": "min" for k in range(6)},
                "status": "ok",
                "n_params": 1000,
                "tokens": 1,
                "wall_time_s": 1.0,
                "tokens_per_s": 1.0,
                "env": {},
                "summary": {},
            }
        )
    out = benchmark.pedantic(lambda: build_report(records), rounds=3, iterations=1)
    assert out["comparisons"]
