"""Several processes training one run with DistributedDataParallel, launched by ``torchrun``.

One node, N GPUs::

    torchrun --standalone --nproc_per_node=N -m gapt_bench run --tasks fineweb_lm --preset paper-short ...

Several nodes (the same command on each, a shared ``--out`` folder)::

    torchrun --nnodes=2 --node_rank=R --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 \\
        -m gapt_bench run ...

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``.
:func:`setup` reads them once per process (it is idempotent): with ``WORLD_SIZE`` > 1 it initialises the default
process group (``nccl`` for CUDA tensors and ``gloo`` for CPU tensors when CUDA is present, ``gloo`` alone on a
CPU-only machine; ``GAPT_BENCH_DIST_BACKEND`` overrides), pins the process to ``cuda:LOCAL_RANK``, creates a gloo
group with a long timeout for waiting on data preparation, and registers :func:`teardown` at exit. Without those
variables everything here is a no-op for a single process.

What the rest of the suite relies on:

* each rank trains on rows ``rank::world_size`` of the global batch (``train.batch_size`` is the global batch, so
  the token budget and the step count do not depend on the number of processes);
* the gate's inputs (training CE and per-layer MBE of each micro-batch) are combined over ranks every step into
  those of the global micro-batch (CE weighted by loss tokens, MBE averaged), so every rank takes the same phase
  decision as one process with the same global batch would (:func:`mean_step_values`);
* only rank 0 writes the run folder, the training curve and the record; the run id is chosen by rank 0 and
  broadcast (:func:`broadcast_object`);
* the standard output of ranks other than 0 is silenced (set ``GAPT_BENCH_ALL_RANKS_PRINT=1`` to keep it).
"""

from __future__ import annotations

import atexit
import datetime as dt
import math
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

DATA_TIMEOUT = dt.timedelta(hours=12)  # tokenising a FineWeb budget on the main rank may take a long time


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_local_main(self) -> bool:
        return self.local_rank == 0


_INFO: DistInfo | None = None
_DATA_GROUP: Any = None
_STDOUT: Any = None


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def env_info() -> DistInfo:
    """The ranks as torchrun's environment variables give them (no process group is created)."""
    world = _env_int("WORLD_SIZE", 1)
    local_world = _env_int("LOCAL_WORLD_SIZE", world)
    return DistInfo(
        rank=_env_int("RANK", 0), world_size=world, local_rank=_env_int("LOCAL_RANK", 0), local_world_size=local_world
    )


def launched() -> bool:
    """True when this process is one of several started by torchrun (WORLD_SIZE > 1)."""
    return env_info().world_size > 1


def default_backend() -> str:
    forced = os.environ.get("GAPT_BENCH_DIST_BACKEND", "").strip()
    if forced:
        return forced
    return "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"


