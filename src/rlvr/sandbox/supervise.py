"""Watching a started sandbox: its output captured up to a cap, its time limit enforced, its end classified.

The launcher (`rlvr.sandbox.launch`) hands over the started process and the read end of the status pipe on which
the bootstrap reports the main process's wait status and CPU time; what the user's code prints cannot forge those.
"""

from __future__ import annotations

import json
import logging
import math
import os
import selectors
import signal
import subprocess
import time
from typing import Any

from rlvr.sandbox.limits import SandboxLimits, SandboxResult
from rlvr.sandbox.processes import sweep_uid

__all__ = ["kill", "supervise"]

logger = logging.getLogger(__name__)

# Reading past the cap only to discard is wasted work; a program still writing this many times the
# cap is flooding, not finishing, so it is killed.
_FLOOD_FACTOR = 4
_CHUNK = 65536
# After the main process is gone, how long to wait for the pipes to reach EOF.
_DRAIN_SECONDS = 1.0
# In the last 4 KiB of stderr of a failed run: it ran out of its address space.
_MEMORY_MARKERS = ("MemoryError", "Cannot allocate memory", "out of memory", "std::bad_alloc")


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"SIG{number}"


class _Capture:
    """One output stream, kept up to ``cap`` bytes and counted beyond."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.data = bytearray()
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.cap - len(self.data)
        if room > 0:
            self.data += chunk[:room]

    @property
    def truncated(self) -> bool:
        return self.total > self.cap

    @property
    def flooding(self) -> bool:
        return self.total > self.cap * _FLOOD_FACTOR + _CHUNK

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


def _exited(pid: int) -> bool:
    """Whether the child has exited, leaving it unreaped so its process group id stays valid for killpg."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def kill(proc: subprocess.Popen[bytes], uid: int | None) -> None:
    """Kill the launcher's process group (and with it the namespace), reap it, then whatever the per-run uid left."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if proc.returncode is None:
        try:
            proc.kill()
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        logger.error("sandbox launcher %d did not die after SIGKILL", proc.pid)
    if uid is not None:
        sweep_uid(uid)


def supervise(
    proc: subprocess.Popen[bytes], status_r: int, limits: SandboxLimits, uid: int | None, started: float, base: dict[str, Any]
) -> SandboxResult:
    """Capture the output and enforce the wall limit until the main process ends, then kill the rest and say how it
    ended; ``base`` holds the result's isolation fields."""
    assert proc.stdout is not None and proc.stderr is not None
    captures = {proc.stdout.fileno(): _Capture(limits.max_output_bytes), proc.stderr.fileno(): _Capture(limits.max_output_bytes)}
    out, err = captures[proc.stdout.fileno()], captures[proc.stderr.fileno()]
    selector = selectors.DefaultSelector()
    for fd in captures:
        os.set_blocking(fd, False)
        selector.register(fd, selectors.EVENT_READ)
    pidfd = -1
    try:
        pidfd = os.pidfd_open(proc.pid)
        selector.register(pidfd, selectors.EVENT_READ)
    except (AttributeError, OSError):
        pidfd = -1

    def read(fd: int) -> None:
        try:
            chunk = os.read(fd, _CHUNK)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if chunk:
            captures[fd].add(chunk)
        else:
            selector.unregister(fd)

    deadline = started + limits.wall_seconds
    timed_out = flooded = False
    try:
        while True:
            if _exited(proc.pid):
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            wait = remaining if pidfd >= 0 else min(remaining, 0.02)
            for key, _ in selector.select(wait):
                if key.fd in captures:
                    read(key.fd)
            if out.flooding or err.flooding:
                flooded = True
                break
        # Whatever is left of the sandbox (the namespace, or background processes without one) dies
        # with the main program; then the pipes reach EOF.
        kill(proc, uid)
        drain_until = time.monotonic() + _DRAIN_SECONDS
        while any(fd in captures for fd in _registered(selector)) and time.monotonic() < drain_until:
            for key, _ in selector.select(max(0.0, drain_until - time.monotonic())):
                if key.fd in captures:
                    read(key.fd)
    finally:
        selector.close()
        if pidfd >= 0:
            os.close(pidfd)

    records = _read_status(status_r)
    duration = time.monotonic() - started
    setup_error = next((r["setup_error"] for r in records if "setup_error" in r), None)
    status = next((r for r in records if "status" in r), None)
    cpu = float(status["cpu"]) if status is not None else None
    peak_rss = float(status["maxrss_kb"]) / 1024 if status is not None else None
    stderr_text = err.text()
    if setup_error is not None:
        return SandboxResult(
            out.text(),
            stderr_text,
            -1,
            duration_seconds=duration,
            output_truncated=out.truncated or err.truncated,
            sandbox_error=setup_error,
            **base,
        )

    exit_code: int
    signum: int | None = None
    if status is not None:
        wait_status = int(status["status"])
        if os.WIFSIGNALED(wait_status):
            signum = os.WTERMSIG(wait_status)
            exit_code = -signum
        else:
            exit_code = os.WEXITSTATUS(wait_status)
    else:
        # The main process never reported: it was still running when we killed everything.
        signum = signal.SIGKILL
        exit_code = -signal.SIGKILL

    killed_by: str | None = None
    if timed_out:
        killed_by = "wall_time"
    elif flooded:
        killed_by = "output_limit"
    elif signum == signal.SIGXCPU or (
        signum == signal.SIGKILL and cpu is not None and cpu >= math.ceil(limits.cpu_seconds) - 0.05
    ):
        killed_by = "cpu_time"
    elif exit_code != 0 and any(marker in stderr_text[-4096:] for marker in _MEMORY_MARKERS):
        killed_by = "memory"
    elif signum is not None:
        killed_by = f"signal:{_signal_name(signum)}"
    return SandboxResult(
        out.text(),
        stderr_text,
        exit_code,
        timed_out=timed_out,
        killed_by=killed_by,
        output_truncated=out.truncated or err.truncated,
        duration_seconds=duration,
        cpu_seconds=cpu,
        peak_rss_mb=peak_rss,
        **base,
    )


def _registered(selector: selectors.BaseSelector) -> list[int]:
    return [key.fd for key in selector.get_map().values()]


def _read_status(fd: int) -> list[dict[str, Any]]:
    os.set_blocking(fd, False)
    data = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    records: list[dict[str, Any]] = []
    for line in data.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records
