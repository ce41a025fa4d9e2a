"""The tools rlvr ships, `python` (the sandbox, state kept within an episode) and `search` (BM25 over a corpus), and
`build_tools`, which builds a run's tools by name."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rlvr.config import ToolsConfig
from rlvr.errors import ConfigError
from rlvr.sandbox import SandboxLimits
from rlvr.tools.base import NO_OUTPUT, TOOLS, Tool
from rlvr.tools.python_session import PythonSession
from rlvr.tools.search import load_search_index
from rlvr.types import Document, format_hits


@TOOLS.register("python")
def python_tool(config: ToolsConfig, documents: Sequence[Document] | None) -> Tool:
    settings = config.python
    seconds = settings.timeout_seconds
    limits = SandboxLimits(wall_seconds=seconds, cpu_seconds=seconds, memory_mb=settings.memory_mb)

    def session() -> Any:
        state = PythonSession(limits, max_output_chars=settings.max_output_chars)
        return lambda arguments: state.run(arguments["code"]).output or NO_OUTPUT

    return Tool(
        name="python",
        description="Run Python code (standard library only) and see what it prints; the value of a final expression is "
        "shown too. "
        "Variables persist between calls.",
        parameters={
            "type": "object",
            "properties": {"code": {"type": "string", "description": "The Python code to run."}},
            "required": ["code"],
            "additionalProperties": False,
        },
        session=session,
    )


@TOOLS.register("search")
def search_tool(config: ToolsConfig, documents: Sequence[Document] | None) -> Tool:
    settings = config.search
    index = load_search_index(settings.corpus, documents)

    def search(arguments: dict[str, Any]) -> str:
        return format_hits(index.search(arguments["query"], settings.top_k))

    return Tool(
        name="search",
        description="Search the knowledge base; returns the best-matching passages with their titles.",
        parameters={
            "type": "object",
            "properties": {"query": {"type": "string", "description": "What to look for."}},
            "required": ["query"],
            "additionalProperties": False,
        },
        session=lambda: search,
    )


def build_tools(names: Sequence[str], config: ToolsConfig, documents: Sequence[Document] | None = None) -> list[Tool]:
    """The named tools: rlvr's own, any `@tool` function, and those a recipe's `plugins` register; then the tools of
    the MCP servers in `tools.mcp`, named in `names` or not (a server's own `tools` list chooses among them)."""
    served = mcp_server_tools(config)
    clash = next((t.name for t in served if t.name in TOOLS), None)
    if clash is not None:
        raise ConfigError(f"tools.mcp: the tool {clash!r} is also one of rlvr's: give its server a `name` (a prefix)")
    known = {t.name for t in served}
    unknown = [name for name in names if name not in TOOLS and name not in known]
    if unknown:
        choices = sorted({*TOOLS, *known})
        raise ConfigError(f"tools.enabled: unknown tool {unknown[0]!r} (choices: {', '.join(choices)})")
    return [TOOLS[name](config, documents) for name in names if name not in known] + served


def mcp_server_tools(config: ToolsConfig) -> list[Tool]:
    """The tools of the MCP servers in `tools.mcp`, each started once per process."""
    if not config.mcp:
        return []
    from rlvr.tools.mcp_client import mcp_tools  # the MCP SDK is an optional extra: imported only when a recipe uses it

    return mcp_tools(config.mcp)
