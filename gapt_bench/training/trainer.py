"""The one training loop for every LM task: CPU or CUDA, gradient accumulation, matched token budgets,
checkpoints that resume bit-exactly on CPU, divergence detection and the training curve.

The budget is tokens: steps = ceil(train.tokens / (batch_size * seq_len)), identical for every method, and a
method cannot change the batch. Batches come from `task.get_batch(step)`, a pure function of (config, step), so a
resumed run sees exactly the batches an uninterrupted one would.

The loop reads top to bottom: restore a checkpoint, then per step set the learning rate, run the micro-batches
(`optimizer_step`), let the method observe the step, log a curve row, check, checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from gapt_bench.measures.alignment import cycle_stats, gradient_alignment
from gapt_bench.measures.entropy import matrix_entropy
from gapt_bench.measures.hidden_states import forward_with_hidden
from gapt_bench.training import distributed
from gapt_bench.training.runtime import (
    CheckpointError,
    Diverged,
    Interrupted,
    RunContext,
    autocast_context,
    steps_for_budget,
)


@dataclass
class TrainOutput:
    model: torch.nn.Module
    tokens: int
    steps: int
    stop_reason: str  # budget | converged
    summary: dict[str, Any]


# ---------------------------------------------------------------------------------------------------------------
# Learning rate and optimizers


def lr_factor(step: int, total: int, t) -> float:
    """Linear warmup, then cosine to min_lr_ratio, constant, or constant then a linear cooldown."""
    if step < t.warmup_steps:
        return (step + 1) / t.warmup_steps
    if t.schedule == "constant":
        return 1.0
    if t.schedule == "linear_cooldown":
        start = total * (1 - t.cooldown_frac)
        return 1.0 if step < start else 1.0 - (1 - t.min_lr_ratio) * (step - start) / max(total - start, 1)
    progress = (step - t.warmup_steps) / max(total - t.warmup_steps, 1)
    return t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


OPTIMIZERS: dict[str, Callable[[torch.nn.Module, Any, torch.device], list[torch.optim.Optimizer]]] = {}


def register_optimizer(name: str):
    """Hook for other optimizers: a function (model, train_cfg, device) -> list of torch optimizers."""

    def wrap(fn):
        OPTIMIZERS[name] = fn
        return fn

    return wrap


def _decay_groups(params, t):
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@register_optimizer("adamw")
@register_optimizer("adam")
def _adamw(model, t, device):
    fused = device.type == "cuda" if t.fused == "auto" else t.fused == "always"
    params = [p for p in model.parameters() if p.requires_grad]
    return [torch.optim.AdamW(_decay_groups(params, t), lr=t.lr, betas=(t.beta1, t.beta2), fused=fused)]


@register_optimizer("muon")
def _muon(model, t, device):
    """Muon for hidden 2-D matrices, AdamW for embeddings, head and vectors (as the GAPT FineWeb runs)."""
    hidden, other = [], []
    for name, p in model.named_parameters():
        (
            hidden if p.dim() == 2 and "wte" not in name and "wpe" not in name and "lm_head" not in name else other
        ).append(p)
    # adjust_lr_fn="match_rms_adamw" scales Muon's update to AdamW's RMS, so one train.lr serves both parts.
    muon = torch.optim.Muon(
        hidden, lr=t.lr, weight_decay=t.weight_decay, momentum=0.95, nesterov=True, adjust_lr_fn="match_rms_adamw"
    )
    adam = torch.optim.AdamW(other, lr=t.lr, betas=(t.beta1, t.beta2), weight_decay=0.0)
    return [muon, adam]


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints


@dataclass
class LoopState:
    """What a checkpoint carries besides the model, optimizers, method and RNG."""

    step: int = 0
    curve_rows: int = 0
    elapsed: float = 0.0
    align: dict[str, list] = field(default_factory=lambda: {"steps": [], "cos": []})


def _save_atomic(obj: Any, path: Path) -> None:
    """Write `path` whole or not at all: a failed write (a full disk) leaves the previous checkpoint and no .tmp."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        cause = e.__context__ if isinstance(e, RuntimeError) else None  # torch wraps the file's OSError
        if isinstance(cause, OSError):
            raise cause from e
        raise


