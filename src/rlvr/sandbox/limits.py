"""What a sandboxed run may use (`SandboxLimits`) and what happened to it (`SandboxResult`)."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["SandboxLimits", "SandboxResult"]


@dataclass(frozen=True)
class SandboxLimits:
    """Resource caps for one sandboxed run."""

    wall_seconds: float = 10.0
    cpu_seconds: float = 10.0
    memory_mb: int = 512  # address space (RLIMIT_AS) of each process
    max_processes: int = 64  # tasks (processes and threads) of the sandbox uid
    max_open_files: int = 64
    max_output_bytes: int = 1 << 20  # kept per stream; the rest is discarded
    max_file_size_mb: int = 16  # largest file the code may write
    scratch_mb: int = 64  # size of each writable tmpfs (working dir, /tmp, /dev/shm) under a private root

    def validate(self) -> None:
        if not (self.wall_seconds > 0 and math.isfinite(self.wall_seconds)):
            raise ValueError(f"wall_seconds must be a positive number, got {self.wall_seconds!r}")
        if not (self.cpu_seconds > 0 and math.isfinite(self.cpu_seconds)):
            raise ValueError(f"cpu_seconds must be a positive number, got {self.cpu_seconds!r}")
        for name in ("memory_mb", "max_processes", "max_open_files", "max_file_size_mb", "scratch_mb"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.max_output_bytes, int) or self.max_output_bytes < 0:
            raise ValueError(f"max_output_bytes must be a non-negative integer, got {self.max_output_bytes!r}")
        if self.memory_mb < 32:
            raise ValueError(f"memory_mb={self.memory_mb} is too small for a Python interpreter to start (min 32)")
        if self.max_open_files < 8:
            raise ValueError(f"max_open_files={self.max_open_files} is too small for a Python interpreter (min 8)")


@dataclass
class SandboxResult:
    """What happened to one sandboxed run. ``exit_code`` is negative (minus the signal) when killed by a signal."""

    stdout: str
    stderr: str
    exit_code: int
    timed_out: bool = False
    # "wall_time", "cpu_time", "memory", "output_limit", "signal:SIGSEGV", ... or None for a normal exit
    killed_by: str | None = None
    output_truncated: bool = False
    duration_seconds: float = 0.0
    network_isolated: bool = False
    filesystem_isolated: bool = False
    isolation: tuple[str, ...] = ()
    cpu_seconds: float | None = None  # of the main process, when it reported
    peak_rss_mb: float | None = None  # of the main process, when it reported
    # Set when the sandbox itself could not be set up; the code then did not run.
    sandbox_error: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and self.killed_by is None and self.sandbox_error is None

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["isolation"] = list(self.isolation)
        return data

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)
