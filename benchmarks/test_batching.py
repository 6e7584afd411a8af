"""Is training several seeds as one batched model worth it here? (`pytest -m benchmark benchmarks -k batched -s`)

The lever issue #25 proposed: k seeds of one small model stacked with `torch.func.stack_module_state` and trained
as one model with `vmap(functional_call(...))` over the transformers model, one step for all k. This benchmark
measures it on the quick suite's models, one optimizer step (forward, CE, backward, per-member gradient clipping,
AdamW) of k = 5 members against the same 5 models stepped one after the other, in interleaved rounds, and prints

    <model>: batched/sequential throughput: median X (95% CI a..b) over R rounds

(a throughput ratio: above 1 the batched group is faster). It also checks that the batched forward equals the
separate models' (float tolerance), so the figure compares like with like.

Measured on the 2-core development machine (torch 2.13 CPU, one thread): the GPT-2 quick models gain nothing or
lose (0.75-1.2x: at 2k-4k tokens per step their cost is matmul and element-wise work, which batching does not
shrink); the forgetting MLP gains 2.5-3x (its steps are dispatch overhead). So only the forgetting task batches its
seeds (`Task.run_group`; the last test here measures it on whole runs of the task); the GPT-2 tasks took the cheaper
levers (a fused GELU: 19-29% per GPT-2 step) instead (docs/benchmarks.md).
"""

from __future__ import annotations

import copy
import time

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

from gapt_bench.results import stats
from gapt_bench.training.model import build_model

pytestmark = pytest.mark.benchmark

K, STEPS, ROUNDS = 5, 10, 9
# (layers, width, heads, vocab, seq_len, batch): the largest grid point of each quick preset's model
MODELS = {
    "capacity L1/d16": (1, 16, 2, 32, 32, 128),
    "text memorization L1/d32": (1, 32, 4, 257, 64, 16),
    "arithmetic L2/d64": (2, 64, 4, 15, 32, 64),
    "fineweb L3/d64": (3, 64, 4, 257, 64, 32),
}


