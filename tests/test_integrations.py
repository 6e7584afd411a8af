"""GAPTTrainer (gapt_bench/integrations/hf_trainer.py): a real transformers Trainer run on a tiny random GPT-2.

The gate's thresholds make its schedule independent of the loss values: delta_e = delta_m = 10 nats is never
reached after the first observation of a phase, tau = 100 never spikes, patience 2. So the phase of each optimizer
step is EXPECTED whatever the model learns, and each check below is exact.
"""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # the Trainer needs it

from transformers import GPT2Config, GPT2LMHeadModel, TrainingArguments  # noqa: E402
from transformers.loss.loss_utils import ForCausalLMLoss  # noqa: E402

from gapt_bench.config import GAPTConfig  # noqa: E402
from gapt_bench.integrations.hf_trainer import GAPTTrainer  # noqa: E402
from gapt_bench.measures.entropy import matrix_entropy  # noqa: E402
from gapt_bench.measures.hidden_states import forward_with_hidden  # noqa: E402
from gapt_bench.methods.phase_gate import COMPRESS, MEMORIZE  # noqa: E402

LAM, SEQ, STEPS = 0.5, 16, 12
M, C = MEMORIZE, COMPRESS
# 3 memorize updates (first CE counts as a gain, then 2 without), 3 compress (first MBE, then 2), 2 memorize, ...
EXPECTED = [M, M, M, C, C, C, M, M, C, C, C, M]
GATE = GAPTConfig(patience_m=2, patience_c=2, delta_e=10.0, delta_m=10.0, tau=100.0)


def _model() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_head=2, n_embd=16, vocab_size=64, n_positions=32)
    cfg.resid_pdrop = cfg.embd_pdrop = cfg.attn_pdrop = 0.0  # deterministic forwards, so the loss can be recomputed
    return GPT2LMHeadModel(cfg)


def _data(n: int = 48) -> list[dict]:
    g = torch.Generator().manual_seed(1)
    rows = []
    for i in range(n):
        ids = torch.randint(0, 64, (SEQ,), generator=g)
        labels = ids.clone()
        labels[: i % 5] = -100  # masked prefixes of varying length: targets differ between micro-batches
        rows.append({"input_ids": ids, "attention_mask": torch.ones(SEQ, dtype=torch.long), "labels": labels})
    return rows


def _batch(rows: list[dict]) -> dict:
    return {k: torch.stack([r[k] for r in rows]) for k in ("input_ids", "attention_mask", "labels")}


