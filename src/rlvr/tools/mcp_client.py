"""MCP servers' tools as rlvr tools (`tools.mcp`).

Each server in `tools.mcp` is started over stdio with the MCP SDK, its tools are listed once, and each becomes a
`Tool` whose parameters are the server's input schema as the server gives it (so a prompt shows it like a built-in
tool) and whose calls go to the server. The SDK is async and rlvr's tool loop runs calls in threads, so one event
loop runs in a background thread for every server of the process; each server's session lives in one task on it
(the SDK's transport and session must be entered and left in the same task), and a call from any thread is
`run_coroutine_threadsafe(...).result(deadline)`. Sessions answer concurrent calls, matched by request id.

A server starts once per process and config, so training, its evaluations and `rlvr serve` share it, and stops at
exit (atexit, or `close_mcp_servers()`): the SDK closes its stdin, then ends its process group, so no server outlives
the run; a server whose parent is killed outright sees its stdin close too. A server that cannot start is a one-line
`ConfigError` naming its command; one that dies, overruns `timeout_seconds` or reports an error mid-run makes that
call an error message for the model, counted like any tool error. What a server writes to stderr goes to a
temporary file, not the terminal (it would break the progress bar), and its last line is quoted in those errors.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import binascii
import json
import os
import shlex
import tempfile
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import anyio

from rlvr.config import MCPServerConfig
from rlvr.errors import ConfigError
from rlvr.tools.base import NO_OUTPUT, Tool, ToolError

try:
    from mcp import ClientSession, MCPError, StdioServerParameters, stdio_client
    from mcp import types as mcp_types
except ImportError as error:  # an optional extra: only a recipe with `tools.mcp` imports this module
    raise ConfigError(f"tools.mcp needs the MCP SDK: pip install 'rlvr[mcp]' ({error})") from None

# Bounds the wait for a server to stop: the SDK's own shutdown (stdin closed, SIGTERM, SIGKILL) is bounded by ~6 s.
CLOSE_SECONDS = 10.0
STDERR_TAIL_BYTES = 4096
STDERR_LINE_CHARS = 300


def _size(data: str) -> str:
    try:
        return f"{len(base64.b64decode(data))} bytes"
    except (binascii.Error, ValueError):
        return f"{len(data)} base64 characters"


def _embedded(block: Any) -> str:
    resource = block.resource
    text = getattr(resource, "text", None)
    if text is not None:
        return text
    return f"[resource {resource.uri}: {resource.mime_type or 'binary'}, {_size(resource.blob)}]"


# How each kind of MCP content reads in a tool result: text as it is, anything else described in one line (the model
# reads text only; the tool loop then cuts the whole at tools.max_result_tokens like any tool's result).
CONTENT_TEXT: dict[str, Callable[[Any], str]] = {
    "text": lambda block: block.text,
    "image": lambda block: f"[image: {block.mime_type}, {_size(block.data)}]",
    "audio": lambda block: f"[audio: {block.mime_type}, {_size(block.data)}]",
    "resource_link": lambda block: f"[resource link: {block.uri}{f' ({block.mime_type})' if block.mime_type else ''}]",
    "resource": _embedded,
}


def result_text(result: mcp_types.CallToolResult) -> str:
    """A tool result as the text the model reads: its content blocks, else its structured content as JSON."""
    parts = [CONTENT_TEXT.get(block.type, lambda b: f"[{b.type} content]")(block) for block in result.content]
    if not parts and result.structured_content is not None:
        parts = [json.dumps(result.structured_content)]
    return "\n".join(parts)


def tool_name(config: MCPServerConfig, name: str) -> str:
    return f"{config.name}_{name}" if config.name else name


class MCPServer:
    """One MCP server over stdio: its session (a task on the shared event loop), its tools, and calls into it."""

    def __init__(self, config: MCPServerConfig, where: str, loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.where = where  # the config key, for errors at start: tools.mcp[0]
        command = shlex.join([config.command, *config.args])
        self.label = f"MCP server {config.name + ' ' if config.name else ''}`{command}`"
        self.tools: list[Tool] = []
        self._loop = loop
        self._session: ClientSession | None = None
        self._closed = False  # closed on purpose (the run ended): not started again
        self._restart_lock = threading.Lock()
        self._new_session_state()

    def _new_session_state(self) -> None:
        """What one run of the server process has of its own: a first start and each restart begin with fresh ones."""
        self._stderr = tempfile.TemporaryFile("w+b")  # the server's stderr; removed when closed
        self._stop = asyncio.Event()  # set on the loop: the session task then leaves the SDK's context managers
        self._finished = threading.Event()  # the session task is over (the server is stopped, or never started)
        self._lost = False  # the connection closed under a call: the server is gone

    # ---- lifetime ----------------------------------------------------------
    def _launch(self) -> list[mcp_types.Tool]:
        """Starts the server process and its session on the loop; the tools it lists, within `startup_timeout_seconds`
        (the deadline itself is kept on the loop, in `_serve`; the wait here is a backstop)."""
        ready: Future[list[mcp_types.Tool]] = Future()
        asyncio.run_coroutine_threadsafe(self._serve(ready), self._loop)
        return ready.result(self.config.startup_timeout_seconds + CLOSE_SECONDS)

    def start(self) -> MCPServer:
        """Starts the server and lists its tools, within `startup_timeout_seconds`; a `ConfigError` names the command."""
        seconds = self.config.startup_timeout_seconds
        try:
            listed = self._launch()
        except Exception as error:
            if isinstance(_first(error), TimeoutError):
                key = f"{self.where}.startup_timeout_seconds"
                message = f"{self.where}: {self.label} did not start within {seconds:g} s ({key}){self._last_words()}"
            else:
                message = f"{self.where}: {self.label} did not start: {self._reason(error)}"
            self.close()
            raise ConfigError(message) from None
        self.tools = self._select(listed)
        return self

    async def _serve(self, ready: Future[list[mcp_types.Tool]]) -> None:
        # `${VAR}` in a value is read from rlvr's environment here, so a recipe (and the run's config.yaml) can name a
        # secret without holding it.
        env = {key: os.path.expandvars(value) for key, value in self.config.env.items()}
        params = StdioServerParameters(command=self.config.command, args=self.config.args, env=env or None)
        try:
            async with stdio_client(params, errlog=self._stderr) as (read, write), ClientSession(read, write) as session:
                # A deadline inside the task, not a cancellation from outside: the SDK's contexts then close in order
                # and stop the server.
                with anyio.fail_after(self.config.startup_timeout_seconds):
                    await session.initialize()
                    listed = await _list_tools(session)
                self._session = session
                ready.set_result(listed)
                await self._stop.wait()
        except Exception as error:
            if not ready.done():
                ready.set_exception(error)
        finally:
            self._session = None
            self._finished.set()

    def stop(self) -> None:
        """Asks the session task to end (the SDK then stops the server); `wait` for it."""
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)

    def wait(self) -> None:
        self._finished.wait(CLOSE_SECONDS)
        self._stderr.close()

    def close(self) -> None:
        self._closed = True
        self.stop()
        self.wait()

    def _restart(self) -> None:
        """A server that died under a run starts again at the next call (tools are built once per run: without this,
        one crash would fail every later call). The call that found it dead waits for the start; if the start
        fails, so does that call, with the reason, and the next call tries again."""
        with self._restart_lock:  # tool calls run in several threads: one of them restarts it
            if self.alive or self._closed:
                return
            self.stop()
            self.wait()
            self._new_session_state()
            try:
                self._launch()  # the same tools: the run built them once, from the first start's list
            except Exception as error:
                raise ToolError(f"{self.label}: it stopped, and starting it again failed: {self._reason(error)}") from None

    @property
    def alive(self) -> bool:
        return self._session is not None and not self._lost and not self._finished.is_set()

    def __enter__(self) -> MCPServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- tools -------------------------------------------------------------
    def _select(self, listed: Sequence[mcp_types.Tool]) -> list[Tool]:
        by_name = {t.name: t for t in listed}
        wanted = self.config.tools if self.config.tools is not None else list(by_name)
        missing = [name for name in wanted if name not in by_name]
        if missing:
            self.close()
            raise ConfigError(
                f"{self.where}.tools: {self.label} has no tool {missing[0]!r} (it has: {', '.join(by_name) or 'none'})"
            )
        return [self._as_tool(by_name[name]) for name in wanted]

    def _as_tool(self, listed: mcp_types.Tool) -> Tool:
        call = partial(self.call, listed.name)
        # The schema exactly as the server gives it: the tool loop validates calls against it before they are sent.
        parameters = dict(listed.input_schema)
        return Tool(tool_name(self.config, listed.name), listed.description or "", parameters, session=lambda: call)

    def call(self, name: str, arguments: dict[str, Any]) -> str:
        """Calls one of the server's tools (by its own name) within `timeout_seconds`; a `ToolError` says what failed."""
        if not self.alive:
            self._restart()
        session = self._session
        if session is None or not self.alive:
            raise ToolError(f"{self.label}: {name} failed: the server is not running{self._last_words()}")
        seconds = self.config.timeout_seconds
        # The SDK keeps the deadline (it then forgets the request and the session stays usable for other calls); the
        # wait here is a backstop for a loop that cannot run.
        call = session.call_tool(name, arguments, read_timeout_seconds=seconds)
        future = asyncio.run_coroutine_threadsafe(call, self._loop)
        try:
            result = future.result(seconds + CLOSE_SECONDS)
        except Exception as error:
            future.cancel()
            error = _first(error)
            if isinstance(error, TimeoutError) or (isinstance(error, MCPError) and error.code == mcp_types.REQUEST_TIMEOUT):
                raise ToolError(f"{self.label}: {name} did not answer within {seconds:g} s") from None
            if isinstance(error, MCPError) and error.code == mcp_types.CONNECTION_CLOSED:
                self._lost = True  # the next call starts it again; this session task can end
                self.stop()
            raise ToolError(f"{self.label}: {name} failed: {self._reason(error)}") from None
        text = result_text(result)
        if result.is_error:
            raise ToolError(text or f"{name} failed")
        return text or NO_OUTPUT

    # ---- errors ------------------------------------------------------------
    def _reason(self, error: BaseException) -> str:
        """One line: the error (the first of an exception group), and what the server last wrote to stderr."""
        error = _first(error)
        if isinstance(error, MCPError) and error.code == mcp_types.CONNECTION_CLOSED:
            return f"the connection closed (the server exited?){self._last_words()}"
        text = " ".join(str(error).split()) or type(error).__name__
        return f"{type(error).__name__}: {text}{self._last_words()}"

    def _last_words(self) -> str:
        try:
            size = os.fstat(self._stderr.fileno()).st_size
            tail = os.pread(self._stderr.fileno(), STDERR_TAIL_BYTES, max(0, size - STDERR_TAIL_BYTES))
        except (OSError, ValueError):  # closed already
            return ""
        lines = [line.strip() for line in tail.decode("utf-8", "replace").splitlines() if line.strip()]
        return f"; its stderr ends: {lines[-1][:STDERR_LINE_CHARS]}" if lines else ""