class MLP(torch.nn.Module):
    """The forgetting task's student (10 -> 20 -> 10, ReLU)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Linear(10, 20), torch.nn.Linear(20, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def _clip_members(grads: list[torch.Tensor], max_norm: float = 1.0) -> None:
    """Per-member global-norm clipping of stacked gradients (leading dimension = member)."""
    sq = sum(g.pow(2).reshape(g.shape[0], -1).sum(1) for g in grads)
    coef = (max_norm / (sq.sqrt() + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view(-1, *([1] * (g.dim() - 1))))


def _pair(models, loss_of, inputs):
    """(sequential step, batched step, forward max |diff|) for k models and their per-member inputs."""
    opts = [torch.optim.AdamW(m.parameters(), lr=1e-3) for m in models]

    def sequential():
        for m, o, x in zip(models, opts, inputs):
            loss_of(m(*x) if isinstance(x, tuple) else m(x), x).backward()
            torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
            o.step()
            o.zero_grad(set_to_none=True)

    params, buffers = stack_module_state(copy.deepcopy(models))
    base = copy.deepcopy(models[0])  # kept on the CPU: a meta base leaves a tied head on meta (wrong outputs)
    stacked = torch.stack([x if not isinstance(x, tuple) else x[0] for x in inputs])
    hf = hasattr(base, "config")  # a transformers model: no KV cache, logits only (vmap returns tensors)

    def member(p, b, x):
        if hf:
            return functional_call(base, (p, b), (x,), {"use_cache": False}).logits
        return functional_call(base, (p, b), (x,))

    call = vmap(member)
    popt = torch.optim.AdamW(list(params.values()), lr=1e-3)

    def batched():
        out = call(params, buffers, stacked)
        sum(loss_of(out[i], inputs[i]) for i in range(len(models))).backward()
        _clip_members([p.grad for p in params.values()])
        popt.step()
        popt.zero_grad(set_to_none=True)

    with torch.no_grad():
        group = call(params, buffers, stacked)
        separate = torch.stack([_logits(m(x)) for m, x in zip(models, stacked)])
        diff = float((group - separate).abs().max())
    return sequential, batched, diff


def _logits(out):
    return out.logits if hasattr(out, "logits") else out


def _rounds(sequential, batched, steps: int = STEPS, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        sequential()
        batched()
    ratios = []
    for r in range(ROUNDS):
        times = {}
        for name, fn in (("s", sequential), ("b", batched)) if r % 2 == 0 else (("b", batched), ("s", sequential)):
            t0 = time.process_time()
            for _ in range(steps):
                fn()
            times[name] = time.process_time() - t0
        ratios.append(times["s"] / times["b"])  # throughput of the batched group over the sequential models
    return ratios


@pytest.mark.parametrize("name", [*MODELS, "forgetting MLP 10-20-10"])
def test_batched_seeds_speedup(name):
    torch.manual_seed(0)
    if name in MODELS:
        L, d, h, V, S, B = MODELS[name]
        models = [build_model(L, d, h, V, S) for _ in range(K)]
        inputs = [torch.randint(0, V, (B, S)) for _ in range(K)]

        def loss_of(out, x):
            logits = _logits(out)
            return F.cross_entropy(logits[:, :-1].reshape(-1, V), x[:, 1:].reshape(-1))

        sequential, batched, diff = _pair(models, lambda out, x: loss_of(out, x), inputs)
    else:
        models = [MLP() for _ in range(K)]
        inputs = [torch.randn(32, 10) for _ in range(K)]
        sequential, batched, diff = _pair(models, lambda out, x: out.abs().mean(), inputs)
    assert diff < 1e-4, f"the batched forward differs from the separate models by {diff}"
    ratios = _rounds(sequential, batched)
    found = stats.median_interval(ratios)
    assert found is not None
    med, low, high = found
    print(
        f"\n{name}: batched/sequential throughput: median {med:.2f} (95% CI {low:.2f}..{high:.2f}) over {ROUNDS} rounds"
    )


@pytest.mark.parametrize("method", ["baseline", "gapt"])
def test_batched_seeds_speedup_forgetting_task(method, tmp_path):
    """The lever as `gapt-bench run` uses it: k = 5 seeds of the forgetting task's quick config (stages shortened to
    200 + 200 steps) trained by `run_group` as one batched model, against the same 5 runs trained one after the
    other by `run`, in interleaved rounds; whole runs, so batch sampling, the method's per-member MBE and gate, the
    in-run reference arm and the snapshots are all in the figure."""
    import copy as copy_mod

    from gapt_bench.launch.plan import make_plan
    from gapt_bench.methods import METHODS
    from gapt_bench.tasks import TASKS
    from gapt_bench.training.runtime import RunContext

    plan = make_plan(
        ["forgetting_separation"], [method], range(K), "quick", ["data.steps_first=200", "data.steps_second=200"]
    )
    cfgs = [c for c in plan if c.data.batch_layout == "grouped"]
    task_cls, method_cls = TASKS.get("forgetting_separation"), METHODS.get(method)
    ctxs = []
    for i in range(K):
        (tmp_path / str(i)).mkdir()
        ctxs.append(RunContext(run_dir=tmp_path / str(i), log=lambda msg: None))

    def sequential():
        return [task_cls(copy_mod.deepcopy(c)).run(method_cls, ctx) for c, ctx in zip(cfgs, ctxs)]

    def batched():
        return task_cls(cfgs[0]).run_group(method_cls, cfgs, ctxs)

    assert [r.metrics for r in sequential()] == [r.metrics for r in batched()]  # also the warm-up
    ratios = _rounds(sequential, batched, steps=1, warmup=0)
    found = stats.median_interval(ratios)
    assert found is not None
    med, low, high = found
    print(
        f"\nforgetting task, {method}, k={K}: batched/sequential throughput: median {med:.2f} "
        f"(95% CI {low:.2f}..{high:.2f}) over {ROUNDS} rounds"
    )
