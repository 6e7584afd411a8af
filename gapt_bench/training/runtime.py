"""What a run executes in, apart from the training loop: its context, the errors that end it, the device and the
precision, and the step budget. Tasks and the trainer import these; nothing here trains."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


class Diverged(RuntimeError):
    """A non-finite loss or an exploding gradient: the run is recorded as diverged (deterministic, not retried)."""

    def __init__(self, step: int, why: str) -> None:
        super().__init__(f"diverged at step {step}: {why}")
        self.step, self.why = step, why


class Interrupted(RuntimeError):
    """SIGINT/SIGTERM: the current step finished and a checkpoint was written."""


class CheckpointError(RuntimeError):
    """A checkpoint to resume from cannot be read; the run is not recorded and its folder is left as it was."""


CHECKPOINT = "checkpoint.pt"  # a run folder's resumable state (written by the trainer, read on --resume)


@dataclass
class RunContext:
    """Where and how one run executes: its folder, device, checkpointing, stop signal and DDP rank."""

    run_dir: Path
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    checkpoint_every: int = 0
    resume: bool = False
    progress: Callable[..., None] | None = None  # (step, total[, stage]): steps done of a stage's total
    stop_requested: Callable[[], bool] = lambda: False
    log: Callable[[str], None] = print
    rank: int = 0
    world_size: int = 1
    matched: dict[str, Any] | None = None  # a matched control: the summary of the run it copies (see methods)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def curve_path(self) -> Path:
        return self.run_dir / "curve.jsonl"

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT


def resolve_device(spec: str, local_rank: int | None = None) -> torch.device:
    """The device a `train.device` value means here: auto = cuda if available, else cpu. Under DDP (`local_rank`
    given) a CUDA spec means this rank's GPU, cuda:LOCAL_RANK."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda") and local_rank is not None:
        return torch.device("cuda", local_rank)
    return torch.device(spec)


def resolve_precision(precision: str, device: torch.device) -> str:
    """What train.precision means on `device`: fp32, bf16 (autocast, fp32 weights) or bf16-weights."""
    return ("bf16" if device.type == "cuda" else "fp32") if precision == "auto" else precision


def autocast_context(device: torch.device, precision: str):
    """bf16 autocast where the run's precision is bf16 (on CUDA or CPU), else nothing.

    On CPU it also selects the math attention kernel: torch's CPU flash-attention kernel in bf16 took 74% of a bf16
    step of the capacity model (head size 8, 32 tokens), whose bf16 step then cost 3x its fp32 step; with the math
    kernel (matmuls and a softmax, also under autocast) bf16 costs what fp32 does. The kernel is chosen at the
    forward, so the backward follows it. Both are bf16 attention; they differ in rounding, not in what they
    compute."""
    if resolve_precision(precision, device) != "bf16":
        return contextlib.nullcontext()
    if device.type != "cpu":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    stack = contextlib.ExitStack()
    stack.enter_context(torch.autocast(device_type="cpu", dtype=torch.bfloat16))
    stack.enter_context(sdpa_kernel(SDPBackend.MATH))
    return stack


def steps_for_budget(cfg: Any) -> int:
    """Optimizer steps of a token budget: ceil(train.tokens / (batch_size * seq_len)), the same for every method."""
    t = cfg.train
    return max(1, math.ceil(t.tokens / (t.batch_size * t.seq_len)))