def load_checkpoint(path: Path, device: torch.device) -> dict:
    try:
        state = torch.load(path, map_location=device, weights_only=False)
        if not isinstance(state, dict) or "step" not in state:
            raise ValueError("not a gapt-bench checkpoint")
        return state
    except Exception as e:
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(e).__name__}: {str(e)[:80]})") from e


def save_checkpoint(path: Path, model, optimizers, method, device, loop: LoopState) -> None:
    _save_atomic(
        {
            "model": model.state_dict(),
            "optimizers": [o.state_dict() for o in optimizers],
            "method": method.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state() if device.type == "cuda" else None,
            "step": loop.step,
            "curve_rows": loop.curve_rows,
            "elapsed": loop.elapsed,
            "align": loop.align,
        },
        path,
    )


def restore(path: Path, model, optimizers, method, ctx: RunContext) -> LoopState:
    """Everything a resumed run needs to continue bit-exactly; the curve is cut back to the checkpoint's rows."""
    state = load_checkpoint(path, ctx.device)
    model.load_state_dict(state["model"])
    for opt, s in zip(optimizers, state["optimizers"]):
        opt.load_state_dict(s)
    method.load_state_dict(state["method"])
    torch.set_rng_state(state["rng_cpu"])
    if ctx.device.type == "cuda" and state.get("rng_cuda") is not None:
        torch.cuda.set_rng_state(state["rng_cuda"])
    loop = LoopState(state["step"], state["curve_rows"], state["elapsed"], state["align"])
    if ctx.is_main:
        _truncate_curve(ctx.curve_path, loop.curve_rows)
    return loop


def _truncate_curve(path: Path, rows: int) -> None:
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)[:rows]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(lines))
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------------------------
# One optimizer step


@dataclass
class StepResult:
    infos: list  # the method's StepInfo of each micro-batch
    losses: list[float]
    hidden: list[torch.Tensor]  # the last micro-batch's hidden states (for the curve's MBE)
    grad_norm: float
    align: dict[str, float]
    tokens: list[int]  # loss tokens of each micro-batch on this rank
    global_tokens: list[int]  # loss tokens of each micro-batch over all ranks


def _scale_grad(ce: torch.Tensor, factor: float) -> None:
    """Multiply the gradient that reaches `ce` by `factor`, its value untouched."""
    if factor != 1.0:
        ce.register_hook(lambda g: g * factor)


