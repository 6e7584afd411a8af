"""The three ways in, as written: the README's eval command and own-loop snippet, and every Python block of
docs/api.md, run on tiny models (the suite's own `run` command is test_readme's and test_first_contact's)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from gapt_bench.cli import main
from gapt_bench.data.hf_tokenizers import to_transformers
from gapt_bench.data.tokenizers import ByteTokenizer
from gapt_bench.results.store import read_records

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
API = (ROOT / "docs" / "api.md").read_text()


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def _model(n_positions: int = 256) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=16, n_positions=n_positions, vocab_size=257))


def _loop_namespace() -> dict:
    """What the loop snippets leave to the reader: a model, its optimizer and batches of token ids."""
    model = _model(64)
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 257, (4, 16), generator=gen) for _ in range(30)]
    return {"model": model, "opt": torch.optim.AdamW(model.parameters(), lr=1e-3), "batches": batches}


def test_the_readme_eval_command_runs_as_written(tmp_path, monkeypatch):
    (command,) = [c for c in _blocks(README, "bash") if c.startswith("gapt-bench eval")]
    folder = tmp_path / "path" / "to" / "model"
    _model().save_pretrained(folder)
    to_transformers(ByteTokenizer()).save_pretrained(folder)
    monkeypatch.chdir(tmp_path)
    argv = shlex.split(command.strip())[1:]
    assert main([*argv, "--quiet"]) == 0
    (rec,) = read_records(tmp_path / "results")
    assert rec["kind"] == "evaluation" and {"ce", "bpb", "mbe", "mbe_layer_1"} <= set(rec["metrics"])


def _loop_snippets() -> list[str]:
    return [b for b in _blocks(README, "python") + _blocks(API, "python") if "gate.update" in b]


@pytest.mark.parametrize("which", ["README", "docs/api.md"])
def test_the_own_loop_snippet_trains_and_feeds_the_gate(which):
    snippets = _loop_snippets()
    snippet = snippets[0] if which == "README" else snippets[1]
    assert len(snippets) == 2 and len(snippet.strip().splitlines()) <= 14
    ns = _loop_namespace()
    before = [p.detach().clone() for p in ns["model"].parameters()]
    exec(compile(snippet, which, "exec"), ns)
    gate = ns["gate"]
    assert gate.stats.steps_memorize + gate.stats.steps_compress == 30  # fed once per step
    assert any(not torch.equal(a, b) for a, b in zip(before, ns["model"].parameters()))


def test_the_trainer_snippet_of_docs_api_trains(tmp_path):
    pytest.importorskip("accelerate")
    from transformers import TrainingArguments

    (snippet,) = [b for b in _blocks(API, "python") if "GAPTTrainer(" in b]
    gen = torch.Generator().manual_seed(0)
    rows = [{"input_ids": ids, "labels": ids} for ids in torch.randint(0, 257, (16, 16), generator=gen)]
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=4,
        per_device_train_batch_size=4,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        logging_steps=1,
    )
    ns = {"model": _model(64), "training_args": args, "train_dataset": rows}
    exec(compile(snippet, "docs/api.md", "exec"), ns)
    logs = ns["trainer"].state.log_history
    assert ns["trainer"].state.global_step == 4 and any("gapt_phase" in entry for entry in logs)


def test_the_membership_snippet_of_docs_api_runs(capsys):
    (snippet,) = [b for b in _blocks(API, "python") if "membership_scores_report(" in b]
    gen = torch.Generator().manual_seed(0)
    ns = {
        "model": _model(64),
        "member_ids": torch.randint(0, 257, (12, 16), generator=gen).tolist(),
        "nonmember_ids": torch.randint(0, 257, (12, 16), generator=gen).tolist(),
    }
    exec(compile(snippet, "docs/api.md", "exec"), ns)
    auc, tpr = (float(x) for x in capsys.readouterr().out.split())
    assert 0 <= auc <= 1 and 0 <= tpr <= 1
