"""Task and method registries, and plug-in discovery: every command sees the same tasks and methods.

Where entries come from, in this order (a name registered twice by different objects is an error naming both):

1. built-in: each module of `gapt_bench.methods` and each task folder `tasks/<name>/task.py` (installed as
   `gapt_bench.tasks.<name>.task`) registers itself with `@register_method` / `@register_task` when imported;
2. entry points of installed packages, groups `gapt_bench.methods` and `gapt_bench.tasks` (the entry point names a
   module, which registers with the decorators, or a class, registered under the entry point's name);
3. `--include PATH`: a `.py` file, or a folder of them, next to the user's results.

`load_plugins(includes)` runs all three once per process (parallel workers and torchrun ranks call it with the
same includes). Looking a name up, or listing names, loads the built-ins and entry points on first use.
Registration checks the base class and the name and raises `RegistryError` with a one-line message.
"""
from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import pkgutil
import re
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Generic, Iterator, TypeVar

T = TypeVar("T")
NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
ENTRY_POINT_GROUPS = {"task": "gapt_bench.tasks", "method": "gapt_bench.methods"}


class RegistryError(KeyError):
    """Unknown, duplicate or invalid registry entry, or a plug-in that cannot load. str() is one line."""

    def __str__(self) -> str:  # KeyError quotes its message; we want plain text
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Entry:
    obj: Any
    origin: str  # "built-in", "entry point <dist>: <value>", "include <path>", "registered in <module>"


_ORIGIN: list[str] = []  # the origin of registrations happening now (a stack: discovery nests)


@contextmanager
def _origin(text: str) -> Iterator[None]:
    _ORIGIN.append(text)
    try:
        yield
    finally:
        _ORIGIN.pop()


class Registry(Generic[T]):
    def __init__(self, kind: str, base: Callable[[], type] | None = None) -> None:
        self.kind = kind
        self._base = base  # returns the required base class (a callable: the base module imports this one)
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, obj: T, origin: str | None = None) -> None:
        """Register class `obj` under `name` (checked: a valid name, a subclass of the base, not taken)."""
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise RegistryError(f"{self.kind} name {name!r} is invalid: use lower case letters, digits and _ "
                                f"starting with a letter (e.g. my_{self.kind})")
        base = self._base() if self._base else None
        if base is not None and not (isinstance(obj, type) and issubclass(obj, base)):
            raise RegistryError(f"{self.kind} '{name}' must be a subclass of {base.__module__}.{base.__qualname__}, "
                                f"got {obj!r}")
        origin = origin or (_ORIGIN[-1] if _ORIGIN else f"registered in {getattr(obj, '__module__', '?')}")
        old = self._entries.get(name)
        if old is not None and old.obj is not obj:
            if isinstance(obj, type) and _qualname(old.obj) == _qualname(obj) and old.origin == origin:
                return  # the same module imported again (e.g. a re-run include): keep the first
            raise RegistryError(f"{self.kind} '{name}' is already registered ({old.origin}); the one from "
                                f"{origin} needs another name")
        if getattr(obj, "name", name) != name and isinstance(obj, type):
            obj.name = name  # the class knows its registered name
        self._entries[name] = Entry(obj, origin)

    def decorator(self, name: str) -> Callable[[T], T]:
        def wrap(obj: T) -> T:
            self.register(name, obj)
            return obj

        return wrap

    def get(self, name: str) -> T:
        discover()
        if name not in self._entries:
            raise RegistryError(self.unknown_message(name))
        return self._entries[name].obj

    def origin(self, name: str) -> str:
        discover()
        return self._entries[name].origin

    def unknown_message(self, name: str) -> str:
        names = self.names()
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else f"known: {', '.join(names)}"
        return f"unknown {self.kind} '{name}': {hint} (see `gapt-bench ls`; plug-ins load with --include PATH)"

    def names(self) -> list[str]:
        discover()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        discover()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '')}:{getattr(obj, '__qualname__', '')}"


def _task_base() -> type:
    from gapt_bench.task import Task

    return Task


def _method_base() -> type:
    from gapt_bench.methods.base import Method

    return Method


TASKS: Registry[Any] = Registry("task", _task_base)
METHODS: Registry[Any] = Registry("method", _method_base)

register_task = TASKS.decorator
register_method = METHODS.decorator
REGISTRIES = {"task": TASKS, "method": METHODS}


# ---------------------------------------------------------------------------------------------------------------
# Discovery

_STATE: dict[str, Any] = {"discovered": False, "discovering": False, "includes": [], "errors": []}


def discover() -> None:
    """Load the built-ins and the installed entry points, once per process."""
    if _STATE["discovered"] or _STATE["discovering"]:
        return
    _STATE["discovering"] = True
    try:
        with _origin("built-in"):
            import gapt_bench.methods as methods_pkg
            import gapt_bench.tasks as tasks_pkg

            for mod in pkgutil.iter_modules(methods_pkg.__path__):
                if mod.name != "base":
                    importlib.import_module(f"gapt_bench.methods.{mod.name}")
            for mod in pkgutil.iter_modules(tasks_pkg.__path__):
                if mod.ispkg:
                    importlib.import_module(f"gapt_bench.tasks.{mod.name}.task")
        for kind, group in ENTRY_POINT_GROUPS.items():
            for ep in metadata.entry_points(group=group):
                try:
                    _load_entry_point(kind, ep)
                except RegistryError as e:  # kept: `ls` lists it, `load_plugins` (run, validate) raises it
                    _STATE["errors"].append(str(e))
        _STATE["discovered"] = True
    finally:
        _STATE["discovering"] = False


def _load_entry_point(kind: str, ep: metadata.EntryPoint) -> None:
    dist = getattr(getattr(ep, "dist", None), "name", None) or "?"
    origin = f"entry point {dist}: {ep.value}"
    with _origin(origin):
        try:
            obj = ep.load()
        except Exception as e:  # a broken plug-in is named, not a traceback
            raise RegistryError(f"{kind} plug-in '{ep.name}' ({origin}) failed to load: {type(e).__name__}: {e}") from e
        if isinstance(obj, type):
            registry = REGISTRIES[kind]
            if ep.name not in registry._entries or registry._entries[ep.name].obj is not obj:
                registry.register(ep.name, obj, origin)


def plugin_errors() -> list[str]:
    """One line per installed plug-in that failed to load."""
    discover()
    return list(_STATE["errors"])


def load_plugins(includes: list[str] | tuple[str, ...] = (), strict: bool = True) -> None:
    """Built-ins, entry points and `--include` paths (each a .py file or a folder of them), once per path.
    A broken installed plug-in raises here (RegistryError naming it) rather than vanishing from the registry,
    unless `strict` is off (`ls` lists it instead)."""
    discover()
    if _STATE["errors"] and strict:
        raise RegistryError(f"{_STATE['errors'][0]}; fix or uninstall that package")
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
            if key not in _STATE["includes"]:
                _import_file(f.resolve())
                _STATE["includes"].append(key)


def included() -> list[str]:
    """The include files loaded in this process (absolute paths), for workers to load the same."""
    return list(_STATE["includes"])


def _import_file(path: Path) -> None:
    """Import a user's .py file under a stable module name (so workers import it under the same name)."""
    name = f"gapt_bench_include_{re.sub(r'[^0-9a-zA-Z_]', '_', path.stem)}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise RegistryError(f"--include {path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    with _origin(f"include {path}"):
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
