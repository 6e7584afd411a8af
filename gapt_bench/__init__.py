"""gapt_bench: does compressing representations improve generalization, and how much can a model memorize?"""

import importlib.util as _util
import sys as _sys
from pathlib import Path as _Path

__version__ = "0.2.0"


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
