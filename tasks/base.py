"""The task interface: a task provides data, evaluation and presets, and knows nothing about methods.

A task is a class registered in `TASKS` (`@register_task("name")`). Built-in tasks live in the top-level `tasks/<name>/`
folder (module `task.py`, `presets.yaml`, a README); a plug-in task is one `.py` file with its presets as a dict.

LM tasks subclass `LMTask`: they give the shared trainer a deterministic global batch for each optimizer step (so
every method sees the same data order for a seed, and a resumed run sees the same batches) and evaluate the trained
model. A task whose protocol is not "train an LM once" (the forgetting MLP) overrides `run`.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from gapt_bench.config import ConfigError
from gapt_bench.config.registry import Registry

if TYPE_CHECKING:
    from gapt_bench.config import RunConfig
    from gapt_bench.training.runtime import RunContext
    from gapt_bench.training.trainer import TrainOutput


@dataclass
class TaskResult:
    """What one run measured: the record's metrics and the numbers behind them."""

    metrics: dict[str, float]
    n_params: int
    tokens: int
    steps: int
    stop_reason: str = "budget"  # budget | converged
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class Evaluation:
    """An LM task's end-of-training evaluation: metrics for the record, and provenance for its summary."""

    metrics: dict[str, float]
    summary: dict[str, Any] = field(default_factory=dict)


