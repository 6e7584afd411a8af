"""Conflicting experience: forgetting and representation separation in a small MLP (gapt-paper.md section 3.c).

Setup (the author's `ce_exp.py` / later `forget.py`):
- Inputs in R^10 from two mirrored Gaussians: p1 has dimensions 0-4 ~ N(input_mean, input_std^2) and 5-9 ~
  N(0, input_std^2); p2 is the mirror image.
- A random teacher MLP theta0 (10 -> H -> O, ReLU; PyTorch's default uniform init) and a shift Delta: for each
  weight matrix W a rank-`shift_rank` product u v^T of Gaussians rescaled to ||W||_F * U(shift_scale), for each
  bias Gaussian noise rescaled to ||b|| * U(shift_scale); the whole shift is multiplied by `magnitude`.
- Group A: x ~ p1 with targets f(x; theta0 + Delta); group B: x ~ p2 with targets f(x; theta0 - Delta).
  `n_train` training and `n_val` held-out samples per group. Teacher, shift and samples come from `data_seed`
  (null = the run seed, so each seed is a fresh problem instance).
- The student is the same MLP architecture, trained with L1 loss and Adam (one optimizer across both phases).

Protocols (`protocol`): `mix->A` pretrains on both groups (half of each batch from each) for `steps_first` steps,
then fine-tunes on A only for `steps_second` steps (B is the group that can be forgotten); `A->B` trains on A,
then on B (A can be forgotten).

MBE: the hidden layer (after ReLU), with the batch as the sequence: the method sees one "layer" of shape
(1, batch, H) and takes patches of `mbe.patch_size` consecutive samples. Which samples share a patch therefore
matters, and is the option `batch_layout`: `grouped` orders a mixed batch as an A block then a B block (block sizes
are multiples of the patch, so each patch holds one group, as when half a batch is A and half B) and `shuffled`
permutes the batch so patches mix the groups. MBE pulls together what shares a patch, so the layout alone can
create separation: run both. Single-group batches are laid out the same way (a shuffle of one group changes no
patch's composition).

Pretraining (`pretrain`). `shared` (default, the author's later protocol): the first stage trains a plain-L1
student, identical for every arm of a seed; each arm then fine-tunes from those weights with a fresh Adam and the
method on, its regulariser using `finetune_patch_size` (32: the whole fine-tuning batch is one patch). So every
arm starts fine-tuning from the same model, and `alleviation_pct` measures only what the method did while
fine-tuning. `per_method` (round one's protocol): the method runs in both stages with one optimizer, so the
alleviation also contains what the method did during pretraining (seed 0 of the quick preset: -47% vs -9%).

Every method sees the same student initialisation (torch seeded with the run seed before the student is built)
and the same batches (drawn from explicit torch.Generators seeded by the run seed, never from the global RNG).

Metrics (on the held-out samples; `_pre` = at the end of the first phase, the others after the second):
- `separation` (and `separation_pre`) = ||mu_A - mu_B|| / sqrt(1/2 (E||h_A - mu_A||^2 + E||h_B - mu_B||^2)).
- `l1_a`, `l1_b`, `l1_a_pre`, `l1_b_pre`: mean absolute error per group.
- `retained_l1`, `finetuned_l1`: after the second phase, the L1 of the group it left out (what was retained) and
  of the group it trained on: the practitioner's quality, the task's primary metrics.
- `forgetting`: increase of the forgettable group's L1 over the second phase (this run).
- `alleviation_pct` = (L1f_base - L1f_method) / (L1f_base - L1f_base_pre) * 100, with L1f the forgettable group's
  L1 after the second phase and L1f_base_pre the baseline's before it (with shared pretraining: the shared
  model's). The baseline is an L1-only student trained inside the same run with the same seed, initialisation
  and batches, so the metric needs no other run; for the baseline arm it is 0 by construction. Its numbers are in
  the record's summary (`ref_*`).
- `specialization`: fraction of hidden units whose selectivity |(m_A - m_B) / (m_A + m_B)| exceeds 0.5 (m = mean
  activation per group; a unit silent on both groups has selectivity 0).
- `mbe`: MBE of the held-out hidden states with group-pure patches (the A samples, then the B samples);
  `mbe_centered`: the same with centred patches (the collapse control); `mbe_mixed`: patches mixing the groups (a
  fixed shuffle).
The curve (`curve.jsonl`) has one row every `log_every` steps: step, tokens (samples seen), ce (the L1 loss),
loss, phase (the method's gate phase), stage (1 or 2: the protocol's phase) and mbe (of that step's batch).
Runs on the CPU whatever `train.device` says: the model is tiny.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from gapt_bench.config import ConfigError, opt
from gapt_bench.measures.entropy import matrix_entropy
from gapt_bench.tasks.base import Task, TaskResult, register_task
from gapt_bench.training.runtime import Diverged

if TYPE_CHECKING:
    from gapt_bench.config import RunConfig

INPUT_DIM = 10
GROUP_A, GROUP_B = 0, 1
PROTOCOLS = {"mix->A": ((GROUP_A, GROUP_B), (GROUP_A,)), "A->B": ((GROUP_A,), (GROUP_B,))}


@dataclass
class ForgettingOptions:
    protocol: str = opt(
        "mix->A",
        "mix->A: pretrain on both groups, fine-tune on A (forgetting B); A->B: sequential",
        choices=tuple(PROTOCOLS),
    )
    batch_layout: str = opt(
        "grouped",
        "grouped: each MBE patch holds one group (A block then B block); shuffled: patches mix the groups",
        choices=("grouped", "shuffled"),
    )
    hidden: int = opt(20, "H: hidden units (paper 50, later config 20)", min=1)
    outputs: int = opt(10, "O: outputs (paper 1, later config 10)", min=1)
    input_mean: float = opt(1.0, "mean of the active half of the input dimensions (the other half has mean 0)")
    input_std: float = opt(0.25, "standard deviation of every input dimension", min=0.0)
    shift_rank: int = opt(3, "rank of the weight shift Delta", min=1)
    shift_scale: list[float] = opt([0.5, 5.0], "Delta's norm is ||W|| times U(lo, hi), per weight matrix and bias")
    magnitude: float = opt(1.0, "multiplier on Delta (later code sweeps 0.1-1.0)", min=0.0)
    n_train: int = opt(500, "training samples per group", min=1)
    n_val: int = opt(100, "held-out samples per group (all metrics)", min=8)
    steps_first: int = opt(1000, "optimizer steps of the first phase", min=1)
    steps_second: int = opt(1000, "optimizer steps of the second phase", min=1)
    batch_size: int = opt(32, "samples per micro-batch (a multiple of the MBE patch; of 2 patches for mix)", min=1)
    grad_accum: int = opt(1, "micro-batches per optimizer step (later protocol: 32)", min=1)
    lr: float = opt(0.01, "Adam learning rate", min=0.0)
    pretrain: str = opt(
        "shared",
        "shared: the first stage trains a plain-L1 student once per seed and every arm "
        "fine-tunes from it with a fresh Adam (the author's later protocol); per_method: "
        "the method runs in both stages with one optimizer (round one)",
        choices=("shared", "per_method"),
    )
    finetune_patch_size: int | None = opt(
        32,
        "MBE patch of the regulariser while fine-tuning (shared pretraining; "
        "the author's later protocol: 32); null = mbe.patch_size",
        min=2,
    )
    data_seed: int | None = opt(None, "teacher, shift and samples seed; null = the run seed")
    log_every: int = opt(10, "steps between curve rows", min=1)


# ----------------------------------------------------------------------------------------------------------------
# Problem construction


def _uniform(shape, bound: float, g: torch.Generator) -> torch.Tensor:
    return (torch.rand(shape, generator=g) * 2 - 1) * bound


def teacher_params(hidden: int, outputs: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """A random MLP with PyTorch's default Linear init (uniform, bound 1/sqrt(fan_in))."""
    b1, b2 = 1 / math.sqrt(INPUT_DIM), 1 / math.sqrt(hidden)
    return {
        "w1": _uniform((hidden, INPUT_DIM), b1, g),
        "b1": _uniform((hidden,), b1, g),
        "w2": _uniform((outputs, hidden), b2, g),
        "b2": _uniform((outputs,), b2, g),
    }


