"""The one training loop for every LM task: CPU or CUDA, gradient accumulation, matched token budgets,
checkpoints that resume bit-exactly on CPU, divergence detection and the training curve.

The budget is tokens: steps = ceil(train.tokens / (batch_size * seq_len)), identical for every method, and a
method cannot change the batch. Batches come from `task.get_batch(step)`, a pure function of (config, step), so a
resumed run sees exactly the batches an uninterrupted one would.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from gapt_bench import distributed
from gapt_bench.alignment import cycle_stats, gradient_alignment
from gapt_bench.entropy import matrix_entropy
from gapt_bench.models import forward_with_hidden

CHECKPOINT = "checkpoint.pt"


class Diverged(RuntimeError):
    def __init__(self, step: int, why: str) -> None:
        super().__init__(f"diverged at step {step}: {why}")
        self.step, self.why = step, why


class Interrupted(RuntimeError):
    """SIGINT/SIGTERM: the current step finished and a checkpoint was written."""


class CheckpointError(RuntimeError):
    """A checkpoint to resume from cannot be read; the run is not recorded and its folder is left as it was."""


@dataclass
class RunContext:
    run_dir: Path
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    checkpoint_every: int = 0
    resume: bool = False
    progress: Callable[[int, int], None] | None = None
    stop_requested: Callable[[], bool] = lambda: False
    log: Callable[[str], None] = print
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def curve_path(self) -> Path:
        return self.run_dir / "curve.jsonl"


@dataclass
class TrainOutput:
    model: torch.nn.Module
    tokens: int
    steps: int
    stop_reason: str
    summary: dict[str, Any]


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def steps_for_budget(cfg) -> int:
    t = cfg.train
    return max(1, math.ceil(t.tokens / (t.batch_size * t.seq_len)))


def lr_factor(step: int, total: int, t) -> float:
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
    fused = device.type == "cuda"
    params = [p for p in model.parameters() if p.requires_grad]
    return [torch.optim.AdamW(_decay_groups(params, t), lr=t.lr, betas=(t.beta1, t.beta2), fused=fused)]


@register_optimizer("muon")
def _muon(model, t, device):
    """Muon for hidden 2-D matrices, AdamW for embeddings, head and vectors (as the GAPT FineWeb runs)."""
    hidden, other = [], []
    for name, p in model.named_parameters():
        (hidden if p.dim() == 2 and "wte" not in name and "wpe" not in name and "lm_head" not in name else other).append(p)
    # adjust_lr_fn="match_rms_adamw" scales Muon's update to AdamW's RMS, so one train.lr serves both parts.
    muon = torch.optim.Muon(hidden, lr=t.lr, weight_decay=t.weight_decay, momentum=0.95, nesterov=True,
                            adjust_lr_fn="match_rms_adamw")
    adam = torch.optim.AdamW(other, lr=t.lr, betas=(t.beta1, t.beta2), weight_decay=0.0)
    return [muon, adam]


def resolve_precision(precision: str, device: torch.device) -> str:
    """What train.precision means on `device`: fp32, bf16 (autocast, fp32 weights) or bf16-weights."""
    return ("bf16" if device.type == "cuda" else "fp32") if precision == "auto" else precision


def autocast_context(device: torch.device, precision: str):
    if resolve_precision(precision, device) == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


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


def _truncate_curve(path: Path, rows: int) -> None:
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)[:rows]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(lines))
    os.replace(tmp, path)


def train_lm(model: torch.nn.Module, task, method, cfg, ctx: RunContext) -> TrainOutput:
    t = cfg.train
    device = ctx.device
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

    start, curve_rows, elapsed, align_log = 0, 0, 0.0, {"steps": [], "cos": []}
    ckpt_path = ctx.run_dir / CHECKPOINT
    if ctx.resume and ckpt_path.exists():
        state = load_checkpoint(ckpt_path, device)
        raw_model.load_state_dict(state["model"])
        for opt, s in zip(optimizers, state["optimizers"]):
            opt.load_state_dict(s)
        method.load_state_dict(state["method"])
        torch.set_rng_state(state["rng_cpu"])
        if device.type == "cuda" and state.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(state["rng_cuda"])
        start, curve_rows, elapsed, align_log = state["step"], state["curve_rows"], state["elapsed"], state["align"]
        if ctx.is_main:
            _truncate_curve(ctx.curve_path, curve_rows)
            ctx.log(f"resumed from step {start}/{total}")

    def checkpoint(step: int) -> None:
        """Fold the clock into `elapsed` (so a resumed run keeps its train time), then save on rank 0."""
        nonlocal elapsed, t0
        now = time.perf_counter()
        elapsed, t0 = elapsed + now - t0, now
        if not ctx.is_main:
            return
        _save_atomic({
            "model": raw_model.state_dict(), "optimizers": [o.state_dict() for o in optimizers],
            "method": method.state_dict(), "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state() if device.type == "cuda" else None,
            "step": step, "curve_rows": curve_rows, "elapsed": elapsed, "align": align_log,
        }, ckpt_path)

    curve = open(ctx.curve_path, "a") if ctx.is_main else None
    stop_reason = "budget"
    step = start
    # Throughput: timed from the end of the first few steps (compilation, CUDA warm-up) to the end of training.
    steady_from, steady_t0 = start + min(10, (total - start) // 5), None
    try:
        t0 = time.perf_counter()
        while step < total:
            if step == steady_from:
                _sync(device)
                steady_t0 = time.perf_counter()
            factor = lr_factor(step, total, t)
            for opt in optimizers:
                for g in opt.param_groups:
                    g["lr"] = t.lr * factor
            x, y = task.get_batch(step)
            x, y = x[ctx.rank::ctx.world_size], y[ctx.rank::ctx.world_size]
            micro = x.shape[0] // t.grad_accum
            infos, last_hidden, losses = [], None, []
            align_now, row_align = bool(cfg.align.every) and step % cfg.align.every == 0, {}
            for i in range(t.grad_accum):
                xb = x[i * micro:(i + 1) * micro].to(device, non_blocking=True)
                yb = y[i * micro:(i + 1) * micro].to(device, non_blocking=True)
                with autocast_context(device, t.precision):
                    logits, hidden = forward_with_hidden(model, xb)
                    ce = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), yb.reshape(-1), ignore_index=-100)
                    loss, info = method.loss(ce, hidden, step)
                # Under DDP a non-finite loss on one rank reaches every rank through the gradient all-reduce and
                # ends the run at the grad-norm test below; raising here alone would leave the others waiting.
                if ctx.world_size == 1 and not torch.isfinite(loss):
                    raise Diverged(step, f"loss is {float(loss)}")
                if align_now and i == t.grad_accum - 1:  # before backward frees the graph; .grad untouched
                    row_align = gradient_alignment(raw_model, ce, hidden, method.reg_layers_all(),
                                                   cfg.mbe.patch_size, cfg.mbe.alpha)
                    align_log["steps"].append(step)
                    align_log["cos"].append(row_align["align_cos"])
                sync = i == t.grad_accum - 1 or ctx.world_size == 1
                if ctx.world_size > 1 and not sync:
                    with model.no_sync():
                        (loss / t.grad_accum).backward()
                else:
                    (loss / t.grad_accum).backward()
                infos.append(info)
                losses.append(float(loss.detach()))
                last_hidden = hidden
            grad_norm = float(torch.nn.utils.clip_grad_norm_(raw_model.parameters(), t.grad_clip if t.grad_clip > 0 else float("inf")))
            if not math.isfinite(grad_norm) or grad_norm > t.diverge_grad_norm:
                raise Diverged(step, f"gradient norm {grad_norm:.3g}")
            for opt in optimizers:
                opt.step()
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
            # DDP: the gate and the curve see the global batch's CE/MBE; stopping is a collective decision.
            stop_now = distributed.mean_step_values(infos, losses, ctx.stop_requested()) if ctx.world_size > 1 else None
            method.observe(infos, step)
            step += 1
            if ctx.is_main and (step % t.log_every == 0 or step == total or row_align):
                row = _curve_row(step, step * tokens_per_step, infos, losses, last_hidden, cfg, t.lr * factor, grad_norm)
                row.update(row_align)
                curve.write(json.dumps(row) + "\n")
                curve.flush()
                curve_rows += 1
            if ctx.progress:
                ctx.progress(step, total)
            if t.eval_every and step % t.eval_every == 0 and step < total and _check(task, raw_model, step, ctx):
                stop_reason = "converged"
                break
            if ctx.checkpoint_every and step % ctx.checkpoint_every == 0 and step < total:
                checkpoint(step)
            if (ctx.stop_requested() if stop_now is None else stop_now):
                checkpoint(step)
                raise Interrupted(f"stopped at step {step}/{total}; checkpoint written")
        _sync(device)
        t_end = time.perf_counter()
        elapsed += t_end - t0
    finally:
        if curve is not None:
            curve.close()
    model.eval()
    summary: dict[str, Any] = {"train_time_s": elapsed, "steps_total": total}
    if steady_t0 is not None and step > steady_from:
        summary.update({"steady_time_s": t_end - steady_t0, "steady_tokens": (step - steady_from) * tokens_per_step})
    summary.update(cycle_stats(align_log["steps"], align_log["cos"]))
    return TrainOutput(model=raw_model, tokens=step * tokens_per_step, steps=step, stop_reason=stop_reason, summary=summary)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _check(task, model, step: int, ctx: RunContext) -> bool:
    """The task's convergence check; under DDP rank 0 decides for all, so no rank is left waiting."""
    decision = bool(task.check(model, step, ctx))
    return distributed.broadcast_object(decision) if ctx.world_size > 1 else decision


def _curve_row(step, tokens, infos, losses, hidden, cfg, lr, grad_norm) -> dict:
    ce = sum(i.ce for i in infos) / len(infos)
    row: dict[str, Any] = {"step": step, "tokens": tokens, "ce": ce, "loss": sum(losses) / len(losses), "lr": lr,
                           "grad_norm": grad_norm, "phase": infos[-1].phase}
    with torch.no_grad():
        mbe = [float(matrix_entropy(h.detach(), cfg.mbe.alpha, cfg.mbe.patch_size)) for h in hidden]
    row.update({f"mbe_layer_{i}": v for i, v in enumerate(mbe)})
    row["mbe"] = sum(mbe) / len(mbe)
    return row
