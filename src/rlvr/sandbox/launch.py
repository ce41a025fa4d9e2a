"""Starting one sandboxed run: stage its files, then launch the bootstrap inside the chosen isolation mode.

The bootstrap (`bootstrap.py`, run as `python -I -S -c <source> <config as JSON>`) builds the private root, drops
privileges, sets the rlimits and starts the user's interpreter on `main.py`; this side writes the files, decides
the config and hands the started process to `rlvr.sandbox.supervise`, and removes everything afterwards.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rlvr.sandbox.limits import SandboxLimits, SandboxResult
from rlvr.sandbox.modes import Mode, interpreter
from rlvr.sandbox.processes import count_processes, sweep_uid
from rlvr.sandbox.programs import read_program
from rlvr.sandbox.supervise import kill, supervise

__all__ = ["MAIN_FILE", "RESERVED", "execute"]

MAIN_FILE = "main.py"
_TMP_DIR = ".tmp"
RESERVED = frozenset({MAIN_FILE, _TMP_DIR})  # names in the working directory that `files` may not use
# Per-run uids come from a range no distribution hands out, below 2**31 so that no tool reads them
# as negative; random so that concurrent sandboxes (and their RLIMIT_NPROC counts) never share one.
_UID_BASE = 2_000_000_000
_UID_SPAN = 1 << 27
_NESTED_UID = 1000

# The program that runs first inside the namespaces; read once, passed to every launch as its `-c` source.
_BOOTSTRAP = read_program("rlvr.sandbox", "bootstrap.py")


def _rootfs_layout(python: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Read-only binds and symlinks that make the interpreter and the system libraries work in the private root."""
    binds: list[str] = ["/usr"]
    links: list[tuple[str, str]] = []
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            links.append((top, os.readlink(top)))
        elif os.path.isdir(top):
            binds.append(top)
    binds += [p for p in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime") if os.path.exists(p)]
    wanted = [sys.base_prefix, os.path.dirname(python)]
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        wanted.append(str(sysconfig.get_config_var("LIBDIR") or ""))
    for path in wanted:
        if not path:
            continue
        real = os.path.realpath(path)
        if os.path.isdir(real) and not any(real == b or real.startswith(b.rstrip("/") + "/") for b in binds):
            binds.append(real)
    # /etc/localtime is usually a symlink into /usr/share/zoneinfo: recreate the link, since /usr is bound.
    fixed: list[str] = []
    for path in binds:
        if os.path.islink(path):
            links.append((path, os.readlink(path)))
        else:
            fixed.append(path)
    return fixed, links


def _rlimits(limits: SandboxLimits, mode: Mode) -> dict[str, list[int]]:
    cpu = max(1, math.ceil(limits.cpu_seconds))
    nproc = limits.max_processes
    if mode.drop == "none":
        # Without a separate uid the count includes every process of this user, so the cap is on top.
        nproc += count_processes(os.getuid())
    return {
        "RLIMIT_AS": [limits.memory_mb << 20] * 2,
        "RLIMIT_CPU": [cpu, cpu + 1],  # SIGXCPU at the soft limit, SIGKILL a second later
        "RLIMIT_NPROC": [nproc] * 2,
        "RLIMIT_NOFILE": [limits.max_open_files] * 2,
        "RLIMIT_FSIZE": [limits.max_file_size_mb << 20] * 2,
        "RLIMIT_CORE": [0, 0],
    }


def _rmtree(path: Path) -> None:
    # Code running as this user may have removed permissions on its own directories.
    def retry(func: Any, target: str, _exc: Any) -> None:
        try:
            os.chmod(os.path.dirname(target), stat.S_IRWXU)
            if os.path.isdir(target) and not os.path.islink(target):
                os.chmod(target, stat.S_IRWXU)
            func(target)
        except OSError:
            pass

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=retry)
    else:
        shutil.rmtree(path, onerror=retry)
    if path.exists():
        shutil.rmtree(path, ignore_errors=True)


def execute(code: str, stdin: str, limits: SandboxLimits, files: Mapping[Any, str], mode: Mode) -> SandboxResult:
    """Run ``code`` as ``main.py`` with ``files`` beside it in ``mode``; the arguments are already checked."""
    started = time.monotonic()
    info = mode.info
    result_base = {
        "network_isolated": info.network_isolated,
        "filesystem_isolated": info.filesystem_isolated,
        "isolation": info.features,
    }
    stage = Path(tempfile.mkdtemp(prefix="rlvr-sandbox-"))
    uid = (_UID_BASE + secrets.randbelow(_UID_SPAN)) if mode.drop == "setuid" or mode.pre_drop else None
    proc: subprocess.Popen[bytes] | None = None
    status_r = status_w = -1
    stdin_file = None
    try:
        work = stage / "work"
        (work / _TMP_DIR).mkdir(parents=True)
        (stage / "root").mkdir()
        (work / MAIN_FILE).write_text(code, encoding="utf-8")
        for rel, content in files.items():
            target = work / Path(str(rel))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content, encoding="utf-8")
        if uid is not None:
            for root, _dirs, names in os.walk(stage):
                os.chown(root, uid, uid)
                for name in names:
                    os.chown(os.path.join(root, name), uid, uid)
        python = interpreter()
        ro_binds, symlinks = _rootfs_layout(python) if mode.rootfs else ([], [])
        workdir = str(work)
        env = {
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "HOME": workdir,
            "TMPDIR": str(work / _TMP_DIR),
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONHASHSEED": "0",
            "PYTHONIOENCODING": "utf-8",
            "PYTHONUTF8": "1",
        }
        status_r, status_w = os.pipe()
        cfg = {
            "status_fd": status_w,
            "rootfs": mode.rootfs,
            "newroot": str(stage / "root"),
            "ro_binds": ro_binds,
            "symlinks": symlinks,
            "scratch_mb": limits.scratch_mb,
            "workdir": workdir,
            "drop": mode.drop,
            "uid": uid,
            "nested_uid": _NESTED_UID,
            "limits": _rlimits(limits, mode),
            "python": python,
            # Not -I: its -E would drop PYTHONHASHSEED; the environment is ours anyway.  -s -S: no
            # user or site packages.  The working directory is on sys.path so `files` can be imported.
            "argv": [python, "-s", "-S", "-B", MAIN_FILE],
            "env": env,
            "backstop_seconds": math.ceil(limits.wall_seconds) + 5,
        }
        stdin_file = tempfile.TemporaryFile()
        stdin_file.write(stdin.encode("utf-8"))
        stdin_file.seek(0)
        argv = [*mode.prefix, python, "-I", "-S", "-c", _BOOTSTRAP, json.dumps(cfg)]
        extra: dict[str, Any] = {}
        if mode.pre_drop and uid is not None:
            extra = {"user": uid, "group": uid, "extra_groups": []}
        try:
            proc = subprocess.Popen(
                argv,
                stdin=stdin_file,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                cwd="/",
                close_fds=True,
                pass_fds=(status_w,),
                start_new_session=True,
                **extra,
            )
        except OSError as error:
            return SandboxResult(
                "", "", -1, duration_seconds=time.monotonic() - started, sandbox_error=f"launch failed: {error}", **result_base
            )
        os.close(status_w)
        status_w = -1
        return supervise(proc, status_r, limits, uid, started, result_base)
    finally:
        if proc is not None:
            kill(proc, uid)
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        elif uid is not None:
            sweep_uid(uid)
        for fd in (status_r, status_w):
            if fd >= 0:
                os.close(fd)
        if stdin_file is not None:
            stdin_file.close()
        _rmtree(stage)
