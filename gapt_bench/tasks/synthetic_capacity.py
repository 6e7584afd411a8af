"""Memorization capacity on uniform random sequences (Morris et al. 2025, capacity-paper.md).

N sequences of S tokens, i.i.d. uniform over V, fixed by the data seed and reused every epoch. The estimator is
the strict first-token convention with no per-sample clipping:

    mem_bits = N * (S - 1) * log2(V) - sum over the N*(S-1) predicted tokens of NLL in bits

(the first token of a sequence is never predicted, so it is excluded from both terms). A fresh held-out set of the
same shape must score at least about log2(V) bits per token; a run that scores clearly less has leaked or
mis-accounted, and is flagged (`heldout_ok` = 0) rather than reported as capacity.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gapt_bench.config import ConfigError, opt
from gapt_bench.models import forward_with_hidden
from gapt_bench.tasks.base import LMTask


@dataclass
class CapacityOptions:
    n_sequences: int = opt(256, "N: training sequences (the dataset size being memorized)", min=1)
    vocab_size: int = opt(64, "V: uniform token alphabet (keep small so parameters sit in the blocks)", min=2)
    data_seed: int | None = opt(None, "dataset seed; null = the run seed (the paper: a seed sets data and init)")
    heldout_sequences: int = opt(256, "fresh sequences for the sanity check", min=1)
    heldout_tolerance: float = opt(0.05, "held-out bits/token may fall this fraction below log2 V", min=0.0)
    converge_rtol: float = opt(0.01, "stop when mem_bits moved less than this (relative) over the window", min=0.0)
    converge_window: int = opt(3, "evaluations in the convergence window (train.eval_every apart)", min=2)
    eval_batch: int = opt(512, "sequences per evaluation forward pass", min=1)
    leak_heldout: bool = opt(False, "TEST ONLY: evaluate the held-out check on training data (must be flagged)")


class SyntheticCapacity(LMTask):
    name = "synthetic_capacity"
    version = "1"
    description = "bits/parameter memorized on uniform random sequences (Morris et al. 2025)"
    Options = CapacityOptions
    metrics = {"mem_bits": "max", "data_bits": "max", "bits_per_param": "max", "heldout_bits_per_token": "max",
               "converged": "max", "mem_fraction": "max", "heldout_ok": "max", "train_bits_per_token": "min"}

    @classmethod
    def finalize(cls, cfg) -> None:
        d, m = cfg.data, cfg.model
        m.vocab_size = m.vocab_size or d.vocab_size
        m.n_positions = m.n_positions or cfg.train.seq_len
        if m.vocab_size != d.vocab_size:
            raise ConfigError(f"model.vocab_size={m.vocab_size} differs from data.vocab_size={d.vocab_size}; set only data.vocab_size")
        if cfg.train.batch_size > d.n_sequences:
            raise ConfigError(f"train.batch_size={cfg.train.batch_size} exceeds data.n_sequences={d.n_sequences}; lower the batch")
        if m.n_positions < cfg.train.seq_len:
            raise ConfigError(f"model.n_positions={m.n_positions} < train.seq_len={cfg.train.seq_len}")

    def setup(self) -> None:
        d, S = self.cfg.data, self.cfg.train.seq_len
        seed = self.cfg.seed if d.data_seed is None else d.data_seed
        g = torch.Generator().manual_seed(10_000 + seed)
        self.train = torch.randint(0, d.vocab_size, (d.n_sequences, S), generator=g)
        self.heldout = torch.randint(0, d.vocab_size, (d.heldout_sequences, S), generator=g)
        self.curve: list[float] = []

    @property
    def data_bits(self) -> float:
        d = self.cfg.data
        return d.n_sequences * (self.cfg.train.seq_len - 1) * math.log2(d.vocab_size)

    def get_batch(self, step: int):
        """Epoch-wise shuffles: batch `step` is a slice of the permutation of its epoch (seeded by seed, epoch)."""
        n, b = self.cfg.data.n_sequences, self.cfg.train.batch_size
        per_epoch = n // b
        epoch, k = divmod(step, per_epoch)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch))
        x = self.train[perm[k * b:(k + 1) * b]]
        return x, _targets(x)

    @torch.no_grad()
    def nll_bits(self, model, data: torch.Tensor, device) -> float:
        """Sum of NLL in bits over the predicted tokens (positions 2..S) of `data`."""
        total = 0.0
        was_training = model.training
        model.eval()
        for i in range(0, data.shape[0], self.cfg.data.eval_batch):
            x = data[i:i + self.cfg.data.eval_batch].to(device)
            logits = model(input_ids=x, use_cache=False).logits.float()
            total += float(F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1), reduction="sum"))
        model.train(was_training)
        return total / math.log(2)

    def check(self, model, step, ctx) -> bool:
        mem = self.data_bits - self.nll_bits(model, self.train, ctx.device)
        self.curve.append(mem)
        w = self.cfg.data.converge_window
        if len(self.curve) < w:
            return False
        recent = self.curve[-w:]
        return (max(recent) - min(recent)) <= self.cfg.data.converge_rtol * max(abs(recent[-1]), 1.0)

    def evaluate(self, model, ctx) -> dict[str, float]:
        d, S = self.cfg.data, self.cfg.train.seq_len
        train_nll = self.nll_bits(model, self.train, ctx.device)
        held = self.train[: d.heldout_sequences] if d.leak_heldout else self.heldout
        held_bpt = self.nll_bits(model, held, ctx.device) / (held.shape[0] * (S - 1))
        mem = self.data_bits - train_nll
        from gapt_bench.models import param_count

        n_params = param_count(model)
        heldout_ok = held_bpt >= (1 - d.heldout_tolerance) * math.log2(d.vocab_size)
        hidden_mbe = self._mbe(model, ctx)
        return {
            "mem_bits": mem, "data_bits": self.data_bits, "bits_per_param": mem / n_params,
            "mem_fraction": mem / self.data_bits,
            "train_bits_per_token": train_nll / (d.n_sequences * (S - 1)),
            "heldout_bits_per_token": held_bpt, "heldout_ok": float(heldout_ok),
            "converged": float(len(self.curve) >= d.converge_window and self.check_converged()),
            **hidden_mbe,
        }

    def check_converged(self) -> bool:
        w = self.cfg.data.converge_window
        recent = self.curve[-w:]
        return (max(recent) - min(recent)) <= self.cfg.data.converge_rtol * max(abs(recent[-1]), 1.0)

    @torch.no_grad()
    def _mbe(self, model, ctx) -> dict[str, float]:
        from gapt_bench.entropy import layer_entropies

        m = self.cfg.mbe
        x = self.train[: min(64, self.cfg.data.n_sequences)].to(ctx.device)
        S = x.shape[1] - x.shape[1] % m.patch_size
        _, hidden = forward_with_hidden(model, x[:, :S])
        plain = layer_entropies(hidden, m.alpha, m.patch_size).tolist()
        centred = layer_entropies(hidden, m.alpha, m.patch_size, centered=True).tolist()
        return {"mbe": sum(plain) / len(plain), "mbe_centered": sum(centred) / len(centred)}


def _targets(x: torch.Tensor) -> torch.Tensor:
    y = torch.full_like(x, -100)
    y[:, :-1] = x[:, 1:]
    return y
