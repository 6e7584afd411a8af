"""Typed run configuration: dataclasses, YAML presets, `--set a.b=value` overrides and validation.

A run is fully described by one `RunConfig`. Sections shared by every arm of a comparison (`model`, `train`,
`mbe`, `data`) form the *setup*; `reg` and `gapt` only matter to the methods that read them. Every option that
settles an ambiguity of the papers is a field here (with its choices in the field metadata) and lands in the
run record, so two results can be compared knowing exactly what each measured.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import typing
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """A bad config value, key or preset. str() is a one-line message naming the problem and the fix."""


def opt(
    default: Any,
    help: str,
    choices: tuple | None = None,
    min: float | None = None,
    max: float | None = None,
    max_open: bool = False,
    allow_inf: bool = False,
) -> Any:
    """A dataclass field carrying its own documentation and validation rules: allowed choices, a closed lower
    bound, an upper bound (open with `max_open`). Numbers must be finite unless `allow_inf`; NaN never passes."""
    meta = {"help": help, "choices": choices, "min": min, "max": max, "max_open": max_open, "allow_inf": allow_inf}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    family: str = opt(
        "gpt2",
        "gpt2: learned positions, LayerNorm, GELU MLP (GPT2LMHeadModel); llama: rotary positions, RMSNorm, gated "
        "SiLU MLP (LlamaForCausalLM), the kind of model the GAPT author trained",
        choices=("gpt2", "llama"),
    )
    n_layer: int = opt(2, "transformer blocks", min=1)
    n_embd: int = opt(64, "model width d", min=1)
    n_head: int = opt(4, "attention heads (must divide n_embd)", min=1)
    vocab_size: int = opt(0, "vocabulary size V; 0 = the task's", min=0)
    n_positions: int = opt(
        0, "positions S (learned for gpt2; llama's rotary limit); 0 = the task's sequence length", min=0
    )
    intermediate_size: int = opt(0, "llama: gated MLP width; 0 = 4 * n_embd (gpt2's MLP is always 4 * n_embd)", min=0)
    rope_theta: float = opt(10000.0, "llama: rotary base frequency", min=1.0)
    tie_embeddings: bool = opt(True, "share the input embedding and the output head (the capacity paper's count)")
    dropout: float = opt(
        0.0, "dropout everywhere (GPT-2 default 0.1 slows CPU steps 1.3-1.5x)", min=0.0, max=1.0, max_open=True
    )


@dataclass
class TrainConfig:
    tokens: int = opt(1_000_000, "training budget in tokens: the unit of fairness between arms", min=1)
    batch_size: int = opt(32, "sequences per optimizer step, identical for every method", min=1)
    seq_len: int = opt(64, "tokens per training sequence", min=2)
    grad_accum: int = opt(1, "micro-batches per optimizer step (batch_size must divide evenly)", min=1)
    optimizer: str = opt("adamw", "optimizer", choices=("adamw", "adam", "muon"))
    lr: float = opt(3e-3, "peak learning rate", min=0.0)
    schedule: str = opt("cosine", "lr schedule after warmup", choices=("cosine", "constant", "linear_cooldown"))
    warmup_steps: int = opt(50, "linear warmup steps", min=0)
    min_lr_ratio: float = opt(0.1, "final lr as a fraction of the peak", min=0.0, max=1.0)
    cooldown_frac: float = opt(0.4, "linear_cooldown: fraction of steps spent cooling down", min=0.0, max=1.0)
    weight_decay: float = opt(0.0, "AdamW weight decay", min=0.0)
    beta1: float = opt(0.9, "Adam beta1", min=0.0, max=1.0, max_open=True)
    beta2: float = opt(0.95, "Adam beta2", min=0.0, max=1.0, max_open=True)
    grad_clip: float = opt(1.0, "clip the global grad norm to this; 0 = off", min=0.0)
    diverge_grad_norm: float = opt(
        1e6, "a pre-clip grad norm above this ends the run as diverged (inf or .inf = never)", min=0.0, allow_inf=True
    )
    device: str = opt("auto", "auto (cuda if available), cpu or cuda[:i]")
    precision: str = opt(
        "auto",
        "auto = bf16 autocast on CUDA, fp32 on CPU; bf16-weights keeps the parameters in bf16",
        choices=("auto", "fp32", "bf16", "bf16-weights"),
    )
    compile: bool = opt(False, "torch.compile the model (CUDA; slower on CPU)")
    fused: str = opt("auto", "fused AdamW kernel: auto (on CUDA), always or never", choices=("auto", "always", "never"))
    threads: int = opt(1, "torch CPU threads per run (one per parallel worker)", min=1)
    log_every: int = opt(10, "steps between training-curve rows", min=1)
    save_model: bool = opt(
        False, "save the trained model in the run folder (runs/<id>/model/: a transformers folder, safetensors)"
    )
    eval_every: int = opt(0, "steps between task checks on training-side data (0 = end only)", min=0)
    batched: bool = opt(
        True, "train this run with the other seeds of its config as one batched model where the task supports it"
    )


@dataclass
class MBEConfig:
    """How matrix-based entropy is measured (shared by every arm: the baseline's MBE is measured the same way)."""

    alpha: float = opt(2.0, "Renyi order; 2 = closed form, 1 = von Neumann", min=0.0)
    patch_size: int = opt(8, "tokens per patch P (the paper's 8)", min=2)
    eval_batches: int = opt(4, "validation batches for per-layer MBE", min=1)


@dataclass
class RegConfig:
    """The MBE regularizer used by the mbe, gapt and periodic methods."""

    weight: float = opt(1.0, "lambda: loss = CE + lambda * MBE_agg in the compression phase", min=0.0)
    layers: str = opt(
        "middle",
        "regularised layers: all; middle (1..L-2, the later code); rotate (one middle layer per step); "
        "rotate_rr (one of 2..L-3 per step, the May-2025 RRScheduler)",
        choices=("all", "middle", "rotate", "rotate_rr"),
    )
    centered: bool = opt(False, "regularise the centred MBE (the collapse control) instead of the paper's uncentred")
    step_mode: str = opt(
        "sum",
        "compression step: sum = CE + lambda*MBE on the same batch (later code); alternate = "
        "whole optimizer steps alternate between CE only and lambda*MBE only (May-2025)",
        choices=("sum", "alternate"),
    )


@dataclass
class GAPTConfig:
    """The phase gate. Defaults are the May-2025 code's values (gapt-paper.md section 2.2)."""

    delta_e: float = opt(0.01, "CE improvement that resets the memorization patience", min=0.0)
    delta_m: float = opt(0.002, "MBE improvement (any layer) that resets the compression patience", min=0.0)
    patience_m: int = opt(125, "p_m: steps without CE improvement before compressing", min=1)
    patience_c: int = opt(125, "p_c: steps without MBE improvement before memorizing again", min=1)
    tau: float = opt(0.1, "spike tolerance: CE above (1+tau)*E_min ends compression", min=0.0)
    thresholds: str = opt(
        "absolute",
        "absolute deltas (May-2025) or relative to the minimum (later code)",
        choices=("absolute", "relative"),
    )
    spike_reference: str = opt(
        "phase", "E_min for the spike test: within the compression phase, or global", choices=("phase", "global")
    )
    patience_unit: str = opt(
        "step", "count patience in optimizer steps, or in micro-batches (later code)", choices=("step", "micro_batch")
    )
    smoothing: float = opt(
        0.0, "EMA factor on the gate inputs; 0 = raw last value (paper)", min=0.0, max=1.0, max_open=True
    )
    initial_phase: int = opt(1, "phase at step 0", choices=(1, 2))
    watch: str = opt(
        "regularised",
        "layers whose MBE the gate reads: the regularised ones, or all layers (the "
        "May-2025 scheduler received every layer's MBE)",
        choices=("regularised", "all"),
    )
    mbe_min_reset: bool = opt(
        True, "reset M_min on every phase switch (May-2025); false: never reset, tracked in phase 1 too (later code)"
    )
    first_gain: str = opt(
        "improvement",
        "the first observation of CE or MBE counts as an improvement (May-2025) or scores gain 0 (later code)",
        choices=("improvement", "zero"),
    )
    mbe_aggregate: str = opt(
        "best_layer",
        "MBE improvement: the best gain over the watched layers (May-2025) or the gain of their mean (later code)",
        choices=("best_layer", "mean"),
    )


@dataclass
class PeriodicConfig:
    """The periodic control: the gate's two phases on a fixed schedule."""

    match: str = opt(
        "gapt",
        "gapt: copy the duty cycle and mean compression-phase length of the gapt run of the same "
        "task, setup and seed (it must run first and finish ok); none: p_m then p_c from "
        "gapt.patience_*; lengths in micro-batches (methods/periodic.py)",
        choices=("gapt", "none"),
    )


@dataclass
class AlignConfig:
    every: int = opt(0, "steps between CE/MBE gradient-cosine measurements (0 = off)", min=0)


# The one definition of what two arms of a comparison share (the setup) and what only some methods read. Each
# method declares which METHOD_SECTIONS it reads (`Method.config_sections`); only those enter its config hash.
SETUP_SECTIONS = ("data", "model", "train", "mbe")
METHOD_SECTIONS = ("reg", "gapt", "periodic")
# Measured alongside training, never changing it (gradient alignment uses autograd.grad): in no hash.
DIAGNOSTIC_SECTIONS = ("align",)
# Execution-only fields: they change how fast a run goes or what it leaves on disk, not what it measures.
EXECUTION_FIELDS = {"train": ("threads", "log_every", "compile", "fused", "save_model", "batched")}


@dataclass
class RunConfig:
    task: str
    method: str
    seed: int
    preset: str
    data: Any  # the task's own Options dataclass
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    mbe: MBEConfig = field(default_factory=MBEConfig)
    reg: RegConfig = field(default_factory=RegConfig)
    gapt: GAPTConfig = field(default_factory=GAPTConfig)
    periodic: PeriodicConfig = field(default_factory=PeriodicConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    about: dict = field(default_factory=dict)  # the preset's `about:` block (variant, deviations): not science
    # The METHOD_SECTIONS the method reads (`Method.config_sections`), set where the plan is resolved: only these
    # enter the config hash. Not part of the recorded config (to_dict leaves it out).
    method_sections: tuple = field(default=METHOD_SECTIONS, repr=False)

    SECTIONS = (*SETUP_SECTIONS, *METHOD_SECTIONS, *DIAGNOSTIC_SECTIONS)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("method_sections")
        return d

    def setup_dict(self) -> dict:
        """What every arm shares: the task and the setup sections without execution-only fields."""
        d = self.to_dict()
        for section, names in EXECUTION_FIELDS.items():
            for name in names:
                d[section].pop(name)
        return {"task": self.task, **{s: d[s] for s in SETUP_SECTIONS}}

    def method_dict(self) -> dict:
        """The method and the sections it reads (its declared `config_sections`, resolved with the plan)."""
        return {"method": self.method, **{s: dataclasses.asdict(getattr(self, s)) for s in self.method_sections}}

    def config_hash(self) -> str:
        """Hash of setup + method without the seed: the seeds of one config form a group."""
        return stable_hash({**self.setup_dict(), **self.method_dict()})

    def setup_hash(self) -> str:
        """Hash of what every arm shares (task data, model, training budget, MBE measurement).

        Two groups are comparable only if their setup hashes agree: same tokens, batch, model and data.
        """
        return stable_hash(self.setup_dict())


def stable_hash(d: dict) -> str:
    """16 hex digits of the SHA-256 of a dict's canonical JSON: config hashes and evaluation keys."""
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------------------
# Building typed configs from plain dicts


def build_run_config(
    task: str,
    method: str,
    seed: int,
    preset: str,
    sections: dict,
    options_cls: type,
    method_sections: tuple = METHOD_SECTIONS,
) -> RunConfig:
    sections = dict(sections)
    about = sections.pop("about", None) or {}
    if not isinstance(about, dict):
        raise ConfigError(f"preset '{preset}' of task '{task}': `about:` must be a mapping (variant, deviations)")
    unknown = set(sections) - set(RunConfig.SECTIONS)
    if unknown:
        raise ConfigError(
            f"unknown config section '{sorted(unknown)[0]}'; sections are {', '.join(RunConfig.SECTIONS)}"
        )
    hints = typing.get_type_hints(RunConfig)
    kwargs = {}
    for name in RunConfig.SECTIONS:
        cls = options_cls if name == "data" else hints[name]
        kwargs[name] = from_dict(cls, sections.get(name) or {}, name)
    return RunConfig(
        task=task,
        method=method,
        seed=seed,
        preset=preset,
        about=copy.deepcopy(about),
        method_sections=tuple(method_sections),
        **kwargs,
    )


def from_dict(cls: type, values: dict, where: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"config section '{where}' must be a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in values:
        if key not in fields:
            import difflib

            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"did you mean '{where}.{close[0]}'?" if close else f"fields: {', '.join(fields)}"
            raise ConfigError(f"unknown config key '{where}.{key}': {hint}")
    hints = typing.get_type_hints(cls)
    kwargs = {k: coerce(v, hints[k], f"{where}.{k}") for k, v in values.items()}
    obj = cls(**kwargs)
    check_values(obj, where)
    return obj


def coerce(value: Any, typ: Any, where: str) -> Any:
    """Check `value` against the annotation `typ`; ints are accepted for floats, and "inf" for a float (YAML's
    spelling is .inf; check_values then refuses infinity where a field does not allow it); nothing else is
    converted."""
    origin = typing.get_origin(typ)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = typing.get_args(typ)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(value, a, where)
            except ConfigError as e:
                errors.append(e)
        raise errors[0]
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        (inner,) = typing.get_args(typ) or (Any,)
        return [coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if typ is Any:
        return value
    if typ is float:
        if isinstance(value, str) and value.strip().lower() in ("inf", "+inf", "infinity", "+infinity"):
            return math.inf
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    return value


def check_values(obj: Any, where: str) -> None:
    """Choices, bounds and finiteness of every field (field metadata from `opt`)."""
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        meta = f.metadata
        choices, lo, hi = meta.get("choices"), meta.get("min"), meta.get("max")
        name = f"{where}.{f.name}"
        if choices is not None and v not in choices:
            raise ConfigError(f"{name}={v!r} is not allowed; choose one of {', '.join(map(str, choices))}")
        for x in v if isinstance(v, list) else [v]:
            if isinstance(x, float) and not (math.isfinite(x) or (meta.get("allow_inf") and x == math.inf)):
                raise ConfigError(f"{name}={v!r} is not a finite number; give a finite value")
        if v is None or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if lo is not None and v < lo:
            raise ConfigError(f"{name}={v!r} must be >= {lo}")
        if hi is not None and (v >= hi if meta.get("max_open") else v > hi):
            raise ConfigError(f"{name}={v!r} must be {'<' if meta.get('max_open') else '<='} {hi}")
