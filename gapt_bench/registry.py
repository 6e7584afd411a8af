"""Task and method registries: decorator registration, lazy import, helpful errors.

Built-in entries are registered lazily as "module:attr" strings so that `gapt-bench ls` does not import torch
models or datasets. A duplicate name is an error; an unknown name is an error that suggests the nearest names.
"""
from __future__ import annotations

import difflib
import importlib
from typing import Any, Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class RegistryError(KeyError):
    """Unknown or duplicate registry name. str() is a one-line, user-facing message."""

    def __str__(self) -> str:  # KeyError quotes its message; we want plain text
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T | str] = {}

    def register(self, name: str, target: T | str) -> None:
        """Register `target` (an object, or a lazy "module:attr" string) under `name`."""
        if name in self._entries and self._entries[name] is not target:
            existing = self._entries[name]
            if not (isinstance(existing, str) and _qualname(target) == existing):
                raise RegistryError(f"{self.kind} '{name}' is already registered; pick another name")
        self._entries[name] = target

    def decorator(self, name: str) -> Callable[[T], T]:
        def wrap(obj: T) -> T:
            self.register(name, obj)
            return obj

        return wrap

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise RegistryError(self.unknown_message(name))
        entry = self._entries[name]
        if isinstance(entry, str):
            module, _, attr = entry.partition(":")
            obj = getattr(importlib.import_module(module), attr)
            self._entries[name] = obj
            return obj
        return entry

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else f"known: {', '.join(self.names())}"
        return f"unknown {self.kind} '{name}': {hint} (see `gapt-bench ls`)"

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '')}:{getattr(obj, '__qualname__', '')}"


TASKS: Registry[Any] = Registry("task")
METHODS: Registry[Any] = Registry("method")

register_task = TASKS.decorator
register_method = METHODS.decorator

# Built-ins, imported only when used.
for _name, _target in {
    "arithmetic_ood": "gapt_bench.tasks.arithmetic_ood:ArithmeticOOD",
    "forgetting_separation": "gapt_bench.tasks.forgetting_separation:ForgettingSeparation",
    "synthetic_capacity": "gapt_bench.tasks.synthetic_capacity:SyntheticCapacity",
    "fineweb_lm": "gapt_bench.tasks.fineweb_lm:FineWebLM",
}.items():
    TASKS.register(_name, _target)
for _name, _target in {
    "baseline": "gapt_bench.methods.baseline:Baseline",
    "gapt": "gapt_bench.methods.gapt:GAPT",
    "mbe": "gapt_bench.methods.mbe:FixedMBE",
    "periodic": "gapt_bench.methods.periodic:Periodic",
}.items():
    METHODS.register(_name, _target)
