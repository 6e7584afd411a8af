"""The method interface: what a training method may change, and nothing else.

A method sees, for each micro-batch, the CE loss (a tensor) and the hidden states of every layer, and returns the
loss to back-propagate. After each optimizer step it observes the step's training CE and MBE. It never sees the
data loader, the optimizer, the batch size or the budget: the trainer fixes those identically for every method,
so all arms get the same tokens, data order and initialisation for a seed.

A method is a subclass registered in `METHODS` (`@register_method("name")`) that declares:
- `config_sections`: the method sections of the config it reads (reg, gapt, periodic); only those enter its config
  hash, so e.g. baselines that differ only in gapt.tau are one group;
- `controls`: the methods that control it (the report puts them beside it, the paper table under its claims);
- `matches`: for a matched control, the method whose realised run it copies (the runner finds that run and passes
  its record summary as `matched`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from gapt_bench.config.registry import Registry
from gapt_bench.measures.entropy import matrix_entropy

if TYPE_CHECKING:
    from gapt_bench.config import RunConfig


@dataclass
class StepInfo:
    """What a method reports about one micro-batch (floats only). The method's observe_micro/observe read it (the
    gate); the trainer's curve takes `ce` (token-weighted) and the last `phase`, not `mbe`; under DDP `ce` and
    `mbe` are combined over ranks first (distributed.mean_step_values)."""

    ce: float
    mbe: dict[int, float] = field(default_factory=dict)  # layer index -> MBE (nats), for the layers computed
    phase: int | None = None


class Method:
    """Base class. Subclass, set `name`/`description`, override `loss` (and `observe` if it keeps state)."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    config_sections: ClassVar[tuple[str, ...]] = ()
    controls: ClassVar[tuple[str, ...]] = ()
    # May several seeds' instances train side by side in one batched group (`Task.run_group`)? True only for a
    # method whose loss and observations read nothing but their own arguments (no global RNG, no shared state).
    batchable: ClassVar[bool] = False

    def __init__(self, cfg: RunConfig, n_layer: int, matched: dict | None = None) -> None:
        self.cfg = cfg
        self.n_layer = n_layer
        self.matched = matched

    @classmethod
    def matches(cls, cfg: RunConfig) -> str | None:
        """The method whose run (same task, setup and seed) this run must copy, or None."""
        return None

    # -- the interface -------------------------------------------------------------------------------------------
    def loss(self, ce: torch.Tensor, hidden: Sequence[torch.Tensor], step: int) -> tuple[torch.Tensor, StepInfo]:
        raise NotImplementedError

    def observe_micro(self, info: StepInfo, step: int) -> None:
        """Called after each micro-batch's backward, before the next micro-batch's loss: a method that decides per
        micro-batch (the later GAPT code's gate) acts here, so the decision reaches the next micro-batch."""

    # Under DDP the trainer averages a micro-batch's StepInfo over ranks before observe_micro only for methods
    # that set this (one all-reduce per micro-batch); every method's infos are averaged before `observe`.
    syncs_micro_batches: ClassVar[bool] = False

    def observe(self, infos: Sequence[StepInfo], step: int) -> None:
        """Called once after each optimizer step with the StepInfo of each of its micro-batches."""

    def summary(self) -> dict[str, Any]:
        """Method-specific figures for the run record (e.g. phase statistics)."""
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    # -- helpers for MBE-based methods ----------------------------------------------------------------------------
    def reg_layers(self, step: int) -> list[int]:
        """Layers whose MBE enters the loss at `step` (config reg.layers)."""
        mode = self.cfg.reg.layers
        pool = self.reg_layers_all()
        return pool if mode in ("all", "middle") else [pool[step % len(pool)]]  # rotate: one layer per step

    def reg_layers_all(self) -> list[int]:
        """Every layer the regulariser may reach: all; middle 1..L-2; rotate_rr 2..L-3 (the May-2025
        RRScheduler(start_layer=2, end_layer=L-2)). Too shallow a model for a range falls back to all layers."""
        mode, n = self.cfg.reg.layers, self.n_layer
        if mode == "all":
            return list(range(n))
        lo, hi = (2, n - 2) if mode == "rotate_rr" else (1, n - 1)
        return list(range(lo, hi)) or list(range(n))

    def gate_layers(self) -> list[int]:
        """Layers whose MBE the gate watches: every layer (gapt.watch=all), else the regularised pool."""
        return list(range(self.n_layer)) if self.cfg.gapt.watch == "all" else self.reg_layers_all()

    def mbe_of(self, hidden: Sequence[torch.Tensor], layers: Sequence[int]) -> dict[int, torch.Tensor]:
        m = self.cfg.mbe
        return {i: matrix_entropy(hidden[i], m.alpha, m.patch_size, self.cfg.reg.centered) for i in layers}

    def regularised_loss(
        self, ce: torch.Tensor, hidden: Sequence[torch.Tensor], step: int, weight: float, watch: Sequence[int] = ()
    ) -> tuple[torch.Tensor, StepInfo]:
        """CE + weight * mean MBE over the regularised layers (weight 0: CE only, MBE of `watch` measured).

        reg.step_mode=alternate (May-2025): in a compression step the loss is CE alone on even optimizer steps and
        weight * MBE alone on odd ones (whole optimizer steps alternate; the regularised layer rotates as set).
        """
        info = StepInfo(ce=float(ce.detach()))
        if weight > 0:
            layers = self.reg_layers(step)
            values = self.mbe_of(hidden, layers)
            reg = torch.stack(list(values.values())).mean()
            info.mbe = {i: float(v.detach()) for i, v in values.items()}
            if self.cfg.reg.step_mode == "alternate":
                loss = weight * reg if step % 2 else ce
            else:
                loss = ce + weight * reg
        else:
            loss = ce
        missing = [i for i in watch if i not in info.mbe]
        if missing:
            with torch.no_grad():
                info.mbe.update({i: float(v) for i, v in self.mbe_of([h.detach() for h in hidden], missing).items()})
        return loss, info


def _import_builtin_methods() -> None:
    """Each module of gapt_bench.methods registers its method when imported."""
    import importlib
    import pkgutil

    import gapt_bench.methods as package

    for mod in pkgutil.iter_modules(package.__path__):
        if mod.name not in ("base", "phase_gate"):
            importlib.import_module(f"gapt_bench.methods.{mod.name}")


METHODS: Registry[type[Method]] = Registry(
    "method", base=Method, builtins=_import_builtin_methods, entry_points="gapt_bench.methods"
)
register_method = METHODS.decorator