def _first(error: BaseException) -> BaseException:
    """The error itself, out of the exception groups that the SDK's task groups wrap it in."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


async def _list_tools(session: ClientSession) -> list[mcp_types.Tool]:
    listed: list[mcp_types.Tool] = []
    cursor: str | None = None
    while True:
        page = await session.list_tools(params=mcp_types.PaginatedRequestParams(cursor=cursor) if cursor else None)
        listed += page.tools
        cursor = page.next_cursor
        if not cursor:
            return listed


@dataclass
class _Servers:
    """This process's event loop thread and running servers, by config. A forked child starts its own: the parent's
    loop thread does not exist in it, and the parent's servers are the parent's to stop."""

    pid: int = field(default_factory=os.getpid)
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    running: dict[str, MCPServer] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self.loop.run_forever, name="rlvr-mcp", daemon=True)
        self.thread.start()


_LOCK = threading.Lock()
_STATE: _Servers | None = None


def _servers() -> _Servers:
    global _STATE
    if _STATE is None or _STATE.pid != os.getpid():
        _STATE = _Servers()
    return _STATE


def mcp_tools(servers: Sequence[MCPServerConfig]) -> list[Tool]:
    """The tools of these servers, each server started unless it runs already; a name two servers give is refused."""
    tools: list[Tool] = []
    with _LOCK:
        state = _servers()
        for index, config in enumerate(servers):
            key = config.model_dump_json()
            server = state.running.get(key)
            if server is None or not server.alive:
                server = state.running[key] = MCPServer(config, f"tools.mcp[{index}]", state.loop).start()
            tools += server.tools
    seen: set[str] = set()
    for built in tools:
        if built.name in seen:
            raise ConfigError(f"tools.mcp: two servers have a tool {built.name!r}: give one of them a `name` (a prefix)")
        seen.add(built.name)
    return tools


@atexit.register
def close_mcp_servers() -> None:
    """Stops every MCP server this process started (all at once, then waits for each) and its event loop."""
    global _STATE
    with _LOCK:
        state, _STATE = _STATE, None
    if state is None or state.pid != os.getpid():
        return
    for server in state.running.values():
        server._closed = True
        server.stop()
    for server in state.running.values():
        server.wait()
    state.loop.call_soon_threadsafe(state.loop.stop)
    state.thread.join(CLOSE_SECONDS)
    if not state.thread.is_alive():
        state.loop.close()
