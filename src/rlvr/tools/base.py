"""Tools a model calls during an episode: declared once as a JSON schema, run with validated arguments.

A `Tool` is what the prompt advertises (name, description, the JSON schema of its arguments, in the OpenAI
function format) plus how to run it. Tool state lives in a per-episode `session()`: the python tool's variables
survive between the calls of one episode and never leak into another. Any typed Python function becomes a tool
with `@tool`; its schema is read from the type hints and the Google-style docstring.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import jsonschema

from rlvr.config import ToolsConfig
from rlvr.errors import ConfigError
from rlvr.registry import Registry
from rlvr.types import Document

# What a tool that printed nothing returns, so the model sees that the call ran.
NO_OUTPUT = "(no output)"


class ToolError(Exception):
    """A tool call that cannot run as written; its message goes back to the model."""


class Session(Protocol):
    """One episode's handle on a tool: validated arguments in, the text the model reads out."""

    def __call__(self, arguments: dict[str, Any]) -> str: ...


@dataclass
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of the arguments object
    # Makes the per-episode session; a stateless tool returns the same callable every time.
    session: Callable[[], Session] = field(repr=False)

    def schema(self) -> dict[str, Any]:
        """The OpenAI function declaration, as chat templates with native tool support expect it."""
        declaration = {"name": self.name, "description": self.description, "parameters": self.parameters}
        return {"type": "function", "function": declaration}

    def validate(self, arguments: Any) -> dict[str, Any]:
        """The arguments, checked against the schema; a `ToolError` says what is wrong, in words the model can act on."""
        if not isinstance(arguments, dict):
            raise ToolError(f"arguments for {self.name} must be a JSON object, got {type(arguments).__name__}")
        try:
            jsonschema.validate(arguments, self.parameters)
        except jsonschema.ValidationError as error:
            where = ".".join(str(part) for part in error.absolute_path)
            raise ToolError(f"invalid arguments for {self.name}: {f'{where}: ' if where else ''}{error.message}") from None
        return arguments


def function_tool(fn: Callable[..., Any], name: str | None = None) -> Tool:
    """A typed Python function as a stateless tool; what it returns is shown to the model as text."""
    try:
        from transformers.utils import get_json_schema  # on use: importing transformers takes a second

        declared = get_json_schema(fn)["function"]
    except Exception as error:  # transformers raises its own error types for undocumented or untyped arguments
        raise ConfigError(f"tool {getattr(fn, '__name__', fn)!r}: {error}") from None
    parameters = dict(declared.get("parameters") or {"type": "object", "properties": {}})
    parameters.setdefault("additionalProperties", False)

    def call(arguments: dict[str, Any]) -> str:
        result = fn(**arguments)
        return result if isinstance(result, str) else repr(result)

    return Tool(name or declared["name"], declared.get("description", ""), parameters, lambda: call)


# name -> builder: the run's tool settings and the environment's own documents (the search tool's `env` corpus), if any.
ToolBuilder = Callable[[ToolsConfig, Sequence[Document] | None], Tool]
TOOLS: Registry[ToolBuilder] = Registry("tool")


def tool(fn: Callable[..., Any] | None = None, *, name: str | None = None) -> Any:
    """Register a typed Python function as a tool: `@tool` or `@tool(name="weather")`.

    The function needs type hints and a docstring with an `Args:` section (they become its JSON schema).
    """

    def register(fn: Callable[..., Any]) -> Callable[[Any, Any], Tool]:
        built = function_tool(fn, name)  # fails at import time, not mid-run, when the schema cannot be read
        TOOLS.register(built.name)(lambda config, documents: built)
        return fn

    return register(fn) if fn is not None else register
