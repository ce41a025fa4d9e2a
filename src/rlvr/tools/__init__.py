"""Tools a model calls while it reasons (python, search, any `@tool` function); the sandbox the python tool runs
code in is its own package, `rlvr.sandbox`."""

from rlvr.tools.base import TOOLS, Tool, ToolError, function_tool, tool
from rlvr.tools.builtin import build_tools

__all__ = ["TOOLS", "Tool", "ToolError", "build_tools", "function_tool", "tool"]
