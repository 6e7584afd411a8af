"""Memorization capacity on uniform random sequences (Morris et al. 2025, capacity-paper.md).

N sequences of S tokens, i.i.d. uniform over V, fixed by the data seed and reused every epoch, plus a fresh held-out
set of the same shape. The estimator is the *strict* first-token convention with no per-sample clipping:

    mem_bits = N * (S - 1) * log2(V) - sum over the N*(S-1) predicted tokens of NLL in bits

(a causal LM without BOS never predicts token 1, so it is excluded from both terms; the paper's numbers fit
mem * S / (S - 1), reported alongside as `mem_bits_paper_conv`). The convention is stated in the config
(`data.convention`) and in the run summary.

Sanity check: the held-out set must score at least (1 - heldout_tolerance) * log2(V) bits per token; a run that
scores less has leaked or mis-accounted, and is flagged (`heldout_ok` = 0) so the capacity analysis lists it
instead of using it.

Convergence: every train.eval_every steps `check` measures mem_bits on the whole training set and appends it to
`<run_dir>/memorization.jsonl` (the memorization curve). The run stops ("converged") once the last
`converge_window` evaluations after warmup and after `converge_after` of the step budget differ by at most
converge_rtol * |mem_bits|; otherwise it runs to its step budget ("budget"). `converged` is 1 when the curve is
flat by that rule, when the run stopped early or when its last window, the final evaluation included, is flat as
the budget runs out (a plateau reached at the end of the schedule); `curve_rel_change` is the relative movement
over the last window (how far from flat a run still was).

Dataset size: `n_sequences` directly, or `capacity_ratio` = data bits / (expected_bpp * P) with P the paper's
parameter count, so that one ratio grid spans the same range of data-to-capacity for every model size.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from gapt_bench.config import ConfigError, opt
from gapt_bench.measures.entropy import layer_entropies
from gapt_bench.measures.hidden_states import forward_with_hidden
from gapt_bench.tasks.base import (
    EpochOrder,
    Evaluation,
    LMTask,
    mbe_metrics,
    next_token_targets,
    register_task,
)
from gapt_bench.training.model import paper_param_count_of, param_count
from gapt_bench.training.runtime import autocast_context, resolve_precision, steps_for_budget

CURVE_FILE = "memorization.jsonl"
CONVENTION_TEXT = (
    "strict: mem_bits = N*(S-1)*log2(V) - sum of NLL bits over the N*(S-1) predicted tokens "
    "(first token of each sequence excluded from both terms), dataset-level, no per-sample clipping"
)


@dataclass
class CapacityOptions:
    n_sequences: int = opt(256, "N: training sequences (ignored when capacity_ratio is set)", min=1)
    capacity_ratio: float | None = opt(
        None,
        "if set, N = round(ratio * expected_bpp * P / ((S-1) log2 V)): data "
        "bits as a multiple of the expected capacity (P: paper count)",
        min=0.0,
    )
    expected_bpp: float = opt(3.6, "bits/param assumed when sizing N from capacity_ratio", min=0.0)
    vocab_size: int = opt(64, "V: uniform token alphabet (keep small so parameters sit in the blocks)", min=2)
    data_seed: int | None = opt(None, "dataset seed; null = the run seed (the paper: a seed sets data and init)")
    heldout_sequences: int = opt(256, "fresh sequences for the sanity check", min=1)
    heldout_tolerance: float = opt(0.05, "held-out bits/token may fall this fraction below log2 V", min=0.0, max=1.0)
    converge_rtol: float = opt(0.01, "stop when mem_bits moved less than this (relative) over the window", min=0.0)
    converge_window: int = opt(3, "evaluations in the convergence window (train.eval_every apart)", min=2)
    converge_after: float = opt(
        0.0,
        "fraction of the step budget before which the curve cannot count as flat: at a high learning rate a flat "
        "stretch is a noise floor, not the plateau (pilots saw one at 0.8 x peak lr)",
        min=0.0,
        max=1.0,
    )
    eval_batch: int = opt(512, "sequences per evaluation forward pass", min=1)
    convention: str = opt(
        "strict", "first-token convention of the estimator (see the module docstring)", choices=("strict",)
    )
    leak_heldout: bool = opt(False, "TEST ONLY: evaluate the held-out check on training data (must be flagged)")


_N_DEFAULT = next(f.default for f in dataclasses.fields(CapacityOptions) if f.name == "n_sequences")


def sequence_bits(seq_len: int, vocab_size: int) -> float:
    """Entropy of one sequence under the strict convention: (S - 1) log2 V."""
    return (seq_len - 1) * math.log2(vocab_size)


@register_task("synthetic_capacity")
class SyntheticCapacity(LMTask):
    version = "2"
    description = "bits/parameter memorized on uniform random sequences (Morris et al. 2025)"
    Options = CapacityOptions
    metrics: ClassVar[dict[str, str]] = {
        "mem_bits": "max",
        "mem_bits_paper_conv": "max",
        "data_bits": "max",
        "bits_per_param": "max",
        "bits_per_param_paper_conv": "max",
        "heldout_bits_per_token": "max",
        "converged": "max",
        "mem_fraction": "max",
        "heldout_ok": "max",
        "train_bits_per_token": "min",
        "curve_rel_change": "min",
        "mbe": "min",
        "mbe_centered": "min",
    }
    primary = ()  # capacity is a property of the model, never a score

    @classmethod
    def finalize(cls, cfg) -> None:
        d, m, t = cfg.data, cfg.model, cfg.train
        m.vocab_size = m.vocab_size or d.vocab_size
        m.n_positions = m.n_positions or t.seq_len
        if m.vocab_size != d.vocab_size:
            raise ConfigError(
                f"model.vocab_size={m.vocab_size} differs from data.vocab_size={d.vocab_size}; set only data.vocab_size"
            )
        if m.n_positions < t.seq_len:
            raise ConfigError(f"model.n_positions={m.n_positions} < train.seq_len={t.seq_len}")
        if d.capacity_ratio is not None:
            if d.capacity_ratio <= 0 or d.expected_bpp <= 0:
                raise ConfigError(
                    "data.capacity_ratio and data.expected_bpp must be > 0 to size N; or set data.n_sequences"
                )
            p = paper_param_count_of(m)
            n = max(1, round(d.capacity_ratio * d.expected_bpp * p / sequence_bits(t.seq_len, d.vocab_size)))
            if d.n_sequences not in (n, _N_DEFAULT):
                raise ConfigError(
                    f"data.n_sequences={d.n_sequences} conflicts with data.capacity_ratio="
                    f"{d.capacity_ratio} (which gives N={n}); set data.capacity_ratio=null to fix N"
                )
            d.n_sequences = n

    # -- data ------------------------------------------------------------------------------------------------------
    def setup(self, ctx=None) -> None:
        d, S = self.cfg.data, self.cfg.train.seq_len
        seed = self.cfg.seed if d.data_seed is None else d.data_seed
        g = torch.Generator().manual_seed(10_000 + seed)
        self.train = torch.randint(0, d.vocab_size, (d.n_sequences, S), generator=g)
        g_held = torch.Generator().manual_seed(20_000_000 + seed)  # independent of N: same held-out set for every N
        self.heldout = torch.randint(0, d.vocab_size, (d.heldout_sequences, S), generator=g_held)
        self.curve = MemorizationCurve(ctx, self.data_bits)
        self.order = EpochOrder(d.n_sequences, self.cfg.seed)

    @property
    def data_bits(self) -> float:
        return self.cfg.data.n_sequences * sequence_bits(self.cfg.train.seq_len, self.cfg.data.vocab_size)

    def get_batch(self, step: int):
        """Batch `step` = sequences [step*B, (step+1)*B) of per-epoch permutations of the N sequences (EpochOrder)."""
        x = self.train[self.order.indices(step, self.cfg.train.batch_size)]
        return x, next_token_targets(x)

    # -- measurement -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def nll_bits(self, model, data: torch.Tensor, device) -> float:
        """Sum of NLL in bits over the predicted tokens (positions 2..S) of `data`, at the training precision."""
        total = 0.0
        was_training = model.training
        model.eval()
        try:
            for i in range(0, data.shape[0], self.cfg.data.eval_batch):
                x = data[i : i + self.cfg.data.eval_batch].to(device)
                with autocast_context(torch.device(device), self.cfg.train.precision):
                    logits = model(input_ids=x, use_cache=False).logits
                logits = logits.float()
                total += float(
                    F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1), reduction="sum")
                )
        finally:
            model.train(was_training)
        return total / math.log(2)

    def mem_bits(self, model, device) -> float:
        return self.data_bits - self.nll_bits(model, self.train, device)

    def check(self, model, step, ctx) -> bool:
        """Convergence of training-set memorization (never held-out data): flat over the last window."""
        mem = self.mem_bits(model, ctx.device)
        self.curve.add(step, mem, param_count(model))
        d = self.cfg.data
        return self.curve.flat(d.converge_window, d.converge_rtol, after=self._flat_after())

    def _flat_after(self) -> int:
        """The first step whose evaluations may count towards a flat curve (warmup, and converge_after)."""
        budget = steps_for_budget(self.cfg)
        return max(self.cfg.train.warmup_steps, math.ceil(self.cfg.data.converge_after * budget))

    def evaluate(self, model, ctx, trained) -> Evaluation:
        d, S = self.cfg.data, self.cfg.train.seq_len
        n_params = param_count(model)
        train_nll = self.nll_bits(model, self.train, ctx.device)
        mem = self.data_bits - train_nll
        held = self.train[: d.heldout_sequences] if d.leak_heldout else self.heldout
        held_bpt = self.nll_bits(model, held, ctx.device) / (held.shape[0] * (S - 1))
        heldout_ok = held_bpt >= (1 - d.heldout_tolerance) * math.log2(d.vocab_size)
        converged = trained.stop_reason == "converged"
        if not converged:  # stopped at the budget: the final model is one more point of the curve
            self.curve.add(trained.steps, mem, n_params, final=True)
            converged = self.curve.flat(d.converge_window, d.converge_rtol, after=self._flat_after())
        paper_conv = S / (S - 1)
        metrics = {
            "mem_bits": mem,
            "mem_bits_paper_conv": mem * paper_conv,
            "data_bits": self.data_bits,
            "bits_per_param": mem / n_params,
            "bits_per_param_paper_conv": mem * paper_conv / n_params,
            "mem_fraction": mem / self.data_bits,
            "train_bits_per_token": train_nll / (d.n_sequences * (S - 1)),
            "heldout_bits_per_token": held_bpt,
            "heldout_ok": float(heldout_ok),
            "converged": float(converged),
            **self.curve.rel_change(d.converge_window),
            **self._mbe(model, ctx),
        }
        return Evaluation(
            metrics,
            {
                "converged_at_step": trained.steps if converged else None,
                "flat_at_budget": converged and trained.stop_reason != "converged",
                "n_evals": len(self.curve.points),
                "memorization_curve": CURVE_FILE,
            },
        )

    def summary(self, trained, ctx) -> dict:
        d, m = self.cfg.data, self.cfg.model
        return {
            "convention": d.convention,
            "estimator": CONVENTION_TEXT,
            "precision": resolve_precision(self.cfg.train.precision, ctx.device),
            "n_sequences": d.n_sequences,
            "data_bits": self.data_bits,
            "paper_param_count": paper_param_count_of(m),
        }

    @torch.no_grad()
    def _mbe(self, model, ctx) -> dict[str, float]:
        m = self.cfg.mbe
        x = self.train[: min(64, self.cfg.data.n_sequences)].to(ctx.device)  # seq_len % patch_size == 0 (check_run)
        _, hidden = forward_with_hidden(model, x)
        return mbe_metrics(
            "",
            layer_entropies(hidden, m.alpha, m.patch_size).tolist(),
            layer_entropies(hidden, m.alpha, m.patch_size, centered=True).tolist(),
            per_layer=False,
        )


class MemorizationCurve:
    """Training-set memorization against step, kept in `<run_dir>/memorization.jsonl` (one row per check).

    A resumed run keeps the rows of the interrupted attempt up to its first new check, so the curve is the one an
    uninterrupted run would have written.
    """

    def __init__(self, ctx, data_bits: float) -> None:
        self.path = ctx.run_dir / CURVE_FILE if ctx is not None else None
        self.write = self.path is not None and ctx.is_main
        self.data_bits = data_bits
        self.points: list[tuple[int, float]] = []
        self._loaded = not (ctx is not None and ctx.resume)
        if self._loaded and self.write and self.path.exists():
            self.path.unlink()

    def _load(self, step: int) -> None:
        """On the first check after a resume: keep the earlier attempt's rows before `step`."""
        self._loaded = True
        if self.path is None or not self.path.exists():
            return
        rows = []
        for line in self.path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if row.get("step", 1 << 62) < step and not row.get("final"):
                rows.append(row)
        if self.write:
            self.path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        self.points = [(r["step"], r["mem_bits"]) for r in rows]

    def add(self, step: int, mem: float, n_params: int, final: bool = False) -> None:
        if not self._loaded:
            self._load(step)
        if final and self.points and self.points[-1][0] == step:
            return
        self.points.append((step, mem))
        if self.write:
            row = {
                "step": step,
                "mem_bits": mem,
                "mem_fraction": mem / self.data_bits,
                "bits_per_param": mem / n_params if n_params else None,
                "final": final,
            }
            with open(self.path, "a") as f:
                f.write(json.dumps(row) + "\n")

    def flat(self, window: int, rtol: float, after: int = 0) -> bool:
        """True when the last `window` points after step `after` differ by at most rtol * |last|."""
        values = [v for s, v in self.points if s >= after]
        if len(values) < window:
            return False
        recent = values[-window:]
        return (max(recent) - min(recent)) <= rtol * max(abs(recent[-1]), 1.0)

    def rel_change(self, window: int) -> dict[str, float]:
        """{"curve_rel_change": movement over the last window / |last|}, or {} with fewer than two points."""
        recent = [v for _, v in self.points][-window:]
        if len(recent) < 2:
            return {}
        return {"curve_rel_change": (max(recent) - min(recent)) / max(abs(recent[-1]), 1.0)}
