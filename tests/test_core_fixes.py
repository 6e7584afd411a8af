"""Regression tests of the trainer, runner, store and method fixes: each fails on the code before its fix."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from gapt_bench.models import build_model
from gapt_bench.runner import make_plan
from gapt_bench.runtime import RunContext


def lm_setup(*overrides: str, method: str = "baseline"):
    """A tiny fineweb_lm config, model and a task whose batches are a pure function of the step."""
    (cfg,) = make_plan(["fineweb_lm"], [method], [0], "tiny", ["train.tokens=4096", "train.warmup_steps=2",
                                                                "train.log_every=1", *overrides])
    torch.manual_seed(0)
    m = cfg.model
    model = build_model(n_layer=m.n_layer, n_embd=m.n_embd, n_head=m.n_head, vocab_size=64, n_positions=32)

    def get_batch(step: int):
        g = torch.Generator().manual_seed(step)
        x = torch.randint(0, 64, (cfg.train.batch_size, cfg.train.seq_len), generator=g)
        return x, torch.roll(x, -1, dims=1)

    return cfg, model, SimpleNamespace(get_batch=get_batch)


def method_for(cfg, n_layer: int):
    from gapt_bench.registry import METHODS

    return METHODS.get(cfg.method)(cfg, n_layer)


# ---------------------------------------------------------------------------------------------------------------
# train.py


def test_a_resume_without_a_checkpoint_starts_the_curve_over(tmp_path):
    from gapt_bench.train import train_lm

    cfg, model, task = lm_setup()
    stale = [{"step": s, "ce": 9.0} for s in (1, 2, 3)]  # an earlier attempt that died before its first checkpoint
    (tmp_path / "curve.jsonl").write_text("".join(json.dumps(r) + "\n" for r in stale))
    ctx = RunContext(run_dir=tmp_path, resume=True, log=lambda m: None)
    out = train_lm(model, task, method_for(cfg, cfg.model.n_layer), cfg, ctx)
    steps = [json.loads(line)["step"] for line in (tmp_path / "curve.jsonl").read_text().splitlines()]
    assert steps == list(range(1, out.steps + 1))