def shift_params(
    theta: dict[str, torch.Tensor], rank: int, scale: Sequence[float], magnitude: float, g: torch.Generator
) -> dict[str, torch.Tensor]:
    """Delta: rank-`rank` Gaussian products for matrices, Gaussian noise for biases, norm ||p|| * U(scale)."""
    lo, hi = scale
    out = {}
    for name, p in theta.items():
        if p.dim() == 2:
            d = torch.randn((p.shape[0], rank), generator=g) @ torch.randn((rank, p.shape[1]), generator=g)
        else:
            d = torch.randn(p.shape, generator=g)
        target = p.norm() * (lo + (hi - lo) * torch.rand((), generator=g))
        out[name] = magnitude * d * (target / d.norm().clamp_min(1e-12))
    return out


def mlp(x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    return F.relu(x @ p["w1"].T + p["b1"]) @ p["w2"].T + p["b2"]


def sample_inputs(n: int, group: int, mean: float, std: float, g: torch.Generator) -> torch.Tensor:
    """p1 (group A): dims 0-4 ~ N(mean, std^2), 5-9 ~ N(0, std^2); p2 (group B): the mirror image."""
    mu = torch.zeros(INPUT_DIM)
    half = INPUT_DIM // 2
    if group == GROUP_A:
        mu[:half] = mean
    else:
        mu[half:] = mean
    return mu + std * torch.randn((n, INPUT_DIM), generator=g)


@dataclass
class Problem:
    x: tuple[torch.Tensor, torch.Tensor]  # training inputs of A, B
    y: tuple[torch.Tensor, torch.Tensor]
    x_val: tuple[torch.Tensor, torch.Tensor]
    y_val: tuple[torch.Tensor, torch.Tensor]


def make_problem(d: ForgettingOptions, seed: int) -> Problem:
    g = torch.Generator().manual_seed(7_919 * seed + 104_729)
    theta = teacher_params(d.hidden, d.outputs, g)
    delta = shift_params(theta, d.shift_rank, d.shift_scale, d.magnitude, g)
    plus = {k: theta[k] + delta[k] for k in theta}
    minus = {k: theta[k] - delta[k] for k in theta}
    xs, ys = [], []
    for n in (d.n_train, d.n_val):
        xa = sample_inputs(n, GROUP_A, d.input_mean, d.input_std, g)
        xb = sample_inputs(n, GROUP_B, d.input_mean, d.input_std, g)
        xs.append((xa, xb))
        ys.append((mlp(xa, plus), mlp(xb, minus)))
    return Problem(x=xs[0], y=ys[0], x_val=xs[1], y_val=ys[1])


def build_batch(
    groups: Sequence[int], batch_size: int, layout: str, n_per_group: int, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample indices and group labels of one batch, in the order the MBE patches will see them.

    Each group in `groups` contributes batch_size / len(groups) samples (without replacement within the batch).
    `grouped`: blocks in group order; `shuffled`: a random permutation of the whole batch.
    Returns (index within its group, group label), both (batch_size,).
    """
    k = batch_size // len(groups)
    idx = torch.cat([torch.randperm(n_per_group, generator=g)[:k] for _ in groups])
    lab = torch.cat([torch.full((k,), grp, dtype=torch.long) for grp in groups])
    if layout == "shuffled":
        perm = torch.randperm(len(idx), generator=g)
        idx, lab = idx[perm], lab[perm]
    return idx, lab


# ----------------------------------------------------------------------------------------------------------------
# Metrics


def separation(ha: torch.Tensor, hb: torch.Tensor) -> float:
    """||mu_A - mu_B|| / sqrt(1/2 (E||h_A - mu_A||^2 + E||h_B - mu_B||^2)); 0 when the means coincide."""
    ha, hb = ha.double(), hb.double()
    mu_a, mu_b = ha.mean(0), hb.mean(0)
    between = float((mu_a - mu_b).norm())
    within = 0.5 * (float((ha - mu_a).pow(2).sum(1).mean()) + float((hb - mu_b).pow(2).sum(1).mean()))
    if between == 0.0:
        return 0.0
    return between / math.sqrt(within) if within > 0 else math.inf


def specialization(ha: torch.Tensor, hb: torch.Tensor, threshold: float = 0.5) -> float:
    """Fraction of units with |(m_A - m_B) / (m_A + m_B)| > threshold (activations are >= 0 after ReLU)."""
    ma, mb = ha.double().mean(0), hb.double().mean(0)
    denom = ma + mb
    sel = torch.where(denom.abs() > 1e-12, (ma - mb).abs() / denom.abs().clamp_min(1e-12), torch.zeros_like(ma))
    return float((sel > threshold).double().mean())


class Student(nn.Module):
    def __init__(self, hidden: int, outputs: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(INPUT_DIM, hidden)
        self.fc2 = nn.Linear(hidden, outputs)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.relu(self.fc1(x))
        return self.fc2(h), h


class StackedStudents(nn.Module):
    """k students as one model, each weight with a leading member dimension: one batched matmul and one Adam step
    for all k (batched seeds). Members never mix: a member's forward, gradient and Adam update are its own, and on
    this CPU they equal the lone student's bit for bit (tests/test_batched_seeds.py)."""

    def __init__(self, students: Sequence[Student]) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.stack([s.fc1.weight.detach() for s in students]).clone())  # (k, H, 10)
        self.b1 = nn.Parameter(torch.stack([s.fc1.bias.detach() for s in students]).clone())  # (k, H)
        self.w2 = nn.Parameter(torch.stack([s.fc2.weight.detach() for s in students]).clone())  # (k, O, H)
        self.b2 = nn.Parameter(torch.stack([s.fc2.bias.detach() for s in students]).clone())  # (k, O)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (k, batch, 10) -> outputs (k, batch, O), hidden (k, batch, H)."""
        h = F.relu(torch.baddbmm(self.b1.unsqueeze(1), x, self.w1.transpose(1, 2)))
        return torch.baddbmm(self.b2.unsqueeze(1), h, self.w2.transpose(1, 2)), h

    def member(self, i: int) -> Student:
        """Member i as a lone Student (a copy)."""
        student = Student(self.w1.shape[1], self.w2.shape[1])
        student.load_state_dict(self.member_state(i))
        return student

    def member_state(self, i: int) -> dict[str, torch.Tensor]:
        """Member i's weights as a Student's state dict (copies)."""
        w = {"fc1.weight": self.w1, "fc1.bias": self.b1, "fc2.weight": self.w2, "fc2.bias": self.b2}
        return {k: v[i].detach().clone() for k, v in w.items()}


@dataclass
class _Lane:
    """One member of a trained group: its run's config (seed), problem, curve file and progress report."""

    cfg: RunConfig
    prob: Problem
    progress: Callable[..., None] | None = None
    curve: IO[str] | None = None
    done: int = 0

    def tick(self, total: int | None) -> None:
        """One optimizer step done, of the run's planned steps (the progress display)."""
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, total)


