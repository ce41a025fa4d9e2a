"""Name -> function tables: adding an algorithm, reward or engine is adding one decorated function."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TypeVar

from pydantic import AfterValidator

T = TypeVar("T", bound=Callable)


class Registry(dict[str, T]):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable[[T], T]:
        def add(fn: T) -> T:
            if name in self:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self[name] = fn
            return fn

        return add


def registered(module: str, table: str) -> AfterValidator:
    """A config field naming an entry of the registry `module.table`, imported lazily (registries import config)."""

    def check(value: str) -> str:
        registry = getattr(importlib.import_module(module), table)
        if value not in registry:
            raise ValueError(f"unknown {registry.kind} {value!r} (choices: {', '.join(sorted(registry))})")
        return value

    return AfterValidator(check)
