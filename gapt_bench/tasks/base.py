"""The task interface: a task provides data and evaluation, and knows nothing about methods.

LM tasks subclass `LMTask`: they give the trainer a deterministic global batch for each optimizer step (so every
method sees the same data order for a seed, and a resumed run sees the same batches) and evaluate the trained
model. A task whose protocol is not "train an LM once" (the forgetting MLP) overrides `run`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import torch

if TYPE_CHECKING:
    from gapt_bench.config import RunConfig
    from gapt_bench.train import RunContext


@dataclass
class TaskResult:
    metrics: dict[str, float]
    n_params: int
    tokens: int
    steps: int
    stop_reason: str = "budget"  # budget | converged
    summary: dict[str, Any] = field(default_factory=dict)


def mbe_metrics(prefix: str, plain: Sequence[float], centred: Sequence[float] | None = None,
                per_layer: bool = True) -> dict[str, float]:
    """The MBE metrics every task reports, named alike so the report can pair each with its control:
    `<prefix>mbe` (mean over layers), `<prefix>mbe_centered` (the collapse control) and `<prefix>mbe_layer_<i>`."""
    out = {f"{prefix}mbe": sum(plain) / len(plain)}
    if centred is not None:
        out[f"{prefix}mbe_centered"] = sum(centred) / len(centred)
    if per_layer:
        out.update({f"{prefix}mbe_layer_{i}": v for i, v in enumerate(plain)})
    return out


class Task:
    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    description: ClassVar[str] = ""
    Options: ClassVar[type]  # the dataclass of the task's `data:` section
    metrics: ClassVar[dict[str, str]] = {}  # metric name -> "min" | "max" (direction of "better")

    def __init__(self, cfg: "RunConfig") -> None:
        self.cfg = cfg

    @classmethod
    def finalize(cls, cfg: "RunConfig") -> None:
        """Fill task-derived fields (vocab size, positions) and raise ConfigError on impossible values."""

    def run(self, method_cls: type, ctx: "RunContext") -> TaskResult:
        raise NotImplementedError

    @classmethod
    def plan_summary(cls, cfg: "RunConfig") -> str:
        """One line for `gapt-bench validate`: the model and budget this run will use."""
        return ""

    @classmethod
    def metric_directions(cls, metrics: dict[str, float]) -> dict[str, str]:
        """Direction of "better" for each metric name ("name*" patterns cover per-layer metrics)."""
        out = {}
        for name in metrics:
            direction = cls.metrics.get(name)
            if direction is None:
                direction = next((d for pat, d in cls.metrics.items() if pat.endswith("*") and name.startswith(pat[:-1])), "min")
            out[name] = direction
        return out


class LMTask(Task):
    """A task trained by the shared LM trainer (`gapt_bench.train.train_lm`)."""

    @classmethod
    def plan_summary(cls, cfg: "RunConfig") -> str:
        from gapt_bench.train import steps_for_budget

        m, t = cfg.model, cfg.train
        return (f"model=L{m.n_layer}/d{m.n_embd} V={m.vocab_size} tokens={t.tokens:,} steps={steps_for_budget(cfg)} "
                f"batch={t.batch_size}x{t.seq_len}")

    def setup(self) -> None:
        """Build or load the data. Called once per run before training."""

    def get_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The global batch of optimizer step `step`: (inputs, targets), both (batch_size, seq_len) int64.

        Targets are already shifted (target[t] is the token after input[t]); -100 marks positions without loss.
        Must depend only on (config, step), never on what the model did.
        """
        raise NotImplementedError

    def evaluate(self, model: torch.nn.Module, ctx: "RunContext") -> dict[str, float]:
        raise NotImplementedError

    def check(self, model: torch.nn.Module, step: int, ctx: "RunContext") -> bool:
        """Training-side check every train.eval_every steps (never test data); True stops the run (converged)."""
        return False

    def run(self, method_cls: type, ctx: "RunContext") -> TaskResult:
        from gapt_bench.models import build_model, param_count
        from gapt_bench.train import train_lm

        self.setup()
        m = self.cfg.model
        torch.manual_seed(self.cfg.seed)  # same init for every method of a seed
        model = build_model(n_layer=m.n_layer, n_embd=m.n_embd, n_head=m.n_head, vocab_size=m.vocab_size,
                            n_positions=m.n_positions, dropout=m.dropout)
        method = method_cls(self.cfg, m.n_layer)
        out = train_lm(model, self, method, self.cfg, ctx)
        metrics = self.evaluate(out.model, ctx)
        return TaskResult(metrics=metrics, n_params=param_count(model), tokens=out.tokens, steps=out.steps,
                          stop_reason=out.stop_reason, summary={**method.summary(), **out.summary})
