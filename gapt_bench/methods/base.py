"""The method interface: what a training method may change, and nothing else.

A method sees, for each micro-batch, the CE loss (a tensor) and the hidden states of every layer, and returns the
loss to back-propagate. After each optimizer step it observes the step's training CE and MBE. It never sees the
data loader, the optimizer, the batch size or the budget: the trainer fixes those identically for every method,
so all arms get the same tokens, data order and initialisation for a seed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import torch

from gapt_bench.entropy import matrix_entropy

if TYPE_CHECKING:
    from gapt_bench.config import RunConfig


@dataclass
class StepInfo:
    """What a method reports about one micro-batch (floats only; read by the trainer's curve and by observe)."""

    ce: float
    mbe: dict[int, float] = field(default_factory=dict)  # layer index -> MBE (nats), for the layers computed
    phase: int | None = None
    reg_loss: float | None = None


class Method:
    """Base class. Subclass, set `name`/`description`, override `loss` (and `observe` if it keeps state)."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def __init__(self, cfg: "RunConfig", n_layer: int) -> None:
        self.cfg = cfg
        self.n_layer = n_layer

    # -- the interface -------------------------------------------------------------------------------------------
    def loss(self, ce: torch.Tensor, hidden: Sequence[torch.Tensor], step: int) -> tuple[torch.Tensor, StepInfo]:
        raise NotImplementedError

    def observe(self, infos: Sequence[StepInfo], step: int) -> None:
        """Called once after each optimizer step with the StepInfo of each of its micro-batches."""

    def phase(self) -> int | None:
        return None

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
        middle = list(range(1, self.n_layer - 1)) or list(range(self.n_layer))  # L <= 2: no middle, use all
        mode = self.cfg.reg.layers
        if mode == "all":
            return list(range(self.n_layer))
        if mode == "middle":
            return middle
        return [middle[step % len(middle)]]  # rotate: one layer per optimizer step (May-2025 RRScheduler)

    def gate_layers(self) -> list[int]:
        """Layers whose MBE the gate watches: the regularised set (all middle layers in rotate mode)."""
        return self.reg_layers(0) if self.cfg.reg.layers != "rotate" else self.reg_layers_all()

    def reg_layers_all(self) -> list[int]:
        return list(range(1, self.n_layer - 1)) or list(range(self.n_layer))

    def mbe_of(self, hidden: Sequence[torch.Tensor], layers: Sequence[int]) -> dict[int, torch.Tensor]:
        m = self.cfg.mbe
        return {i: matrix_entropy(hidden[i], m.alpha, m.patch_size, self.cfg.reg.centered) for i in layers}

    def regularised_loss(self, ce: torch.Tensor, hidden: Sequence[torch.Tensor], step: int, weight: float,
                         watch: Sequence[int] = ()) -> tuple[torch.Tensor, StepInfo]:
        """CE + weight * mean MBE over the regularised layers (weight 0: CE only, MBE of `watch` measured)."""
        info = StepInfo(ce=float(ce.detach()))
        if weight > 0:
            layers = self.reg_layers(step)
            values = self.mbe_of(hidden, layers)
            reg = torch.stack(list(values.values())).mean()
            info.mbe = {i: float(v.detach()) for i, v in values.items()}
            info.reg_loss = float(reg.detach())
            loss = ce + weight * reg
        else:
            loss = ce
        missing = [i for i in watch if i not in info.mbe]
        if missing:
            with torch.no_grad():
                info.mbe.update({i: float(v) for i, v in self.mbe_of([h.detach() for h in hidden], missing).items()})
        return loss, info
