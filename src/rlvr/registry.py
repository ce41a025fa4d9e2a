"""Name -> function tables: adding an algorithm, reward or engine is adding one decorated function."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Container
from typing import Any, TypeVar

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


def section_name(value: Any, default: str | None = None) -> Any:
    """The `name` a config section is chosen by: a bare name, a mapping's `name`, or a parsed config's."""
    if isinstance(value, str):
        return value
    return value.get("name", default) if isinstance(value, dict) else getattr(value, "name", default)


def name_tag(builtins: Container[str], default: str | None = None) -> Callable[[Any], str | None]:
    """The discriminator of a config union chosen by `name`: a built-in choice by its own name, any other name
    "plugin" (its config checks the name against the registry), and no name, or one that is not a string, None,
    which the union reports as its own error."""

    def tag(value: Any) -> str | None:
        name = section_name(value, default)
        return (name if name in builtins else "plugin") if isinstance(name, str) else None

    return tag
