"""The tools rlvr ships: `python` (the sandbox, state kept within an episode) and `search` (BM25 over a corpus)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rlvr.sandbox import SandboxLimits
from rlvr.tools.base import TOOLS, Tool
from rlvr.tools.python_session import PythonSession
from rlvr.tools.search import format_hits, load_search_index

if TYPE_CHECKING:
    from rlvr.config import ToolsConfig
    from rlvr.envs.base import Environment

NO_OUTPUT = "(no output)"


@TOOLS.register("python")
def python_tool(config: ToolsConfig, env: Environment | None) -> Tool:
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
def search_tool(config: ToolsConfig, env: Environment | None) -> Tool:
    settings = config.search
    index = load_search_index(settings.corpus, env.documents() if env is not None else None)

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
