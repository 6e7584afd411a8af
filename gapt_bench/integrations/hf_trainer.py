"""GAPT in a user's own Hugging Face training script: swap `Trainer` for `GAPTTrainer`.

Why a subclass: a `TrainerCallback` can watch training but cannot change the loss, and in GAPT the loss itself
depends on the gate's phase (CE alone while memorizing, CE + lambda * MBE while compressing). So `compute_loss`
is overridden; everything else (optimizer, schedule, accumulation, DDP, logging, checkpoints) stays the Trainer's.

The loss of one training micro-batch, the same objective as the suite's trainer (`training/trainer.py`):
- CE exactly as transformers' `ForCausalLMLoss`: labels shifted by one, -100 ignored; with `num_items_in_batch`
  (the Trainer counts the whole accumulated step's targets when the model accepts loss kwargs) the token *sum*
  divided by it (times the process count under `average_tokens_across_devices`, as `Trainer.compute_loss` does),
  else the micro-batch's token mean;
- in compression + lambda * the mean MBE over the watched layers (`methods/base.py` `regularised_loss`). Under
  accumulation with `num_items_in_batch` the loss is already scaled for it (`loss_is_scaled_for_ga = True`), so the
  MBE term is divided by the step's micro-batch count here: one optimizer step's gradient is that of token-mean
  CE + lambda * (MBE mean over its micro-batches), however the step is split. Without `num_items_in_batch` the
  Trainer divides the whole loss by the accumulation steps.

The gate: `GAPTController` (`methods/phase_gate.py`), fed the *training* CE (the micro-batch's token mean) and
per-layer MBE. With `patience_unit="step"` (the default) it is fed once per optimizer step, the last micro-batch's
values, from an internal callback's `on_step_end`: the Trainer calls it exactly once per optimizer step, after the
optimizer step and before logging, also for an epoch's shorter last accumulation cycle, so no micro-batch
counting is needed. With "micro_batch" it is fed in `compute_loss` after each micro-batch's loss is formed (the
switch reaches the next micro-batch). Under DDP the observation is averaged over processes first, so every rank
takes the same decision. Evaluation and prediction (`model.training` False) get the plain Trainer loss and never
touch the gate. `layers` sets both the regularised and the watched layers (GAPTConfig.watch is not read); the
May-2025 `step_mode="alternate"` is not offered.

Logged at the Trainer's logging steps (beside "loss"): gapt_phase / gapt_lambda / gapt_mbe (the last training
micro-batch's phase, applied lambda and MBE mean over watched layers), gapt_duty_compress (the fraction of
micro-batches trained in compression so far) and gapt_switches. The gate state is saved as gapt_state.json in
each checkpoint folder and restored by `train(resume_from_checkpoint=...)`.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from gapt_bench.config import GAPTConfig
from gapt_bench.measures.entropy import matrix_entropy
from gapt_bench.measures.hidden_states import forward_with_hidden
from gapt_bench.methods.phase_gate import COMPRESS, MEMORIZE, GAPTController

GATE_STATE_NAME = "gapt_state.json"


def causal_lm_ce(
    logits: torch.Tensor, labels: torch.Tensor | None, shift_labels: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of the token CEs, number of targets), shifted as `ForCausalLMLoss`: position i predicts labels[i + 1]."""
    if shift_labels is None:
        if labels is None:
            raise ValueError("GAPTTrainer needs labels (or shift_labels) in each batch to compute the CE")
        shift_labels = F.pad(labels, (0, 1), value=-100)[..., 1:]
    targets = shift_labels.reshape(-1).to(logits.device)
    total = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets, ignore_index=-100, reduction="sum")
    return total, targets.ne(-100).sum()


class _GateOnStepEnd(TrainerCallback):
    """Feeds the gate at each optimizer-step boundary (the Trainer's on_step_end)."""

    def __init__(self, trainer: GAPTTrainer) -> None:
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        if self.trainer.gapt_config.patience_unit == "step" and self.trainer._unfed:
            self.trainer._feed_gate()