@dataclass
class Snapshot:
    l1: tuple[float, float]
    separation: float
    specialization: float
    mbe: float
    mbe_centered: float
    mbe_mixed: float


# ----------------------------------------------------------------------------------------------------------------
# The task


@register_task("forgetting_separation")
class ForgettingSeparation(Task):
    version = "2"  # 2: shared pretraining is the default protocol
    description = "MLP on conflicting groups: forgetting of the first experience and hidden-layer separation"
    Options = ForgettingOptions
    metrics: ClassVar[dict[str, str]] = {
        "separation": "max",
        "separation_pre": "max",
        "l1_a": "min",
        "l1_b": "min",
        "l1_a_pre": "min",
        "l1_b_pre": "min",
        "forgetting": "min",
        "alleviation_pct": "max",
        "specialization": "max",
        "mbe": "min",
        "mbe_centered": "min",
        "mbe_mixed": "min",
        "retained_l1": "min",
        "finetuned_l1": "min",
    }
    primary = ("retained_l1", "finetuned_l1")
    ignored_sections = ("model", "train")  # the MLP's sizes, steps, batch and lr are data.* options
    batchable = True  # run_group trains a group of seeds as one StackedStudents

    @classmethod
    def plan_summary(cls, cfg) -> str:
        d = cfg.data
        return (
            f"MLP 10->{d.hidden}->{d.outputs} protocol={d.protocol} layout={d.batch_layout} "
            f"steps={d.steps_first}+{d.steps_second} batch={d.batch_size}x{d.grad_accum}"
        )

    @classmethod
    def finalize(cls, cfg) -> None:
        d, p = cfg.data, cfg.mbe.patch_size
        if len(d.shift_scale) != 2 or not 0 <= d.shift_scale[0] <= d.shift_scale[1]:
            raise ConfigError(f"data.shift_scale={d.shift_scale} must be [lo, hi] with 0 <= lo <= hi")
        mixes = any(len(groups) > 1 for groups in PROTOCOLS[d.protocol])
        unit = 2 * p if mixes else p
        if d.batch_size % unit:
            what = "two MBE patches (one block per group)" if mixes else "the MBE patch"
            raise ConfigError(
                f"data.batch_size={d.batch_size} is not a multiple of {what} ({unit} for "
                f"mbe.patch_size={p}); change data.batch_size"
            )
        if d.batch_size // (2 if mixes else 1) > d.n_train:
            raise ConfigError(
                f"data.batch_size={d.batch_size} needs more samples per group than data.n_train={d.n_train}"
            )
        if d.n_val < p:
            raise ConfigError(f"data.n_val={d.n_val} is below mbe.patch_size={p}")
        ft = d.finetune_patch_size or p
        if d.pretrain == "shared" and d.batch_size % ft:
            raise ConfigError(
                f"data.batch_size={d.batch_size} is not a multiple of data.finetune_patch_size={ft} "
                "(the regulariser's patch while fine-tuning); change one of them"
            )

    @classmethod
    def planned_steps(cls, cfg) -> int | None:
        """Both stages, plus the in-run plain-L1 arm that a method other than the baseline is measured against
        (its fine-tuning only when the pretraining is shared)."""
        d = cfg.data
        own = d.steps_first + d.steps_second
        if cfg.method == "baseline":
            return own
        return own + (d.steps_second if d.pretrain == "shared" else own)

    # -- training ----------------------------------------------------------------------------------------------
    # Every stage trains a group of members as one StackedStudents: the seeds of a batched group (run_group), or
    # one member (run). A member is a run: its own config (seed), problem, method, batch generator and curve.

    def _steps(
        self,
        model: StackedStudents,
        opt,
        lanes: Sequence[_Lane],
        methods: Sequence,
        stage: int,
        n_steps: int,
        gens: Sequence[torch.Generator],
        step0: int,
        curves: bool = True,
    ) -> None:
        """`n_steps` optimizer steps of protocol stage `stage` (0: the first groups, 1: the second) for every member;
        a member's method None is plain L1 (the in-run baseline). Member i's batches come from its explicit
        generator gens[i]. A non-finite loss of any member raises Diverged."""
        cfg, d = self.cfg, self.cfg.data
        groups = PROTOCOLS[d.protocol][stage]
        total = d.steps_first + d.steps_second
        samples_per_step = d.batch_size * d.grad_accum
        k = len(lanes)
        planned = [self.planned_steps(lane.cfg) for lane in lanes]
        for step in range(step0, step0 + n_steps):
            infos: list[list] = [[] for _ in range(k)]
            losses: list[list[float]] = [[] for _ in range(k)]
            ce_sum = [0.0] * k
            last_h = None
            for _ in range(d.grad_accum):
                xs, ys = [], []
                for lane, g in zip(lanes, gens):
                    idx, lab = build_batch(groups, d.batch_size, d.batch_layout, d.n_train, g)
                    in_a = (lab == GROUP_A)[:, None]
                    xs.append(torch.where(in_a, lane.prob.x[0][idx], lane.prob.x[1][idx]))
                    ys.append(torch.where(in_a, lane.prob.y[0][idx], lane.prob.y[1][idx]))
                out, h = model(torch.stack(xs))
                l1 = (out - torch.stack(ys)).abs().mean((1, 2))  # per member: F.l1_loss's mean
                member_losses = []
                for i, method in enumerate(methods):
                    if method is None:
                        loss_i = l1[i]
                    else:
                        loss_i, info = method.loss(l1[i], [h[i].reshape(1, d.batch_size, d.hidden)], step)
                        infos[i].append(info)
                    if not torch.isfinite(loss_i):
                        raise Diverged(
                            step, f"loss is {float(loss_i)}" + (f" (seed {lanes[i].cfg.seed})" if k > 1 else "")
                        )
                    member_losses.append(loss_i)
                (sum(member_losses) / d.grad_accum).backward()
                for i, method in enumerate(methods):
                    if method is not None:
                        method.observe_micro(infos[i][-1], step)
                    losses[i].append(float(member_losses[i].detach()))
                    ce_sum[i] += float(l1[i].detach())
                last_h = h.detach()
            opt.step()
            opt.zero_grad(set_to_none=True)
            for i, (lane, method) in enumerate(zip(lanes, methods)):
                lane.tick(planned[i])
                if method is not None:
                    method.observe(infos[i], step)
                if curves and lane.curve is not None and ((step + 1) % d.log_every == 0 or step + 1 == total):
                    row = {
                        "step": step + 1,
                        "tokens": (step + 1) * samples_per_step,
                        "ce": ce_sum[i] / d.grad_accum,
                        "loss": sum(losses[i]) / len(losses[i]),
                        "phase": infos[i][-1].phase if infos[i] else None,
                        "stage": stage + 1,
                        "mbe": float(
                            matrix_entropy(
                                last_h[i].reshape(1, d.batch_size, d.hidden), cfg.mbe.alpha, cfg.mbe.patch_size
                            )
                        ),
                    }
                    lane.curve.write(json.dumps(row) + "\n")

    def _students(self, lanes: Sequence[_Lane]) -> tuple[StackedStudents, torch.optim.Optimizer, list]:
        """The members' students (each built right after torch is seeded with its run seed), one Adam over them,
        and each member's batch generator: a member's are the same for every method of its seed."""
        students, gens = [], []
        for lane in lanes:
            torch.manual_seed(lane.cfg.seed)
            students.append(Student(self.cfg.data.hidden, self.cfg.data.outputs))
            gens.append(torch.Generator().manual_seed(1_000_003 * lane.cfg.seed + 12_345))
        model = StackedStudents(students)
        return model, torch.optim.Adam(model.parameters(), lr=self.cfg.data.lr), gens

    def _train_per_method(
        self, lanes: Sequence[_Lane], methods: Sequence, curves: bool = True
    ) -> tuple[StackedStudents, list[Snapshot], list[Snapshot]]:
        """pretrain=per_method (round one's protocol): the method in both stages, one optimizer throughout."""
        d = self.cfg.data
        model, opt, gens = self._students(lanes)
        self._steps(model, opt, lanes, methods, 0, d.steps_first, gens, 0, curves)
        pre = self._snapshots(model, lanes)
        self._steps(model, opt, lanes, methods, 1, d.steps_second, gens, d.steps_first, curves)
        return model, pre, self._snapshots(model, lanes)

    def _pretrain_shared(self, lanes: Sequence[_Lane]) -> tuple[list[dict], list[Snapshot]]:
        """pretrain=shared: stage 1 with plain L1, identical for every arm of a seed; its weights and snapshot."""
        model, opt, gens = self._students(lanes)
        self._steps(model, opt, lanes, [None] * len(lanes), 0, self.cfg.data.steps_first, gens, 0)
        return [model.member_state(i) for i in range(len(lanes))], self._snapshots(model, lanes)

    def _finetune(
        self, starts: Sequence[dict], lanes: Sequence[_Lane], methods: Sequence, curves: bool = True
    ) -> tuple[StackedStudents, list[Snapshot]]:
        """pretrain=shared: stage 2 from the shared weights with a fresh optimizer and the fine-tuning batches."""
        d = self.cfg.data
        students = []
        for start in starts:
            student = Student(d.hidden, d.outputs)
            student.load_state_dict(start)
            students.append(student)
        model = StackedStudents(students)
        opt = torch.optim.Adam(model.parameters(), lr=d.lr)
        gens = [torch.Generator().manual_seed(1_000_003 * lane.cfg.seed + 54_321) for lane in lanes]
        self._steps(model, opt, lanes, methods, 1, d.steps_second, gens, d.steps_first, curves)
        return model, self._snapshots(model, lanes)

    def _snapshots(self, model: StackedStudents, lanes: Sequence[_Lane]) -> list[Snapshot]:
        return [self.snapshot(model.member(i), lane.prob) for i, lane in enumerate(lanes)]

    @torch.no_grad()
    def snapshot(self, model: Student, prob: Problem) -> Snapshot:
        m = self.cfg.mbe
        (oa, ha), (ob, hb) = model(prob.x_val[0]), model(prob.x_val[1])
        l1 = (float(F.l1_loss(oa, prob.y_val[0])), float(F.l1_loss(ob, prob.y_val[1])))
        n = (len(ha) // m.patch_size) * m.patch_size
        pure = torch.cat([ha[:n], hb[:n]])[None]
        mixed = pure[:, torch.randperm(2 * n, generator=torch.Generator().manual_seed(0))]
        return Snapshot(
            l1=l1,
            separation=separation(ha, hb),
            specialization=specialization(ha, hb),
            mbe=float(matrix_entropy(pure, m.alpha, m.patch_size)),
            mbe_centered=float(matrix_entropy(pure, m.alpha, m.patch_size, centered=True)),
            mbe_mixed=float(matrix_entropy(mixed, m.alpha, m.patch_size)),
        )

    def run(self, method_cls: type, ctx) -> TaskResult:
        return self.run_group(method_cls, [self.cfg], [ctx])[0]

    def run_group(self, method_cls: type, cfgs: Sequence, ctxs: Sequence) -> list[TaskResult]:
        """Train runs that differ only in their seed as one batched model (see Task.run_group); one run is a group
        of one. A member's numbers are those of its run trained alone."""
        d = self.cfg.data
        lanes = [
            _Lane(cfg, make_problem(d, cfg.seed if d.data_seed is None else d.data_seed), ctx.progress)
            for cfg, ctx in zip(cfgs, ctxs)
        ]
        t0 = time.perf_counter()
        baseline_arm = getattr(method_cls, "name", "") == "baseline"
        with contextlib.ExitStack() as files:
            for lane, ctx in zip(lanes, ctxs):
                lane.curve = files.enter_context(open(ctx.curve_path, "w"))
            if d.pretrain == "shared":
                starts, pre = self._pretrain_shared(lanes)
                methods = []
                for lane, ctx in zip(lanes, ctxs):
                    ft_cfg = copy.deepcopy(lane.cfg)  # the regulariser's patch during fine-tuning (the author's 32)
                    ft_cfg.mbe.patch_size = d.finetune_patch_size or lane.cfg.mbe.patch_size
                    methods.append(method_cls(ft_cfg, 1, matched=ctx.matched))
                model, post = self._finetune(starts, lanes, methods)
            else:
                methods = [method_cls(lane.cfg, 1, matched=ctx.matched) for lane, ctx in zip(lanes, ctxs)]
                model, pre, post = self._train_per_method(lanes, methods)
        elapsed = time.perf_counter() - t0
        plain = [None] * len(lanes)
        if baseline_arm:
            ref_pre, ref_post = pre, post
        elif d.pretrain == "shared":
            ref_pre, (_, ref_post) = pre, self._finetune(starts, lanes, plain, curves=False)
        else:
            _, ref_pre, ref_post = self._train_per_method(lanes, plain, curves=False)
        results = []
        for i, ctx in enumerate(ctxs):
            result = self._result(pre[i], post[i], ref_pre[i], ref_post[i], methods[i], elapsed / len(lanes))
            result.summary["batch_members"] = len(lanes)
            if self.cfg.train.save_model:
                self.save_model(model.member(i), ctx)
            results.append(result)
        return results

    def _result(self, pre: Snapshot, post: Snapshot, ref_pre: Snapshot, ref_post: Snapshot, method, elapsed: float):
        """A member's metrics and summary; `elapsed` is its share of the group's training time."""
        cfg, d = self.cfg, self.cfg.data
        forget = 1 if d.protocol == "mix->A" else 0  # index of the group that can be forgotten
        ref_forgetting = ref_post.l1[forget] - ref_pre.l1[forget]
        alleviation = (
            (ref_post.l1[forget] - post.l1[forget]) / ref_forgetting * 100
            if abs(ref_forgetting) > 1e-12
            else float("nan")
        )
        metrics = {
            "separation": post.separation,
            "separation_pre": pre.separation,
            "l1_a": post.l1[0],
            "l1_b": post.l1[1],
            "l1_a_pre": pre.l1[0],
            "l1_b_pre": pre.l1[1],
            "forgetting": post.l1[forget] - pre.l1[forget],
            "alleviation_pct": alleviation,
            "retained_l1": post.l1[forget],
            "finetuned_l1": post.l1[1 - forget],
            "specialization": post.specialization,
            "mbe": post.mbe,
            "mbe_centered": post.mbe_centered,
            "mbe_mixed": post.mbe_mixed,
        }
        total = d.steps_first + d.steps_second
        summary = {
            **method.summary(),
            "train_time_s": elapsed,
            "steps_total": total,
            "pretrain": d.pretrain,
            "finetune_patch_size": (d.finetune_patch_size or cfg.mbe.patch_size)
            if d.pretrain == "shared"
            else cfg.mbe.patch_size,
            "ref_l1_forgotten_pre": ref_pre.l1[forget],
            "ref_l1_forgotten_post": ref_post.l1[forget],
            "ref_separation": ref_post.separation,
        }
        n_params = (INPUT_DIM + 1) * d.hidden + (d.hidden + 1) * d.outputs
        return TaskResult(
            metrics=metrics, n_params=n_params, tokens=total * d.batch_size * d.grad_accum, steps=total, summary=summary
        )
