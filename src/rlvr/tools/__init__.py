"""Tools a model calls while it reasons (python, search, any `@tool` function), and the sandbox model-written code
runs in."""

from rlvr.tools.base import TOOLS, Tool, ToolError, function_tool, tool
from rlvr.tools.builtin import build_tools
from rlvr.tools.sandbox import IsolationInfo, SandboxLimits, SandboxResult, isolation, run_file, run_python

__all__ = [
    "TOOLS",
    "IsolationInfo",
    "SandboxLimits",
    "SandboxResult",
    "Tool",
    "ToolError",
    "build_tools",
    "function_tool",
    "isolation",
    "run_file",
    "run_python",
    "tool",
]