class GAPTTrainer(Trainer):
    """`transformers.Trainer` whose causal-LM loss follows the GAPT phase gate (see the module docstring)."""

    def __init__(
        self,
        *args,
        gapt: GAPTConfig | None = None,
        mbe_weight: float = 1.0,
        alpha: float = 2.0,
        patch_size: int = 8,
        layers: Sequence[int] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.gapt_config = gapt if gapt is not None else GAPTConfig()
        self.gate = GAPTController(self.gapt_config, lam=mbe_weight)
        self.mbe_weight, self.alpha, self.patch_size = mbe_weight, alpha, patch_size
        self.layers = list(layers) if layers is not None else None  # None: every decoder block
        self.gapt_last: dict | None = None  # the last training micro-batch: ce, mbe (per layer), phase, lambda
        self.gapt_micro_batches = {MEMORIZE: 0, COMPRESS: 0}  # micro-batches trained in each phase
        self._unfed = False
        self.add_callback(_GateOnStepEnd(self))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not model.training:  # evaluate / predict: the plain Trainer loss, the gate untouched
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        inputs = dict(inputs)
        labels, shift_labels = inputs.pop("labels", None), inputs.pop("shift_labels", None)
        if labels is None and shift_labels is None:
            raise ValueError("GAPTTrainer needs `labels` in each batch (a causal-LM collator sets them)")
        logits, hidden = forward_with_hidden(model, inputs.pop("input_ids"), **inputs)
        ce_sum, n_targets = causal_lm_ce(logits, labels, shift_labels)
        phase, (_, weight) = self.gate.phase, self.gate.loss_weights()
        layers = self.layers if self.layers is not None else range(len(hidden))
        with contextlib.nullcontext() if weight > 0 else torch.no_grad():
            mbe = torch.stack([matrix_entropy(hidden[i], self.alpha, self.patch_size) for i in layers])
        if num_items_in_batch is None:  # a per-micro-batch mean: the Trainer divides by the accumulation steps
            ce_term, mbe_scale = ce_sum / n_targets.clamp_min(1), 1.0
        else:  # already normalised over the whole accumulated step (and over processes)
            ce_term = ce_sum / torch.as_tensor(num_items_in_batch, device=ce_sum.device)
            if getattr(self.args, "average_tokens_across_devices", False):
                ce_term = ce_term * self.accelerator.num_processes
            mbe_scale = 1.0 / getattr(
                self, "current_gradient_accumulation_steps", self.args.gradient_accumulation_steps
            )
        self.loss_is_scaled_for_ga = num_items_in_batch is not None
        loss = ce_term + weight * mbe_scale * mbe.mean() if weight > 0 else ce_term
        mean_ce = float(ce_sum.detach() / n_targets.clamp_min(1))
        self.gapt_last = {"ce": mean_ce, "mbe": mbe.detach().tolist(), "phase": phase, "lambda": weight}
        self.gapt_micro_batches[phase] += 1
        self._unfed = True
        if self.gapt_config.patience_unit == "micro_batch":
            self._feed_gate()
        return (loss, {"logits": logits}) if return_outputs else loss

    def _feed_gate(self) -> None:
        last = self.gapt_last
        assert last is not None, "the gate is fed after a training micro-batch"
        obs = [last["ce"], *last["mbe"]]
        if self.accelerator.num_processes > 1:  # one decision on every rank: the mean observation
            obs = self.accelerator.reduce(torch.tensor(obs, device=self.args.device), reduction="mean").tolist()
        self.gate.update(obs[0], obs[1:])
        self._unfed = False

    def gapt_summary(self) -> dict:
        """The gate's counts (switches, exits by spike/plateau, updates per phase) and the micro-batch duty cycle."""
        n = sum(self.gapt_micro_batches.values())
        return {**self.gate.summary(), "duty_compress": self.gapt_micro_batches[COMPRESS] / n if n else None}

    def log(self, logs, *args, **kwargs):
        if "loss" in logs and self.gapt_last is not None:  # training logs only, not eval or the final summary
            last = self.gapt_last
            logs.update(
                gapt_phase=last["phase"],
                gapt_lambda=last["lambda"],
                gapt_mbe=sum(last["mbe"]) / max(len(last["mbe"]), 1),
                gapt_duty_compress=self.gapt_summary()["duty_compress"],
                gapt_switches=self.gate.stats.switches,
            )
        super().log(logs, *args, **kwargs)

    # -- the gate state beside each checkpoint ----------------------------------------------------------------------
    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            folder = os.path.join(
                self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            )
            state = {"gate": self.gate.state_dict(), "micro_batches": list(self.gapt_micro_batches.items())}
            with open(os.path.join(folder, GATE_STATE_NAME), "w") as f:
                json.dump(state, f)  # inf (an unset minimum) is written as Infinity and read back

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = os.path.join(resume_from_checkpoint, GATE_STATE_NAME)
        if os.path.isfile(path):
            with open(path) as f:
                state = json.load(f)
            self.gate.load_state_dict(state["gate"])
            self.gapt_micro_batches = {int(p): n for p, n in state["micro_batches"]}
