"""A tiny real MCP server over stdio for the tests: `add`, `reverse`, and tools that misbehave on purpose.

`python mcp_server.py` serves; `python mcp_server.py hang` never answers (a server stuck at start);
`python mcp_server.py crash` exits at once with a message on stderr (a server that cannot start).
"""

from __future__ import annotations

import os
import sys

MODE = sys.argv[1] if len(sys.argv) > 1 else "serve"
if MODE == "crash":  # before the SDK's imports, which take a second
    sys.exit("mcp_server: cannot start on purpose")
if MODE == "hang":
    sys.stdin.read()  # holds the pipe and never answers; exits when rlvr closes stdin
    sys.exit(0)

import anyio  # noqa: E402
from mcp.server.mcpserver import MCPServer  # noqa: E402
from mcp.server.mcpserver.exceptions import ToolError  # noqa: E402

server = MCPServer("rlvr-test")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def reverse(text: str) -> str:
    """Reverse a string."""
    return text[::-1]


@server.tool()
def getenv(name: str) -> str:
    """An environment variable of the server's."""
    return os.environ.get(name, "(unset)")


@server.tool()
def pid() -> int:
    """The server's process id (the tests check that it stops)."""
    return os.getpid()


@server.tool()
async def sleep(seconds: float) -> str:
    """Sleep, then say so (a call that overruns its deadline)."""
    await anyio.sleep(seconds)
    return "slept"


@server.tool()
def refuse(reason: str) -> str:
    """Fail with a reason (a tool that reports an error)."""
    raise ToolError(f"refused: {reason}")


@server.tool()
def die() -> str:
    """Exit without answering (a server that dies mid-call)."""
    print("dying on request", file=sys.stderr, flush=True)
    os._exit(3)


if __name__ == "__main__":
    server.run()