def setup() -> DistInfo:
    """Initialise DDP from torchrun's environment once per process; a plain single-process DistInfo otherwise."""
    global _INFO, _DATA_GROUP
    if _INFO is not None:
        return _INFO
    info = env_info()
    if info.world_size <= 1:
        _INFO = info
        return info
    import torch.distributed as dist

    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    for var in ("MASTER_ADDR", "MASTER_PORT"):
        if var not in os.environ:
            raise RuntimeError(f"WORLD_SIZE={info.world_size} but {var} is not set: launch with torchrun")
    backend = default_backend()
    if torch.cuda.is_available() and "nccl" in backend:
        torch.cuda.set_device(info.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://", rank=info.rank, world_size=info.world_size)
    _DATA_GROUP = dist.new_group(backend="gloo", timeout=DATA_TIMEOUT)
    info = DistInfo(info.rank, info.world_size, info.local_rank, info.local_world_size, backend)
    _INFO = info
    atexit.register(teardown)
    if not info.is_main and os.environ.get("GAPT_BENCH_ALL_RANKS_PRINT", "") not in ("1", "true", "yes"):
        _silence_stdout()
    return info


def _silence_stdout() -> None:
    global _STDOUT
    if _STDOUT is None:
        _STDOUT = sys.stdout
        sys.stdout = open(os.devnull, "w")


def teardown() -> None:
    """Destroy the process group (safe to call twice, and without one)."""
    global _INFO, _DATA_GROUP, _STDOUT
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    finally:
        _INFO, _DATA_GROUP = None, None
        if _STDOUT is not None:
            sys.stdout.close()
            sys.stdout, _STDOUT = _STDOUT, None


def info() -> DistInfo:
    """The current DistInfo: set up by :func:`setup`, else read from the environment."""
    return _INFO if _INFO is not None else env_info()


def is_initialized() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def is_main() -> bool:
    """True on rank 0 (and in a single process)."""
    return info().rank == 0


def rank() -> int:
    return info().rank


def world_size() -> int:
    return info().world_size if is_initialized() else 1


def barrier(long: bool = False) -> None:
    """Wait for every rank (no-op without DDP). ``long``: on the gloo group with the data-preparation timeout."""
    if not is_initialized():
        return
    import torch.distributed as dist

    dist.barrier(group=_DATA_GROUP if long and _DATA_GROUP is not None else None)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (picklable objects; no-op without DDP)."""
    if not is_initialized():
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=src, group=_DATA_GROUP)
    return box[0]


@contextmanager
def local_main_first() -> Iterator[None]:
    """Run the body on local rank 0 of each node first, then on the other ranks (build a cache once, load it N-1
    times). Waits on the gloo group with a long timeout, so a slow tokenisation does not trip NCCL's watchdog."""
    if not is_initialized():
        yield
        return
    if not info().is_local_main:
        barrier(long=True)
    try:
        yield
    finally:
        if info().is_local_main:
            barrier(long=True)


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum of ``values`` over ranks, in place and returned (no-op without DDP). CPU tensors use the gloo group."""
    if not is_initialized():
        return values
    import torch.distributed as dist

    group = _DATA_GROUP if values.device.type == "cpu" else None
    dist.all_reduce(values, op=dist.ReduceOp.SUM, group=group)
    return values


def mean_step_values(
    infos: Sequence[Any], losses: list[float], stop: bool, tokens: Sequence[int] | None = None
) -> bool:
    """Combine one optimizer step's per-micro-batch values over ranks, in place; return the collective stop flag.

    ``infos`` are the methods' StepInfo objects (``ce``, ``mbe`` {layer: value}); every rank has the same structure
    because every rank is in the same phase. Each becomes the value of the global micro-batch (the rows of all
    ranks), as one process with the same global batch would compute it: ``ce`` the token mean, weighted by this
    rank's loss tokens of each micro-batch (``tokens``; equal weights without), ``mbe`` the mean over ranks (each
    holds as many rows, so as many patches). So the GAPT gate sees the same values on every rank and all ranks
    switch phase at the same step. ``losses`` become their mean over ranks. ``stop`` is true on every rank when
    any rank was asked to stop, so that they checkpoint and leave at the same step. Without DDP this returns
    ``stop`` unchanged.
    """
    if not is_initialized():
        return stop
    weights = [float(k) for k in tokens] if tokens is not None else [1.0] * len(infos)
    flat: list[float] = []
    for info, w in zip(infos, weights):
        flat.extend([info.ce * w if w else 0.0, w])  # a rank without loss tokens has CE NaN: weight 0, no NaN
        flat.extend(info.mbe[k] for k in sorted(info.mbe))
    flat.extend(losses)
    flat.append(1.0 if stop else 0.0)
    t = all_reduce_sum(torch.tensor(flat, dtype=torch.float64))
    n = world_size()
    it = iter(t[:-1].tolist())
    for info in infos:
        ce_sum, w_sum = next(it), next(it)
        info.ce = ce_sum / w_sum if w_sum else math.nan
        for k in sorted(info.mbe):
            info.mbe[k] = next(it) / n
    for i in range(len(losses)):
        losses[i] = next(it) / n
    return float(t[-1]) > 0


__all__ = [
    "DistInfo",
    "all_reduce_sum",
    "barrier",
    "broadcast_object",
    "default_backend",
    "env_info",
    "info",
    "is_initialized",
    "is_main",
    "launched",
    "local_main_first",
    "mean_step_values",
    "rank",
    "setup",
    "teardown",
    "world_size",
]
