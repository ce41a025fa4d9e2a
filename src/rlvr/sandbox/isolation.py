"""Which isolation this process uses: the strongest mode that works here, found by trying each once.

The first run (or `isolation()`) tries the candidate modes (`rlvr.sandbox.modes`) strongest first, running a probe
program in each until one works: the probe must see only a loopback interface, run as a non-root uid and have the
namespace's init (pid 1) as its parent. Every later run in the process uses that mode without probing again.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import warnings

from rlvr.sandbox.launch import execute
from rlvr.sandbox.limits import SandboxLimits
from rlvr.sandbox.modes import IsolationInfo, Mode, candidate_modes, fallback_mode

__all__ = ["isolation", "select_mode"]

logger = logging.getLogger(__name__)

_PROBE_CODE = """
import os, socket, sys
names = [name for _, name in socket.if_nameindex()]
sys.exit(0 if names == ["lo"] and os.getuid() != 0 and os.getppid() == 1 else 3)
"""

_MODE: Mode | None = None
_MODE_LOCK = threading.Lock()


def select_mode() -> Mode:
    """The mode of every run in this process, probed on first use (warns once if the network is not isolated)."""
    global _MODE
    with _MODE_LOCK:
        if _MODE is not None:
            return _MODE
        failures: list[str] = []
        chosen: Mode | None = None
        candidates = candidate_modes()
        if not candidates:
            failures.append("`unshare` (util-linux) not found")
        probe_limits = SandboxLimits(wall_seconds=10, cpu_seconds=5, memory_mb=256)
        for mode in candidates:
            result = execute(_PROBE_CODE, "", probe_limits, {}, mode)
            if result.exit_code == 0 and result.sandbox_error is None:
                chosen = mode
                break
            last_line = (result.stderr.strip().splitlines() or [f"exit {result.exit_code}"])[-1]
            failures.append(f"unshare {' '.join(mode.info.unshare_flags)}: {result.sandbox_error or last_line}")
            logger.debug("sandbox isolation candidate %s failed: %s", mode.info.features, result.stderr.strip())
        best = candidates[0].info.features if candidates else ()
        if chosen is None:
            chosen = fallback_mode("; ".join(failures))
            message = (
                f"network not isolated: Linux namespaces are unavailable ({chosen.info.reason}); "
                "sandboxed code can reach the network and see host processes"
            )
            logger.warning(message)
            warnings.warn(message, RuntimeWarning, stacklevel=3)
        elif chosen.info.features != best:
            reason = "; ".join(failures)
            chosen = dataclasses.replace(chosen, info=dataclasses.replace(chosen.info, reason=reason))
            logger.warning("sandbox: weaker isolation %s (%s)", chosen.info.features, reason)
        else:
            logger.info("sandbox isolation: %s", " ".join(chosen.info.features))
        _MODE = chosen
        return chosen


def isolation() -> IsolationInfo:
    """The isolation sandboxed runs get in this process (probes the kernel on first use)."""
    return select_mode().info