def optimizer_step(model, raw_model, task, method, cfg, ctx: RunContext, step: int, optimizers) -> StepResult:
    """Forward and backward over the step's micro-batches, clip, step the optimizers.

    The gradient is that of one pass over the global batch however it is split into micro-batches and ranks: the
    CE part is the token mean of the global batch, the rest of the method's loss (the MBE term, a mean over
    patches, every micro-batch holding as many) the mean over micro-batches. So each micro-batch's loss is divided
    by grad_accum (DDP's gradient averaging divides by the world size), and the gradient reaching its CE is scaled
    by its share of the global batch's loss tokens (targets != -100, counted on the whole global batch, so every
    rank knows the totals without communication) times grad_accum * world_size: with no masked targets, 1.
    """
    t, device = cfg.train, ctx.device
    x, y = task.get_batch(step)
    row_tokens = (y != -100).sum(dim=1)
    n_global = int(row_tokens.sum())
    span = x.shape[0] // t.grad_accum  # rows of the global batch in one micro-batch of all ranks
    global_tokens = [int(row_tokens[i * span : (i + 1) * span].sum()) for i in range(t.grad_accum)]
    x, y = x[ctx.rank :: ctx.world_size], y[ctx.rank :: ctx.world_size]
    micro = x.shape[0] // t.grad_accum
    infos, losses, tokens, hidden, align = [], [], [], [], {}
    align_now = bool(cfg.align.every) and step % cfg.align.every == 0
    for i in range(t.grad_accum):
        last = i == t.grad_accum - 1
        tokens.append(int((y[i * micro : (i + 1) * micro] != -100).sum()))  # on the host
        share = tokens[-1] * ctx.world_size / max(n_global, 1)
        xb = x[i * micro : (i + 1) * micro].to(device, non_blocking=True)
        yb = y[i * micro : (i + 1) * micro].to(device, non_blocking=True)
        # DDP all-reduces gradients only on the last micro-batch: no_sync must cover the forward too, since DDP
        # prepares the reduction during the forward pass.
        with model.no_sync() if ctx.world_size > 1 and not last else contextlib.nullcontext():
            with autocast_context(device, t.precision):
                logits, hidden = forward_with_hidden(model, xb)
                ce = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), yb.reshape(-1), ignore_index=-100)
                loss, info = method.loss(ce, hidden, step)
            # Under DDP a non-finite loss on one rank reaches every rank through the gradient all-reduce and ends
            # the run at the grad-norm test below; raising here alone would leave the others waiting.
            if ctx.world_size == 1 and not torch.isfinite(loss):
                raise Diverged(step, f"loss is {float(loss)}")
            if align_now and last:  # before backward frees the graph; .grad untouched
                align = gradient_alignment(
                    raw_model, ce, hidden, method.reg_layers_all(), cfg.mbe.patch_size, cfg.mbe.alpha, cfg.reg.centered
                )
            _scale_grad(ce, share * t.grad_accum)
            (loss / t.grad_accum).backward()
        if ctx.world_size > 1 and method.syncs_micro_batches:  # the decision must be the same on every rank
            distributed.mean_step_values([info], [], False, tokens[-1:])
        method.observe_micro(info, step)
        infos.append(info)
        losses.append(float(loss.detach()))
    clip = t.grad_clip if t.grad_clip > 0 else float("inf")
    grad_norm = float(torch.nn.utils.clip_grad_norm_(raw_model.parameters(), clip))
    if not math.isfinite(grad_norm) or grad_norm > t.diverge_grad_norm:
        raise Diverged(step, f"gradient norm {grad_norm:.3g}")
    for opt in optimizers:
        opt.step()
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    return StepResult(infos, losses, hidden, grad_norm, align, tokens, global_tokens)


def curve_row(step: int, tokens: int, res: StepResult, cfg, lr: float) -> dict:
    """One row of curve.jsonl, written after the step's StepInfos were averaged over ranks (DDP):

    - ce: the step's training CE, the token mean over the global batch (micro-batches weighted by loss tokens);
    - loss: the mean over micro-batches (and ranks) of the method's loss;
    - phase: the method's phase in the last micro-batch;
    - mbe_layer_<i>, mbe (their mean): the uncentred MBE of each layer's hidden states in the last micro-batch on
      rank 0 only: a cheap probe of the representation, not the global batch's MBE nor the regulariser's;
    - lr, grad_norm (before clipping) and, on probed steps, the alignment cosines.
    """
    infos, n = res.infos, sum(res.global_tokens)
    weights = [k / n for k in res.global_tokens] if n else [1 / len(infos)] * len(infos)
    row: dict[str, Any] = {
        "step": step,
        "tokens": tokens,
        "ce": sum(w * i.ce for w, i in zip(weights, infos)),
        "loss": sum(res.losses) / len(res.losses),
        "lr": lr,
        "grad_norm": res.grad_norm,
        "phase": infos[-1].phase,
    }
    with torch.no_grad():
        mbe = [float(matrix_entropy(h.detach(), cfg.mbe.alpha, cfg.mbe.patch_size)) for h in res.hidden]
    row.update({f"mbe_layer_{i}": v for i, v in enumerate(mbe)})
    row["mbe"] = sum(mbe) / len(mbe)
    row.update(res.align)
    return row


# ---------------------------------------------------------------------------------------------------------------
# The loop