class EpochOrder:
    """Which of n sequences fill batch `step`: an endless stream of per-epoch permutations, seeded by (seed, epoch),
    so a batch is a pure function of (config, step) (every method sees the same order; a resumed run the same
    batches) and every sequence is seen once per epoch whatever the batch size (B > n is allowed)."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = n, seed
        self._cache: tuple[int, torch.Tensor] | None = None

    def permutation(self, epoch: int) -> torch.Tensor:
        if self._cache is None or self._cache[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._cache = (epoch, torch.randperm(self.n, generator=g))
        return self._cache[1]

    def indices(self, step: int, batch: int) -> torch.Tensor:
        start, idx = step * batch, list[int]()
        while len(idx) < batch:
            epoch, k = divmod(start + len(idx), self.n)
            idx.extend(self.permutation(epoch)[k : k + batch - len(idx)].tolist())
        return torch.tensor(idx)


def next_token_targets(x: torch.Tensor) -> torch.Tensor:
    """Targets of whole sequences: the next token, and -100 (no loss) after the last one."""
    y = torch.full_like(x, -100)
    y[:, :-1] = x[:, 1:]
    return y


def size_vocab_for_tokenizer(cfg: RunConfig) -> None:
    """model.vocab_size from data.tokenizer (padded to data.pad_vocab_multiple) and model.n_positions from
    train.seq_len, for tasks that read text; ConfigError for a model vocabulary below the tokenizer's."""
    from gapt_bench.data import DataError, tokenizer_vocab_size

    d, m, t = cfg.data, cfg.model, cfg.train
    try:
        v = tokenizer_vocab_size(d.tokenizer)
    except DataError as e:
        raise ConfigError(str(e)) from None
    padded = -(-v // d.pad_vocab_multiple) * d.pad_vocab_multiple
    if m.vocab_size and m.vocab_size < v:
        raise ConfigError(
            f"model.vocab_size={m.vocab_size} is below the {d.tokenizer} tokenizer's {v} ids; "
            f"leave it at 0 (set from data.tokenizer)"
        )
    m.vocab_size = m.vocab_size or padded
    m.n_positions = m.n_positions or t.seq_len
    if m.n_positions < t.seq_len:
        raise ConfigError(f"model.n_positions={m.n_positions} < train.seq_len={t.seq_len}")


def mbe_metrics(
    prefix: str, plain: Sequence[float], centred: Sequence[float] | None = None, per_layer: bool = True
) -> dict[str, float]:
    """The MBE metrics every task reports, named alike so the report can pair each with its control:
    `<prefix>mbe` (mean over layers), `<prefix>mbe_centered` (the collapse control) and `<prefix>mbe_layer_<i>`."""
    out = {f"{prefix}mbe": sum(plain) / len(plain)}
    if centred is not None:
        out[f"{prefix}mbe_centered"] = sum(centred) / len(centred)
    if per_layer:
        out.update({f"{prefix}mbe_layer_{i}": v for i, v in enumerate(plain)})
    return out


class Task:
    """Base class of every task. Subclass, set the class attributes, implement `run` (or subclass LMTask)."""

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"  # bump when the data or the evaluation changes
    description: ClassVar[str] = ""
    Options: ClassVar[type]  # the dataclass of the task's `data:` section
    metrics: ClassVar[dict[str, str]] = {}  # metric name (or "prefix*") -> "min" | "max" (direction of better)
    primary: ClassVar[tuple[str, ...]] = ()  # what a practitioner wants; the leaderboard ranks on these only
    presets: ClassVar[dict[str, dict] | None] = None  # inline presets (plug-ins); else presets.yaml beside the module
    # Config sections this task does not read: they must keep their defaults (execution fields excepted), so a
    # setting that would change nothing is refused instead of silently recorded.
    ignored_sections: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg

    # -- planning ------------------------------------------------------------------------------------------------
    @classmethod
    def load_presets(cls) -> dict:
        """name -> sections: the class's `presets` dict, or the `presets.yaml` next to the task's module."""
        if cls.presets is not None:
            if not isinstance(cls.presets, dict):
                raise ConfigError(f"task '{cls.name}': `presets` must map preset names to sections")
            return cls.presets
        from gapt_bench.config import read_preset_file

        return read_preset_file(cls.presets_file(), cls.name)

    @classmethod
    def presets_file(cls) -> Path:
        module = sys.modules.get(cls.__module__)
        source = getattr(module, "__file__", None) or inspect.getfile(cls)
        return Path(source).resolve().parent / "presets.yaml"

    @classmethod
    def finalize(cls, cfg: RunConfig) -> None:
        """Fill task-derived fields (vocab size, positions) and raise ConfigError on impossible values."""

    @classmethod
    def check_ignored(cls, cfg: RunConfig) -> None:
        """Refuse values in sections this task ignores (they would be recorded but change nothing)."""
        from gapt_bench.config import EXECUTION_FIELDS

        for section in cls.ignored_sections:
            obj = getattr(cfg, section)
            default = type(obj)()
            for f in dataclasses.fields(obj):
                if f.name in EXECUTION_FIELDS.get(section, ()):
                    continue
                if getattr(obj, f.name) != getattr(default, f.name):
                    raise ConfigError(
                        f"task '{cls.name}' does not use {section}.{f.name} (it is "
                        f"{getattr(obj, f.name)!r}); remove it, the task's own settings are in data.*"
                    )

    @classmethod
    def plan_summary(cls, cfg: RunConfig) -> str:
        """One line for `gapt-bench validate`: the model and budget this run will use."""
        return ""

    @classmethod
    def metric_directions(cls, metrics: dict[str, float]) -> dict[str, str]:
        """Direction of "better" for each metric name ("name*" patterns cover per-layer metrics)."""
        out = {}
        for name in metrics:
            direction = cls.metrics.get(name)
            if direction is None:
                direction = next(
                    (d for pat, d in cls.metrics.items() if pat.endswith("*") and name.startswith(pat[:-1])), "min"
                )
            out[name] = direction
        return out

    # -- running -------------------------------------------------------------------------------------------------
    def run(self, method_cls: type, ctx: RunContext) -> TaskResult:
        raise NotImplementedError

    # A task that can train several seeds of one config as one batched model sets this and implements run_group.
    batchable: ClassVar[bool] = False

    def run_group(self, method_cls: type, cfgs: Sequence[RunConfig], ctxs: Sequence[RunContext]) -> list[TaskResult]:
        """Train runs whose configs differ only in the seed as one batched model (self.cfg is cfgs[0]); one
        TaskResult per run, each what that run trained alone gives (same data order, initialisation, method
        decisions and metrics, up to float rounding), and each run's curve in its own ctx. Raise on anything that
        would make a member differ from its lone run (e.g. Diverged): the launcher then runs every member alone."""
        raise NotImplementedError

    def make_method(self, method_cls: type, n_layer: int, ctx: RunContext):
        """The method of this run; a matched control receives the summary of the run it copies (ctx.matched)."""
        return method_cls(self.cfg, n_layer, matched=ctx.matched)

    @classmethod
    def planned_steps(cls, cfg: RunConfig) -> int | None:
        """The optimizer steps a run of `cfg` plans (its budget; an upper bound where it may stop early), for the
        progress display's ETA; None: not known before it runs. Progress reports (`ctx.progress(step, total)`)
        count the same steps."""
        return None

    # -- saving (train.save_model) ---------------------------------------------------------------------------------
    def transformers_tokenizer(self) -> Any:
        """The run's tokenizer as a transformers tokenizer, saved with the model (None: the task has no text
        tokenizer). Default: the text tokenizer of the task's data (`self.data.tokenizer`), if it has one."""
        suite_tokenizer = getattr(getattr(self, "data", None), "tokenizer", None)
        if suite_tokenizer is None:
            return None
        from gapt_bench.data.hf_tokenizers import to_transformers

        return to_transformers(suite_tokenizer)

    def save_model(self, model: Any, ctx: RunContext) -> None:
        """Write the trained model to the run folder's model/ (`gapt_bench.training.save`)."""
        from gapt_bench.training.save import MODEL_FOLDER, save_trained

        save_trained(
            model, ctx.run_dir / MODEL_FOLDER, tokenizer=self.transformers_tokenizer(), run_config=self.cfg.to_dict()
        )

    # -- after the runs ------------------------------------------------------------------------------------------
    @classmethod
    def analyses(cls, records: Sequence[dict], reference: str = "baseline") -> dict[str, Any]:
        """Task-level analyses over the records of this task (e.g. capacity: alpha per model), keyed by name,
        each an analysis result with a "kind" the renderer knows; {} if none."""
        return {}


class LMTask(Task):
    """A task trained by the shared LM trainer (`gapt_bench.training.trainer.train_lm`)."""

    @classmethod
    def plan_summary(cls, cfg: RunConfig) -> str:
        from gapt_bench.training.runtime import steps_for_budget

        m, t = cfg.model, cfg.train
        return (
            f"model={m.family} L{m.n_layer}/d{m.n_embd} V={m.vocab_size} tokens={t.tokens:,} "
            f"steps={steps_for_budget(cfg)} "
            f"batch={t.batch_size}x{t.seq_len}"
        )

    @classmethod
    def planned_steps(cls, cfg: RunConfig) -> int | None:
        from gapt_bench.training.runtime import steps_for_budget

        return steps_for_budget(cfg)

    def setup(self, ctx: RunContext | None = None) -> None:
        """Build or load the data. Called once per run before training (ctx None: a bare setup, e.g. in tests)."""

    def get_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The global batch of optimizer step `step`: (inputs, targets), both (batch_size, seq_len) int64.

        Targets are already shifted (target[t] is the token after input[t]); -100 marks positions without loss.
        Must depend only on (config, step), never on what the model did.
        """
        raise NotImplementedError

    def check(self, model: torch.nn.Module, step: int, ctx: RunContext) -> bool:
        """Training-side check every train.eval_every steps (never test data); True stops the run (converged)."""
        return False

    def evaluate(self, model: torch.nn.Module, ctx: RunContext, trained: TrainOutput) -> Evaluation:
        """End-of-training evaluation on held-out data."""
        raise NotImplementedError

    def summary(self, trained: TrainOutput, ctx: RunContext) -> dict[str, Any]:
        """Provenance for the record (data source, tokenizer, throughput); {} by default."""
        return {}

    def build_model(self) -> torch.nn.Module:
        from gapt_bench.training.model import build_from_config

        torch.manual_seed(self.cfg.seed)  # same init for every method of a seed
        return build_from_config(self.cfg.model)

    def n_params(self, model: torch.nn.Module) -> int:
        from gapt_bench.training.model import param_count

        return param_count(model)

    def run(self, method_cls: type, ctx: RunContext) -> TaskResult:
        from gapt_bench.training.trainer import train_lm

        self.setup(ctx)
        model = self.build_model()
        method = self.make_method(method_cls, self.cfg.model.n_layer, ctx)
        trained = train_lm(model, self, method, self.cfg, ctx)
        ev = self.evaluate(trained.model, ctx, trained)
        if self.cfg.train.save_model and ctx.is_main:
            self.save_model(trained.model, ctx)
        summary = {**method.summary(), **trained.summary, **ev.summary, **self.summary(trained, ctx)}
        return TaskResult(
            metrics=ev.metrics,
            n_params=self.n_params(trained.model),
            tokens=trained.tokens,
            steps=trained.steps,
            stop_reason=trained.stop_reason,
            summary=summary,
        )


def _import_builtin_tasks() -> None:
    """Each folder of gapt_bench.tasks registers its task when its `task.py` is imported."""
    import importlib
    import pkgutil

    import gapt_bench.tasks as package

    for mod in pkgutil.iter_modules(package.__path__):
        if mod.ispkg:
            importlib.import_module(f"gapt_bench.tasks.{mod.name}.task")


TASKS: Registry[type[Task]] = Registry(
    "task", base=Task, builtins=_import_builtin_tasks, entry_points="gapt_bench.tasks"
)
register_task = TASKS.decorator
