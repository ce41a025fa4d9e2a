"""Processes by uid, from /proc: counting them for `RLIMIT_NPROC`, and killing what a per-run uid left behind."""

from __future__ import annotations

import os
import signal
import time

__all__ = ["count_processes", "sweep_uid"]


def _proc_uids() -> dict[int, int]:
    """Real uid of every live process; zombies are left out, as they hold nothing and cannot be killed."""
    uids: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status", "rb") as f:
                zombie = False
                for line in f:
                    if line.startswith(b"State:"):
                        zombie = line.split()[1] in (b"Z", b"X")
                    elif line.startswith(b"Uid:"):
                        if not zombie:
                            uids[int(entry)] = int(line.split()[1])
                        break
        except (OSError, ValueError, IndexError):
            continue
    return uids


def count_processes(uid: int) -> int:
    return sum(1 for owner in _proc_uids().values() if owner == uid)


def sweep_uid(uid: int) -> None:
    """Kill every process of a per-run uid: catches code that left the process group (setsid) without a PID namespace."""
    for _ in range(50):
        pids = [pid for pid, owner in _proc_uids().items() if owner == uid]
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.01)