def train_lm(model: torch.nn.Module, task, method, cfg, ctx: RunContext) -> TrainOutput:
    t, device = cfg.train, ctx.device
    model.to(device)
    if t.precision == "bf16-weights":  # parameters and optimizer state in bfloat16, no fp32 master copy
        model.to(torch.bfloat16)
    model.train()
    raw_model = model
    if ctx.world_size > 1:
        model = torch.nn.parallel.DistributedDataParallel(model)
    if t.compile:
        model = torch.compile(model)
    optimizers = OPTIMIZERS[t.optimizer](raw_model, t, device)
    total = steps_for_budget(cfg)
    tokens_per_step = t.batch_size * t.seq_len
    if t.batch_size % (t.grad_accum * ctx.world_size):
        raise ValueError(f"train.batch_size={t.batch_size} is not divisible by grad_accum*world_size")

    ckpt_path = ctx.checkpoint_path
    loop = LoopState()
    restored = ctx.resume and ckpt_path.exists()
    if restored:
        loop = restore(ckpt_path, raw_model, optimizers, method, ctx)
        ctx.log(f"resumed from step {loop.step}/{total}")
    t0 = time.perf_counter()

    def checkpoint() -> None:
        """Fold the clock into `elapsed` (so a resumed run keeps its train time), then save on rank 0."""
        nonlocal t0
        now = time.perf_counter()
        loop.elapsed, t0 = loop.elapsed + now - t0, now
        if ctx.is_main:
            save_checkpoint(ckpt_path, raw_model, optimizers, method, device, loop)

    # Training from step 0 starts the curve over: a resumed folder without a checkpoint (checkpoint_every=0, or a
    # crash before the first one) holds the earlier attempt's rows, which the new rows would otherwise follow.
    curve = open(ctx.curve_path, "a" if restored else "w") if ctx.is_main else None
    stop_reason = "budget"
    # Throughput: timed from the end of the first few steps (compilation, CUDA warm-up) to the end of training.
    steady_from, steady_t0 = loop.step + min(10, (total - loop.step) // 5), None
    try:
        t0 = time.perf_counter()
        while loop.step < total:
            step = loop.step
            if step == steady_from:
                _sync(device)
                steady_t0 = time.perf_counter()
            lr = t.lr * lr_factor(step, total, t)
            for opt in optimizers:
                for g in opt.param_groups:
                    g["lr"] = lr
            res = optimizer_step(model, raw_model, task, method, cfg, ctx, step, optimizers)
            if res.align:
                loop.align["steps"].append(step)
                loop.align["cos"].append(res.align["align_cos"])
            # DDP: each micro-batch's CE and MBE become those of its global micro-batch (distributed.py) for the gate
            # and the curve; stopping is a collective decision.
            stop_now = (
                distributed.mean_step_values(res.infos, res.losses, ctx.stop_requested(), res.tokens)
                if ctx.world_size > 1
                else ctx.stop_requested()
            )
            method.observe(res.infos, step)
            loop.step = step = step + 1
            if ctx.is_main and (step % t.log_every == 0 or step == total or res.align):
                curve.write(json.dumps(curve_row(step, step * tokens_per_step, res, cfg, lr)) + "\n")
                curve.flush()
                loop.curve_rows += 1
            if ctx.progress:
                ctx.progress(step, total)
            if t.eval_every and step % t.eval_every == 0 and step < total and _check(task, raw_model, step, ctx):
                stop_reason = "converged"
                break
            if ctx.checkpoint_every and step % ctx.checkpoint_every == 0 and step < total:
                checkpoint()
            if stop_now:
                checkpoint()
                raise Interrupted(f"stopped at step {step}/{total}; checkpoint written")
        _sync(device)
        t_end = time.perf_counter()
        loop.elapsed += t_end - t0
    finally:
        if curve is not None:
            curve.close()
    model.eval()
    summary: dict[str, Any] = {"train_time_s": loop.elapsed, "steps_total": total}
    if steady_t0 is not None and loop.step > steady_from:
        summary.update(
            {"steady_time_s": t_end - steady_t0, "steady_tokens": (loop.step - steady_from) * tokens_per_step}
        )
    if loop.align["steps"]:  # what the probe's MBE was (alignment.py): the regulariser's layers and centring
        summary.update(
            {
                "align_layers": method.reg_layers_all(),
                "align_centered": cfg.reg.centered,
                **cycle_stats(loop.align["steps"], loop.align["cos"]),
            }
        )
    return TrainOutput(
        model=raw_model, tokens=loop.step * tokens_per_step, steps=loop.step, stop_reason=stop_reason, summary=summary
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _check(task, model, step: int, ctx: RunContext) -> bool:
    """The task's convergence check; under DDP rank 0 decides for all, so no rank is left waiting."""
    decision = bool(task.check(model, step, ctx))
    return distributed.broadcast_object(decision) if ctx.world_size > 1 else decision
