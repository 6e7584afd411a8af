"""Where the trainer's time goes relative to a plain loop: run this before tuning anything.

`python benchmarks/attribute_overhead.py [rounds]` times, interleaved over rounds (median per-step times):
- the trainer at steady state (its own clock after its first steps) and over the whole call (start-up included:
  building optimizers, opening the curve, the final curve row), over the benchmark's 60 steps;
- plain loops: bare (forward, CE, backward, AdamW), + gradient clipping, + the lr schedule, + the suite's hidden
  state capture (forward_with_hidden), + the method call and its per-step host reads (StepInfo floats, the finite
  check): the trainer's per-step work added one piece at a time.
Prints each variant's per-step time and its ratio to the bare loop.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
import test_speed as ts

from gapt_bench.measures.hidden_states import forward_with_hidden
from gapt_bench.methods.baseline import Baseline
from gapt_bench.training.runtime import RunContext
from gapt_bench.training.trainer import OPTIMIZERS, lr_factor, train_lm

torch.set_num_threads(1)


def plain(cfg, clip: bool, schedule: bool, capture: bool, method: bool) -> float:
    model, task, t = ts._model(), ts.FixedBatches(), cfg.train
    opts = OPTIMIZERS["adamw"](model, t, torch.device("cpu"))
    base = Baseline(cfg, ts.L)
    steady = min(ts.WARMUP, ts.STEPS // 5)
    for step in range(ts.STEPS):
        if step == steady:
            t0 = time.perf_counter()
        if schedule:
            for opt in opts:
                for g in opt.param_groups:
                    g["lr"] = t.lr * lr_factor(step, ts.STEPS, t)
        x, y = task.get_batch(step)
        logits = forward_with_hidden(model, x)[0] if capture else model(input_ids=x, use_cache=False).logits
        ce = F.cross_entropy(logits.reshape(-1, ts.V), y.reshape(-1))
        loss = ce
        if method:
            loss, _ = base.loss(ce, [], step)
            bool(torch.isfinite(loss))
            float(loss.detach())
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        for opt in opts:
            opt.step()
            opt.zero_grad(set_to_none=True)
    return (time.perf_counter() - t0) / (ts.STEPS - steady)


def trainer_whole_call(cfg, tmp: Path) -> float:
    tmp.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    train_lm(ts._model(), ts.FixedBatches(), Baseline(cfg, ts.L), cfg, RunContext(run_dir=tmp))
    return (time.perf_counter() - t0) / ts.STEPS


def main(rounds: int = 7) -> None:
    import tempfile

    cfg = ts._cfg("baseline")
    tmp = Path(tempfile.mkdtemp())
    variants = {
        "plain: bare": lambda: plain(cfg, False, False, False, False),
        "plain: + clip": lambda: plain(cfg, True, False, False, False),
        "plain: + clip + lr schedule": lambda: plain(cfg, True, True, False, False),
        "plain: + ... + hidden capture": lambda: plain(cfg, True, True, True, False),
        "plain: + ... + method and host reads": lambda: plain(cfg, True, True, True, True),
        "trainer: steady state": lambda: ts.time_trainer(Baseline, cfg, tmp / f"s{time.time_ns()}"),
        "trainer: whole call (start-up included)": lambda: trainer_whole_call(cfg, tmp / f"w{time.time_ns()}"),
    }
    times = {name: [] for name in variants}
    names = list(variants)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            times[name].append(variants[name]())
    bare = statistics.median(times["plain: bare"])
    print(f"{'variant':<42} {'ms/step':>8} {'vs bare':>8}   ({rounds} interleaved rounds, medians)")
    for name in names:
        med = statistics.median(times[name])
        print(f"{name:<42} {med * 1e3:8.2f} {med / bare:8.3f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 7)