class Recording(GAPTTrainer):
    """Records, for every training micro-batch, the returned loss beside an independent recomputation."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.records: list[dict] = []

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if model.training:
            with torch.no_grad():
                own = model(**inputs, num_items_in_batch=num_items_in_batch).loss  # transformers' own CE
                logits, hidden = forward_with_hidden(
                    model, inputs["input_ids"], attention_mask=inputs["attention_mask"]
                )
                targets = inputs["labels"][:, 1:].reshape(-1)
                ce_sum = torch.nn.functional.cross_entropy(
                    logits[:, :-1].reshape(-1, 64), targets, ignore_index=-100, reduction="sum"
                )
                via_hf = ForCausalLMLoss(logits, inputs["labels"], 64, num_items_in_batch=num_items_in_batch)
                mbe = torch.stack([matrix_entropy(h, 2.0, 8) for h in hidden]).mean()
            self.records.append(
                {
                    "step": self.state.global_step,
                    "loss": float(loss.detach()),
                    "own_ce": float(own),
                    "hf_ce": float(via_hf),
                    "ce_sum": float(ce_sum),
                    "targets": int(targets.ne(-100).sum()),
                    "labels": int(inputs["labels"].ne(-100).sum()),
                    "num_items": None if num_items_in_batch is None else int(num_items_in_batch),
                    "mbe": float(mbe),
                    "phase": self.gapt_last["phase"],
                    "ga": self.current_gradient_accumulation_steps,
                }
            )
        return loss


def _trainer(tmp_path, ga: int = 1, cls=Recording, gate: GAPTConfig = GATE, **args) -> GAPTTrainer:
    args = {"save_strategy": "no", "max_steps": STEPS, **args}
    targs = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        gradient_accumulation_steps=ga,
        learning_rate=1e-2,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
        **args,
    )
    data = _data()
    return cls(
        model=_model(), args=targs, train_dataset=data, eval_dataset=data[:8], gapt=gate, mbe_weight=LAM, layers=None
    )


@pytest.mark.parametrize("ga", [1, 2])
def test_loss_follows_the_gate_and_is_logged(tmp_path, ga):
    trainer = _trainer(tmp_path, ga, eval_strategy="steps", eval_steps=5)  # evaluations inside the run too
    trainer.train()
    recs = trainer.records
    assert len(recs) == STEPS * ga

    # (c) one phase per optimizer step, the gate fed once per step; the schedule survives in-run evaluations (d)
    phases = [[r["phase"] for r in recs if r["step"] == s] for s in range(STEPS)]
    assert all(len(set(p)) == 1 and len(p) == ga for p in phases)
    assert [p[0] for p in phases] == EXPECTED
    stats = trainer.gate.summary()
    assert stats["steps_memorize"] + stats["steps_compress"] == STEPS
    assert stats["switches"] == 4

    for r in recs:
        # the CE term is transformers' own loss: the token sum over num_items_in_batch (the whole step's targets)
        assert r["num_items"] is not None
        assert r["own_ce"] == pytest.approx(r["hf_ce"], rel=1e-5)
        assert r["own_ce"] == pytest.approx(r["ce_sum"] / r["num_items"], rel=1e-5)
        # (b) loss = CE + lambda * MBE exactly in compression (MBE per micro-batch share of the step), CE otherwise
        extra = LAM * r["mbe"] / r["ga"] if r["phase"] == COMPRESS else 0.0
        assert r["loss"] == pytest.approx(r["own_ce"] + extra, rel=1e-5, abs=1e-6)
    if ga == 2:  # num_items_in_batch counts both micro-batches' targets: the CE is not the micro-batch mean
        for a, b in zip(recs[::2], recs[1::2]):
            assert a["num_items"] == b["num_items"]
            # transformers 5.25 counts the shifted targets only for classes it maps to ForCausalLMLoss by name;
            # GPT2LMHeadModel is not, so it counts every label != -100 (the model divides by the same count)
            assert a["num_items"] in (a["targets"] + b["targets"], a["labels"] + b["labels"])
        # summed over its micro-batches, a step's loss is its token-mean CE + lambda * mean MBE
        a, b = recs[2 * 3], recs[2 * 3 + 1]  # step 4: compression
        total = (a["ce_sum"] + b["ce_sum"]) / a["num_items"] + LAM * (a["mbe"] + b["mbe"]) / 2
        assert a["loss"] + b["loss"] == pytest.approx(total, rel=1e-5)

    # (a) the logged history shows the phases, the applied lambda, the duty cycle and the switches
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert [h["step"] for h in logs] == list(range(1, STEPS + 1))
    assert [h["gapt_phase"] for h in logs] == EXPECTED
    assert [h["gapt_lambda"] for h in logs] == [LAM if p == COMPRESS else 0.0 for p in EXPECTED]
    assert [h["gapt_switches"] for h in logs] == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 4, 4]
    assert logs[-1]["gapt_duty_compress"] == pytest.approx(6 / 12)
    assert all(h["gapt_mbe"] > 0 for h in logs)
    assert any("eval_loss" in h for h in trainer.state.log_history)
    assert not any("gapt_phase" in h for h in trainer.state.log_history if "eval_loss" in h)

    # (d) evaluate() neither moves the gate nor counts micro-batches, and its loss is the model's plain CE
    before = (json.dumps(trainer.gate.state_dict()), dict(trainer.gapt_micro_batches))
    metrics = trainer.evaluate()
    assert (json.dumps(trainer.gate.state_dict()), dict(trainer.gapt_micro_batches)) == before
    assert len(trainer.records) == STEPS * ga
    plain = transformers.Trainer(model=trainer.model, args=trainer.args, eval_dataset=trainer.eval_dataset)
    assert metrics["eval_loss"] == pytest.approx(plain.evaluate()["eval_loss"], rel=1e-6)


def test_mean_ce_without_num_items_and_checkpoint_resume(tmp_path):
    # Without num_items_in_batch the loss is the micro-batch mean CE + lambda * MBE; the Trainer scales it for GA.
    trainer = _trainer(tmp_path / "direct", cls=GAPTTrainer)
    trainer.gate.phase = COMPRESS
    model = trainer.model.train()
    batch = _batch(_data()[:4])
    loss = trainer.compute_loss(model, batch)
    with torch.no_grad():
        _, hidden = forward_with_hidden(model, batch["input_ids"])
        mbe = torch.stack([matrix_entropy(h, 2.0, 8) for h in hidden]).mean()
        own = model(**batch).loss
    assert float(loss.detach()) == pytest.approx(float(own) + LAM * float(mbe), rel=1e-5)
    assert trainer.loss_is_scaled_for_ga is False

    # The gate state travels with checkpoints: a run resumed at step 6 continues the same schedule.
    out = tmp_path / "resume"
    _trainer(out, cls=GAPTTrainer, save_strategy="steps", save_steps=6).train()
    assert (out / "checkpoint-6" / "gapt_state.json").is_file()
    resumed = _trainer(out, cls=GAPTTrainer)
    resumed.train(resume_from_checkpoint=str(out / "checkpoint-6"))
    logs = [h for h in resumed.state.log_history if "loss" in h and h["step"] > 6]
    assert [h["gapt_phase"] for h in logs] == EXPECTED[6:]  # a fresh gate would memorize through step 9
    assert resumed.gate.stats.switches == 4
    assert resumed.gapt_summary()["duty_compress"] == pytest.approx(6 / 12)


def test_micro_batch_patience_unit_feeds_every_micro_batch(tmp_path):
    trainer = _trainer(tmp_path, ga=2, gate=GAPTConfig(**{**vars(GATE), "patience_unit": "micro_batch"}), max_steps=6)
    trainer.train()
    assert [r["phase"] for r in trainer.records] == EXPECTED  # a switch reaches the next micro-batch, mid-step
    assert trainer.gate.stats.steps_memorize + trainer.gate.stats.steps_compress == 12
