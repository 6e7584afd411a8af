"""A name -> class registry with plug-in discovery, generic over what it holds (tasks, methods).

Each registry is created next to its base class (`gapt_bench.tasks.base.TASKS`,
`gapt_bench.methods.base.METHODS`) with two ways to find entries, run once per process on the first lookup:

1. its built-ins: a callable that imports the modules that register themselves with the registry's decorator;
2. the entry points of installed packages in its group (`gapt_bench.tasks`, `gapt_bench.methods`): the entry
   point names a module, which registers with the decorator, or a class, registered under the entry point's name.

A third way, `--include PATH` files next to the user's results, is loaded by `gapt_bench.launch.plugins`. A name
registered twice by different objects is an error naming both; every error is a `RegistryError` with a
one-line message.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Generic, TypeVar

T = TypeVar("T")
NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


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
def registering_from(text: str) -> Iterator[None]:
    """Registrations made inside this block are recorded as coming from `text` (e.g. "include /path/x.py")."""
    _ORIGIN.append(text)
    try:
        yield
    finally:
        _ORIGIN.pop()


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '')}:{getattr(obj, '__qualname__', '')}"


class Registry(Generic[T]):
    """Named subclasses of `base`, found through `builtins` and the entry-point group `entry_points`."""

    def __init__(
        self,
        kind: str,
        base: type | None = None,
        builtins: Callable[[], None] | None = None,
        entry_points: str | None = None,
    ) -> None:
        self.kind = kind
        self.base = base
        self.entry_point_group = entry_points
        self._builtins = builtins
        self._entries: dict[str, Entry] = {}
        self._discovered = False
        self._discovering = False
        self.errors: list[str] = []  # installed plug-ins that failed to load, one line each

    # -- registration --------------------------------------------------------------------------------------------
    def register(self, name: str, obj: T, origin: str | None = None) -> None:
        """Register class `obj` under `name` (checked: a valid name, a subclass of the base, not taken)."""
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise RegistryError(
                f"{self.kind} name {name!r} is invalid: use lower case letters, digits and _ "
                f"starting with a letter (e.g. my_{self.kind})"
            )
        base = self.base
        if base is not None and not (isinstance(obj, type) and issubclass(obj, base)):
            raise RegistryError(
                f"{self.kind} '{name}' must be a subclass of {base.__module__}.{base.__qualname__}, got {obj!r}"
            )
        origin = origin or (_ORIGIN[-1] if _ORIGIN else f"registered in {getattr(obj, '__module__', '?')}")
        old = self._entries.get(name)
        if old is not None and old.obj is not obj:
            if isinstance(obj, type) and _qualname(old.obj) == _qualname(obj) and old.origin == origin:
                return  # the same module imported again (e.g. a re-run include): keep the first
            raise RegistryError(
                f"{self.kind} '{name}' is already registered ({old.origin}); the one from {origin} needs another name"
            )
        if getattr(obj, "name", name) != name and isinstance(obj, type):
            obj.name = name  # type: ignore[attr-defined]  # the class knows its registered name
        self._entries[name] = Entry(obj, origin)

    def decorator(self, name: str) -> Callable[[T], T]:
        """`@REGISTRY.decorator("name")` registers the decorated class."""

        def wrap(obj: T) -> T:
            self.register(name, obj)
            return obj

        return wrap

    # -- lookup --------------------------------------------------------------------------------------------------
    def get(self, name: str) -> T:
        self.discover()
        if name not in self._entries:
            raise RegistryError(self.unknown_message(name))
        return self._entries[name].obj

    def origin(self, name: str) -> str:
        self.discover()
        return self._entries[name].origin

    def unknown_message(self, name: str) -> str:
        names = self.names()
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else f"known: {', '.join(names)}"
        return f"unknown {self.kind} '{name}': {hint} (see `gapt-bench ls`; plug-ins load with --include PATH)"

    def names(self) -> list[str]:
        self.discover()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self.discover()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    # -- discovery -----------------------------------------------------------------------------------------------
    def discover(self) -> None:
        """Load the built-ins and the installed entry points, once per process."""
        if self._discovered or self._discovering:
            return
        self._discovering = True
        try:
            if self._builtins is not None:
                with registering_from("built-in"):
                    self._builtins()
            if self.entry_point_group:
                for ep in metadata.entry_points(group=self.entry_point_group):
                    try:
                        self._load_entry_point(ep)
                    except RegistryError as e:  # kept: `ls` lists it, plug-in loading for run/validate raises it
                        self.errors.append(str(e))
            self._discovered = True
        finally:
            self._discovering = False

    def _load_entry_point(self, ep: metadata.EntryPoint) -> None:
        dist = getattr(getattr(ep, "dist", None), "name", None) or "?"
        origin = f"entry point {dist}: {ep.value}"
        with registering_from(origin):
            try:
                obj = ep.load()
            except Exception as e:  # a broken plug-in is named, not a traceback
                raise RegistryError(
                    f"{self.kind} plug-in '{ep.name}' ({origin}) failed to load: {type(e).__name__}: {e}"
                ) from e
            if isinstance(obj, type) and (ep.name not in self._entries or self._entries[ep.name].obj is not obj):
                self.register(ep.name, obj, origin)  # type: ignore[arg-type]  # checked against the base
