"""Plug-ins: every command, parallel worker and torchrun rank sees the same tasks and methods.

Where entries come from, in this order (a name registered twice by different objects is an error naming both):

1. built-in: each module of `gapt_bench.methods` and each task folder `tasks/<name>/task.py` (installed as
   `gapt_bench.tasks.<name>.task`) registers itself with `@register_method` / `@register_task` when imported;
2. entry points of installed packages, groups `gapt_bench.methods` and `gapt_bench.tasks`;
3. `--include PATH`: a `.py` file, or a folder of them, next to the user's results.

The registries themselves (`gapt_bench.config.registry.Registry`) find 1 and 2 on their first lookup;
`load_plugins(includes)` adds 3, once per path per process.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import sys
from pathlib import Path
from typing import Any

from gapt_bench.config.registry import Registry, RegistryError, registering_from
from gapt_bench.methods.base import METHODS
from gapt_bench.tasks.base import TASKS

REGISTRIES: dict[str, Registry[Any]] = {"task": TASKS, "method": METHODS}
_INCLUDED: list[str] = []  # the include files loaded in this process (absolute paths)


def discover() -> None:
    """Load the built-ins and the installed entry points of every registry, once per process."""
    for registry in REGISTRIES.values():
        registry.discover()


def plugin_errors() -> list[str]:
    """One line per installed plug-in that failed to load."""
    discover()
    return [e for registry in REGISTRIES.values() for e in registry.errors]


def load_plugins(includes: list[str] | tuple[str, ...] = (), strict: bool = True) -> None:
    """Built-ins, entry points and `--include` paths (each a .py file or a folder of them), once per path.
    A broken installed plug-in raises here (RegistryError naming it) rather than vanishing from the registry,
    unless `strict` is off (`ls` lists it instead)."""
    errors = plugin_errors()
    if errors and strict:
        raise RegistryError(f"{errors[0]}; fix or uninstall that package")
    for path in includes:
        p = Path(path).expanduser()
        if not p.exists():
            raise RegistryError(f"--include {path}: no such file or folder; pass a .py file or a folder of them")
        files = sorted(p.glob("*.py")) if p.is_dir() else [p]
        if p.is_file() and p.suffix != ".py":
            raise RegistryError(f"--include {path}: not a .py file; pass a Python file or a folder of them")
        if not files:
            raise RegistryError(f"--include {path}: the folder holds no .py files")
        for f in files:
            key = str(f.resolve())
            if key not in _INCLUDED:
                _import_file(f.resolve())
                _INCLUDED.append(key)


def included() -> list[str]:
    """The include files loaded in this process (absolute paths), for workers to load the same."""
    return list(_INCLUDED)


def _import_file(path: Path) -> None:
    """Import a user's .py file under a stable module name (so workers import it under the same name)."""
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]
    name = f"gapt_bench_include_{re.sub(r'[^0-9a-zA-Z_]', '_', path.stem)}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise RegistryError(f"--include {path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    with registering_from(f"include {path}"):
        try:
            spec.loader.exec_module(module)
        except Exception as e:
            sys.modules.pop(name, None)
            line = ""
            tb = e.__traceback__
            while tb is not None:
                if tb.tb_frame.f_code.co_filename == str(path):
                    line = f" (line {tb.tb_lineno})"
                tb = tb.tb_next
            if isinstance(e, SyntaxError):
                line = f" (line {e.lineno})"
            if isinstance(e, RegistryError):  # a registration check: its message says what is wrong
                raise RegistryError(f"--include {path}{line}: {e}") from e
            raise RegistryError(f"--include {path}{line} failed: {type(e).__name__}: {e}") from e
