"""gapt_bench: does compressing representations improve generalization, and how much can a model memorize?

The public API (docs/api.md), importable from here and loaded on first use, so `import gapt_bench` and the CLI's
start-up do not pay for torch and transformers:

    from gapt_bench import matrix_entropy, layer_entropies, forward_with_hidden   # MBE of any causal LM
    from gapt_bench import GAPTController, GAPTConfig                             # the phase gate, in your loop
    from gapt_bench import GAPTTrainer                                            # ... or in transformers.Trainer
    from gapt_bench import unintended_memorization, membership_scores_report      # memorization measures
"""

import importlib.util as _util
import sys as _sys
from pathlib import Path as _Path

__version__ = "0.2.0"

# public name -> the module that defines it (one home per concept: the module's docstring says why it is so)
_PUBLIC = {
    "matrix_entropy": "gapt_bench.measures.entropy",
    "layer_entropies": "gapt_bench.measures.entropy",
    "matrix_entropy_per_patch": "gapt_bench.measures.entropy",
    "forward_with_hidden": "gapt_bench.measures.hidden_states",
    "GAPTController": "gapt_bench.methods.phase_gate",
    "GAPTConfig": "gapt_bench.config",
    "phase_summary": "gapt_bench.methods.phase_gate",
    "GAPTTrainer": "gapt_bench.integrations.hf_trainer",
    "sequence_nll_bits": "gapt_bench.measures.memorization",
    "token_statistics": "gapt_bench.measures.memorization",
    "unintended_memorization": "gapt_bench.measures.memorization",
    "extraction_rate": "gapt_bench.measures.memorization",
    "attack_scores": "gapt_bench.measures.membership",
    "roc_metrics": "gapt_bench.measures.membership",
    "membership_scores_report": "gapt_bench.measures.membership",
    "membership_inference": "gapt_bench.measures.membership",
    "load_model": "gapt_bench.evaluation.load",
    "parse_model_args": "gapt_bench.evaluation.load",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'gapt_bench' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value  # the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})


def _source_tree_tasks() -> None:
    """From a source checkout that was not pip-installed (e.g. `PYTHONPATH=. python -m gapt_bench` on a machine
    without a package registry), map the top-level tasks/ folder to `gapt_bench.tasks`, as an install does."""
    if "gapt_bench.tasks" in _sys.modules or _util.find_spec("gapt_bench.tasks") is not None:
        return
    folder = _Path(__file__).resolve().parent.parent / "tasks"
    if not (folder / "__init__.py").is_file():
        return
    spec = _util.spec_from_file_location(
        "gapt_bench.tasks", folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    module = _util.module_from_spec(spec)
    _sys.modules["gapt_bench.tasks"] = module
    globals()["tasks"] = module  # what the import system would set on the parent package
    spec.loader.exec_module(module)


_source_tree_tasks()
