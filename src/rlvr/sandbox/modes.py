"""The ways this machine might isolate a run, strongest first, and the fallback when none of them works.

Which one is used is decided by trying them (`rlvr.sandbox.isolation`); this module only lists them.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["IsolationInfo", "Mode", "candidate_modes", "fallback_mode", "interpreter"]

_NS_FLAGS = ("--net", "--pid", "--fork", "--kill-child", "--mount", "--ipc", "--uts")


@dataclass(frozen=True)
class IsolationInfo:
    """The isolation this process uses for every sandboxed run (decided once, by probing)."""

    features: tuple[str, ...]
    unshare_flags: tuple[str, ...] = ()
    reason: str | None = None  # why stronger isolation was not available, if it was not

    @property
    def network_isolated(self) -> bool:
        return "net" in self.features

    @property
    def filesystem_isolated(self) -> bool:
        return "rootfs" in self.features


@dataclass(frozen=True)
class Mode:
    """How to start a run: the isolation it gives, and what the launcher and the bootstrap must do for it."""

    info: IsolationInfo
    prefix: tuple[str, ...]  # unshare argv, or empty
    rootfs: bool
    drop: str  # "setuid" (root: fresh host uid), "userns" (nested user namespace), "none"
    pre_drop: bool  # start unshare itself as the fresh uid, so the user namespace belongs to it


def interpreter() -> str:
    base = getattr(sys, "_base_executable", None) or sys.executable
    for candidate in (base, sys.executable):
        real = os.path.realpath(candidate)
        if os.path.isfile(real) and os.access(real, os.X_OK):
            return real
    raise RuntimeError(f"no usable Python interpreter found (tried {base!r} and {sys.executable!r})")


def _unshare() -> str | None:
    return shutil.which("unshare") or shutil.which("unshare", path="/usr/bin:/bin:/usr/sbin:/sbin")


def _reachable_by_others(path: str) -> bool:
    """Whether a uid with no relation to the owner can read ``path`` (and search every directory above it)."""
    real = Path(os.path.realpath(path))
    try:
        if not all(os.stat(parent).st_mode & stat.S_IXOTH for parent in real.parents):
            return False
        mode = os.stat(real).st_mode
    except OSError:
        return False
    need = stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(mode) or os.access(real, os.X_OK) else 0)
    return mode & need == need


def _interpreter_reachable() -> bool:
    return _reachable_by_others(interpreter()) and _reachable_by_others(os.path.dirname(os.__file__))


def candidate_modes() -> list[Mode]:
    """The namespace modes worth trying here, strongest first; empty without `unshare`."""
    unshare = _unshare()
    root = os.geteuid() == 0
    modes: list[Mode] = []
    # A fresh uid can start the interpreter before (or without) a private root only if it can read it.
    reachable = _interpreter_reachable()
    if unshare is not None:
        ns = ("net", "pid", "mount", "ipc", "uts")
        user_flags = ("--user", "--map-root-user")
        if root:
            # Real root makes the namespaces and the mounts, then the code runs as a fresh uid.
            modes.append(
                Mode(IsolationInfo((*ns, "rootfs", "uid"), _NS_FLAGS), (unshare, *_NS_FLAGS, "--"), True, "setuid", False)
            )
            if reachable:
                flags = (*_NS_FLAGS, "--mount-proc")
                modes.append(Mode(IsolationInfo((*ns, "uid"), flags), (unshare, *flags, "--"), False, "setuid", False))
        # A user namespace: the only way for a normal user, and for root without CAP_SYS_ADMIN
        # (then started as the fresh uid, which must be able to reach the interpreter).
        if not root or reachable:
            flags = (*user_flags, *_NS_FLAGS)
            features = ("user", *ns, "rootfs") + (("uid",) if root else ())
            modes.append(Mode(IsolationInfo(features, flags), (unshare, *flags, "--"), True, "userns", root))
            flags = (*user_flags, *_NS_FLAGS, "--mount-proc")
            features = ("user", *ns) + (("uid",) if root else ())
            modes.append(Mode(IsolationInfo(features, flags), (unshare, *flags, "--"), False, "userns", root))
    return modes


def fallback_mode(reason: str) -> Mode:
    """No namespaces: rlimits, and as root a fresh uid when that uid can still start the interpreter."""
    if os.geteuid() != 0:
        return Mode(IsolationInfo((), (), reason), (), False, "none", False)
    python = interpreter()
    if _interpreter_reachable():
        return Mode(IsolationInfo(("uid",), (), reason), (), False, "setuid", False)
    # Without a private root, a fresh uid could not even start the interpreter.
    reason += f"; the interpreter {python} is not readable by other users, so the code runs as root"
    return Mode(IsolationInfo((), (), reason), (), False, "none", False)
