"""What users wrote against 0.2 keeps working for one release: the plug-in imports (`gapt_bench.registry`,
`gapt_bench.task`, `gapt_bench.methods.base`, `gapt_bench.config.opt`) and the `gate` verb, each with a note."""

from __future__ import annotations

import importlib
import json
import sys
import warnings

import pytest

from gapt_bench import cli
from gapt_bench.results.store import read_records

# The 0.2 README's plug-in recipes, exactly as published then (their imports; the bodies are the current recipes').
OLD_METHOD = """
from gapt_bench.methods.base import Method, StepInfo
from gapt_bench.registry import register_method


@register_method("old_last_layer_mbe")
class LastLayerMBE(Method):
    description = "CE + 0.5 * MBE of the last block"

    def loss(self, ce, hidden, step):
        last = self.n_layer - 1
        mbe = self.mbe_of(hidden, [last])[last]
        return ce + 0.5 * mbe, StepInfo(ce=float(ce), mbe={last: float(mbe)})
"""

OLD_TASK = """
from dataclasses import dataclass

import torch

from gapt_bench.config import opt
from gapt_bench.registry import register_task
from gapt_bench.task import Evaluation, LMTask


@dataclass
class Options:
    vocab_size: int = opt(16, "token alphabet", min=2)


@register_task("old_copy")
class Copy(LMTask):
    description = "repeat the first half of a random sequence"
    Options = Options
    metrics = {"copy_acc": "max"}
    primary = ("copy_acc",)
    presets = {"tiny": {"model": {"n_layer": 1, "n_embd": 16, "n_head": 2},
                        "train": {"seq_len": 8, "batch_size": 8, "tokens": 640, "lr": 3e-3, "warmup_steps": 2}}}

    @classmethod
    def finalize(cls, cfg):
        cfg.model.vocab_size = cfg.model.vocab_size or cfg.data.vocab_size
        cfg.model.n_positions = cfg.model.n_positions or cfg.train.seq_len

    def get_batch(self, step):
        g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + step)
        half = torch.randint(0, self.cfg.data.vocab_size, (8, 4), generator=g)
        x = torch.cat([half, half], dim=1)
        y = torch.full_like(x, -100)
        y[:, :-1] = x[:, 1:]
        return x, y

    @torch.no_grad()
    def evaluate(self, model, ctx, trained):
        x, _ = self.get_batch(10**6)
        pred = model(input_ids=x).logits[:, 3:-1].argmax(-1)
        return Evaluation({"copy_acc": float((pred == x[:, 4:]).float().mean())})
"""


@pytest.mark.parametrize("module", ["gapt_bench.registry", "gapt_bench.task"])
def test_old_modules_import_with_a_deprecation_warning(module):
    sys.modules.pop(module, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        importlib.import_module(module)
    assert any(issubclass(w.category, DeprecationWarning) and "deprecated" in str(w.message) for w in caught)


def test_old_names_are_the_new_objects():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from gapt_bench import registry, task
    from gapt_bench import methods, tasks
    from gapt_bench.config import opt  # unchanged
    from gapt_bench.methods.base import Method  # unchanged

    assert registry.register_method.__self__ is methods.METHODS and registry.TASKS is tasks.TASKS
    assert task.LMTask is tasks.LMTask and task.Evaluation is tasks.Evaluation
    assert callable(opt) and Method is methods.Method


def test_a_plug_in_written_for_0_2_runs_unchanged(tmp_path, capsys):
    (tmp_path / "old_method.py").write_text(OLD_METHOD)
    (tmp_path / "old_task.py").write_text(OLD_TASK)
    out = tmp_path / "results"
    argv = ["run", "--include", str(tmp_path / "old_method.py"), "--include", str(tmp_path / "old_task.py")]
    argv += ["--tasks", "old_copy", "--preset", "tiny", "--methods", "baseline,old_last_layer_mbe", "--seeds", "0"]
    assert cli.main([*argv, "--out", str(out), "--workers", "1", "--no-report", "--no-progress"]) == 0
    recs = read_records(out)
    assert sorted(r["method"] for r in recs) == ["baseline", "old_last_layer_mbe"]
    assert all(r["status"] == "ok" for r in recs)


def test_the_gate_verb_still_works_with_a_one_line_note(tmp_path, capsys):
    from factories import make_record

    from gapt_bench.results.store import append_record

    for seed in range(3):
        append_record(tmp_path, make_record(seed=seed))
    assert cli.main(["gate", "--baseline", str(tmp_path), "--candidate", str(tmp_path), "--format", "json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["kind"] == "regression"
    note = [line for line in captured.err.splitlines() if line]
    assert note == ["gapt-bench: note: `gate` is now `regression`; the old name goes away in the next release"]
