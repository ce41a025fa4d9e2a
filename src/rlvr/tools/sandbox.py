"""Run untrusted, model-written Python in a separate, locked-down process.

Layers, strongest first, each used when this machine allows it (probed once per process):

* Linux namespaces through util-linux ``unshare``: a network namespace whose only interface is a
  loopback that is down, a PID namespace (the sandbox cannot see or signal host processes, and
  everything in it dies with its init), private mount, IPC and UTS namespaces.
* A private root filesystem (``pivot_root``): system directories and the interpreter read-only,
  fresh size-capped tmpfs for the working directory, ``/tmp`` and ``/dev/shm``, a minimal ``/dev``,
  and nothing else of the host (no home directories, no project tree, no test folders).
* Privilege separation: as root, the code runs as a fresh unprivileged uid picked per run, which
  makes ``RLIMIT_NPROC`` bite (it is not enforced for root) and keeps host file permissions in force;
  as a normal user, it runs as a non-root uid inside a nested user namespace, so it holds no
  capabilities over its own mounts.
* ``setrlimit`` caps (address space, CPU, processes, open files, file size, no core dumps),
  ``PR_SET_NO_NEW_PRIVS``, a scrubbed environment, capped output capture and a wall-clock limit that
  kills the whole process group (and with it the namespace).

Without namespaces the rlimits, uid separation (as root) and output and time caps still apply, and a
one-time warning says that the network is not isolated.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import secrets
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

__all__ = ["IsolationInfo", "SandboxLimits", "SandboxResult", "isolation", "run_file", "run_python"]

logger = logging.getLogger(__name__)

MAIN_FILE = "main.py"
_TMP_DIR = ".tmp"
_RESERVED = {MAIN_FILE, _TMP_DIR}
# Reading past the cap only to discard is wasted work; a program still writing this many times the
# cap is flooding, not finishing, so it is killed.
_FLOOD_FACTOR = 4
_CHUNK = 65536
# After the main process is gone, how long to wait for the pipes to reach EOF.
_DRAIN_SECONDS = 1.0
# Per-run uids come from a range no distribution hands out, below 2**31 so that no tool reads them
# as negative; random so that concurrent sandboxes (and their RLIMIT_NPROC counts) never share one.
_UID_BASE = 2_000_000_000
_UID_SPAN = 1 << 27
_NESTED_UID = 1000


# In-sandbox source for harnesses that pass a secret (a nonce) on stdin, to be placed before their own code:
# `_take_stdin()` reads all of stdin, then leaves it in no file or descriptor the program can reach (it empties the
# shared stdin file and points fd 0 at /dev/null) and returns it with a duplicate of stdout for the harness's report
# and an open /dev/null descriptor.
TAKE_STDIN_SOURCE = r"""
import os


def _take_stdin():
    chunks = []
    while True:
        chunk = os.read(0, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    try:
        os.ftruncate(0, 0)
    except OSError:
        pass
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    return b"".join(chunks), os.dup(1), null
"""


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

    @property
    def pid_isolated(self) -> bool:
        return "pid" in self.features


@dataclass(frozen=True)
class _Mode:
    info: IsolationInfo
    prefix: tuple[str, ...]  # unshare argv, or empty
    rootfs: bool
    drop: str  # "setuid" (root: fresh host uid), "userns" (nested user namespace), "none"
    pre_drop: bool  # start unshare itself as the fresh uid, so the user namespace belongs to it


# The program that runs first inside the namespaces: it builds the private root, then forks the
# user's interpreter with privileges dropped and limits set, and stays as a minimal init that reaps
# orphans and reports the main process's wait status and CPU time on a side pipe (the user's code
# cannot forge an exit by a signal with an ordinary exit code there).  Standard library only, since
# it runs under `-I -S`.
_BOOTSTRAP = r"""
import ctypes, json, os, re, resource, shutil, signal, sys

cfg = json.loads(sys.argv[1])
status_fd = cfg["status_fd"]
os.set_inheritable(status_fd, False)
os.umask(0o022)

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC = 32, 1024, 2048, 4096, 16384
MS_PRIVATE, MS_RELATIME = 1 << 18, 1 << 21
MNT_DETACH = 2
CLONE_NEWUSER = 0x10000000
PR_SET_NO_NEW_PRIVS = 38
PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "ppc64": 203, "s390x": 217,
              "i686": 217, "i386": 217, "armv7l": 218}

def report(obj):
    try:
        os.write(status_fd, (json.dumps(obj) + "\n").encode())
    except OSError:
        pass

libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]

def enc(s):
    return None if s is None else os.fsencode(s)

def check(ret, what):
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, what + ": " + os.strerror(err))

def mount(src, dst, fstype, flags, data=None):
    check(libc.mount(enc(src), enc(dst), enc(fstype), flags, enc(data)), "mount " + dst)

def mountpoints_under(prefix):
    found = []
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            raw = line.split()[4]
            mp = os.fsdecode(re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), raw))
            if mp == prefix or mp.startswith(prefix.rstrip("/") + "/"):
                found.append(mp)
    return found

def remount_ro(target):
    # Flags the kernel locked on the source (in a user namespace) must be repeated, or EPERM.
    for mp in mountpoints_under(target):
        keep = os.statvfs(mp).f_flag
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV
        flags |= keep & (MS_NOEXEC | MS_NOATIME | MS_NODIRATIME)
        if keep & 4096:
            flags |= MS_RELATIME
        mount(None, mp, None, flags)

def place(path, is_dir):
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    if is_dir:
        os.makedirs(path, mode=0o755, exist_ok=True)
    elif not os.path.exists(path):
        open(path, "w").close()

def tmpfs(dst, mode, size_mb, flags=MS_NOSUID | MS_NODEV):
    place(dst, True)
    mount("tmpfs", dst, "tmpfs", flags, "mode=%s,size=%dm" % (mode, size_mb))

def chown_tree(path, uid):
    os.chown(path, uid, uid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, uid, follow_symlinks=False)

def build_rootfs():
    new = cfg["newroot"]
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount("tmpfs", new, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=4m")
    for link, target in cfg["symlinks"]:
        os.makedirs(os.path.dirname(new + link), mode=0o755, exist_ok=True)
        os.symlink(target, new + link)
    for src in cfg["ro_binds"]:
        dst = new + src
        place(dst, os.path.isdir(src))
        mount(src, dst, None, MS_BIND | MS_REC)
        remount_ro(dst)
    place(new + "/proc", True)
    mount("proc", new + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    tmpfs(new + "/dev", "0755", 1, MS_NOSUID | MS_NOEXEC)
    for node in ("null", "zero", "full", "random", "urandom"):
        if os.path.exists("/dev/" + node):
            place(new + "/dev/" + node, False)
            mount("/dev/" + node, new + "/dev/" + node, None, MS_BIND)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, new + "/dev/" + name)
    tmpfs(new + "/dev/shm", "1777", cfg["scratch_mb"])
    tmpfs(new + "/tmp", "1777", cfg["scratch_mb"])
    work = new + cfg["workdir"]
    tmpfs(work, "0700", cfg["scratch_mb"])
    shutil.copytree(cfg["workdir"], work, dirs_exist_ok=True, symlinks=True)
    if cfg["drop"] == "setuid":
        chown_tree(work, cfg["uid"])
    mount(None, new, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    nr = PIVOT_ROOT.get(os.uname().machine)
    if nr is None:
        raise OSError("pivot_root: unknown syscall number on " + os.uname().machine)
    os.chdir(new)
    check(libc.syscall(ctypes.c_long(nr), b".", b"."), "pivot_root")
    check(libc.umount2(b".", MNT_DETACH), "umount old root")
    os.chdir("/")

def drop_privileges():
    if cfg["drop"] == "setuid":
        uid = cfg["uid"]
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    elif cfg["drop"] == "userns":
        # A nested user namespace where the code is uid 1000, not root: no capabilities over the
        # mounts above, so it cannot remount the read-only binds writable.
        check(libc.unshare(CLONE_NEWUSER), "unshare(CLONE_NEWUSER)")
        for name, text in (("setgroups", "deny"), ("uid_map", "%d 0 1" % cfg["nested_uid"]),
                           ("gid_map", "%d 0 1" % cfg["nested_uid"])):
            with open("/proc/self/" + name, "w") as f:
                f.write(text)
    check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")

def set_limits():
    lim = cfg["limits"]
    for name, value in lim.items():
        resource.setrlimit(getattr(resource, name), tuple(value))

try:
    if cfg["rootfs"]:
        build_rootfs()
except BaseException as error:
    report({"setup_error": "%s: %s" % (type(error).__name__, error)})
    os._exit(125)

pid = os.fork()
if pid == 0:
    try:
        os.chdir(cfg["workdir"])
        drop_privileges()
        set_limits()
        os.execve(cfg["python"], cfg["argv"], cfg["env"])
    except BaseException as error:
        report({"setup_error": "%s: %s" % (type(error).__name__, error)})
    os._exit(126)

def backstop(signum, frame):
    # The parent enforces the wall limit; this only matters if the parent died without killing us.
    try:
        os.kill(pid, signal.SIGKILL)
    finally:
        os._exit(137)

signal.signal(signal.SIGALRM, backstop)
signal.alarm(cfg["backstop_seconds"])
while True:
    try:
        child, status, usage = os.wait4(-1, 0)
    except ChildProcessError:
        break
    if child == pid:
        report({"status": status, "cpu": usage.ru_utime + usage.ru_stime, "maxrss_kb": usage.ru_maxrss})
        break
os._exit(0)
"""


def _interpreter() -> str:
    base = getattr(sys, "_base_executable", None) or sys.executable
    for candidate in (base, sys.executable):
        real = os.path.realpath(candidate)
        if os.path.isfile(real) and os.access(real, os.X_OK):
            return real
    raise RuntimeError(f"no usable Python interpreter found (tried {base!r} and {sys.executable!r})")


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


def _unshare() -> str | None:
    return shutil.which("unshare") or shutil.which("unshare", path="/usr/bin:/bin:/usr/sbin:/sbin")


_NS_FLAGS = ("--net", "--pid", "--fork", "--kill-child", "--mount", "--ipc", "--uts")


def _candidates() -> list[_Mode]:
    unshare = _unshare()
    root = os.geteuid() == 0
    modes: list[_Mode] = []
    # A fresh uid can start the interpreter before (or without) a private root only if it can read it.
    reachable = _interpreter_reachable()
    if unshare is not None:
        ns = ("net", "pid", "mount", "ipc", "uts")
        user_flags = ("--user", "--map-root-user")
        if root:
            # Real root makes the namespaces and the mounts, then the code runs as a fresh uid.
            modes.append(
                _Mode(IsolationInfo((*ns, "rootfs", "uid"), _NS_FLAGS), (unshare, *_NS_FLAGS, "--"), True, "setuid", False)
            )
            if reachable:
                flags = (*_NS_FLAGS, "--mount-proc")
                modes.append(_Mode(IsolationInfo((*ns, "uid"), flags), (unshare, *flags, "--"), False, "setuid", False))
        # A user namespace: the only way for a normal user, and for root without CAP_SYS_ADMIN
        # (then started as the fresh uid, which must be able to reach the interpreter).
        if not root or reachable:
            flags = (*user_flags, *_NS_FLAGS)
            features = ("user", *ns, "rootfs") + (("uid",) if root else ())
            modes.append(_Mode(IsolationInfo(features, flags), (unshare, *flags, "--"), True, "userns", root))
            flags = (*user_flags, *_NS_FLAGS, "--mount-proc")
            features = ("user", *ns) + (("uid",) if root else ())
            modes.append(_Mode(IsolationInfo(features, flags), (unshare, *flags, "--"), False, "userns", root))
    return modes


_PROBE_CODE = """
import os, socket, sys
names = [name for _, name in socket.if_nameindex()]
sys.exit(0 if names == ["lo"] and os.getuid() != 0 and os.getppid() == 1 else 3)
"""

_MODE: _Mode | None = None
_MODE_LOCK = threading.Lock()


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
    return _reachable_by_others(_interpreter()) and _reachable_by_others(os.path.dirname(os.__file__))


def _fallback_mode(reason: str) -> _Mode:
    if os.geteuid() != 0:
        return _Mode(IsolationInfo((), (), reason), (), False, "none", False)
    python = _interpreter()
    if _interpreter_reachable():
        return _Mode(IsolationInfo(("uid",), (), reason), (), False, "setuid", False)
    # Without a private root, a fresh uid could not even start the interpreter.
    reason += f"; the interpreter {python} is not readable by other users, so the code runs as root"
    return _Mode(IsolationInfo((), (), reason), (), False, "none", False)


def _select_mode() -> _Mode:
    global _MODE
    with _MODE_LOCK:
        if _MODE is not None:
            return _MODE
        failures: list[str] = []
        chosen: _Mode | None = None
        candidates = _candidates()
        if not candidates:
            failures.append("`unshare` (util-linux) not found")
        probe_limits = SandboxLimits(wall_seconds=10, cpu_seconds=5, memory_mb=256)
        for mode in candidates:
            result = _execute(_PROBE_CODE, "", probe_limits, {}, mode)
            if result.exit_code == 0 and result.sandbox_error is None:
                chosen = mode
                break
            last_line = (result.stderr.strip().splitlines() or [f"exit {result.exit_code}"])[-1]
            failures.append(f"unshare {' '.join(mode.info.unshare_flags)}: {result.sandbox_error or last_line}")
            logger.debug("sandbox isolation candidate %s failed: %s", mode.info.features, result.stderr.strip())
        best = candidates[0].info.features if candidates else ()
        if chosen is None:
            chosen = _fallback_mode("; ".join(failures))
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
    return _select_mode().info


def _check_files(files: Mapping[str, str]) -> dict[PurePosixPath, str]:
    checked: dict[PurePosixPath, str] = {}
    for name, content in files.items():
        if not isinstance(name, str) or not isinstance(content, str):
            raise TypeError("files must map relative path strings to text")
        path = PurePosixPath(name)
        if not path.parts or path.is_absolute() or ".." in path.parts or path.parts[0] in _RESERVED or "\0" in name:
            raise ValueError(f"invalid sandbox file name {name!r}: relative, no '..', not one of {sorted(_RESERVED)}")
        checked[path] = content
    return checked


def run_python(
    code: str, stdin: str = "", limits: SandboxLimits = SandboxLimits(), files: Mapping[str, str] | None = None
) -> SandboxResult:
    """Run ``code`` as ``main.py`` in a fresh sandbox, with ``files`` (relative path -> text) beside it.

    Never raises because of what the code does; raises ``TypeError``/``ValueError`` on bad arguments.
    """
    if not isinstance(code, str):
        raise TypeError(f"code must be str, not {type(code).__name__}")
    if not isinstance(stdin, str):
        raise TypeError(f"stdin must be str, not {type(stdin).__name__}")
    if not isinstance(limits, SandboxLimits):
        raise TypeError(f"limits must be SandboxLimits, not {type(limits).__name__}")
    limits.validate()
    checked = _check_files(files or {})
    return _execute(code, stdin, limits, checked, _select_mode())


def run_file(path: str | os.PathLike[str], limits: SandboxLimits = SandboxLimits(), stdin: str = "") -> SandboxResult:
    """Run the Python file at ``path`` (read on the host, then copied into the sandbox)."""
    code = Path(path).read_text(encoding="utf-8")
    return run_python(code, stdin=stdin, limits=limits)


def _rlimits(limits: SandboxLimits, mode: _Mode) -> dict[str, list[int]]:
    cpu = max(1, math.ceil(limits.cpu_seconds))
    nproc = limits.max_processes
    if mode.drop == "none":
        # Without a separate uid the count includes every process of this user, so the cap is on top.
        nproc += _count_processes(os.getuid())
    return {
        "RLIMIT_AS": [limits.memory_mb << 20] * 2,
        "RLIMIT_CPU": [cpu, cpu + 1],  # SIGXCPU at the soft limit, SIGKILL a second later
        "RLIMIT_NPROC": [nproc] * 2,
        "RLIMIT_NOFILE": [limits.max_open_files] * 2,
        "RLIMIT_FSIZE": [limits.max_file_size_mb << 20] * 2,
        "RLIMIT_CORE": [0, 0],
    }


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


def _count_processes(uid: int) -> int:
    return sum(1 for owner in _proc_uids().values() if owner == uid)


def _sweep_uid(uid: int) -> None:
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


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"SIG{number}"


_MEMORY_MARKERS = ("MemoryError", "Cannot allocate memory", "out of memory", "std::bad_alloc")


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


def _execute(code: str, stdin: str, limits: SandboxLimits, files: Mapping[Any, str], mode: _Mode) -> SandboxResult:
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
        python = _interpreter()
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
        return _supervise(proc, status_r, limits, uid, started, result_base)
    finally:
        if proc is not None:
            _kill(proc, uid)
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        elif uid is not None:
            _sweep_uid(uid)
        for fd in (status_r, status_w):
            if fd >= 0:
                os.close(fd)
        if stdin_file is not None:
            stdin_file.close()
        _rmtree(stage)


def _kill(proc: subprocess.Popen[bytes], uid: int | None) -> None:
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
        _sweep_uid(uid)


def _supervise(
    proc: subprocess.Popen[bytes], status_r: int, limits: SandboxLimits, uid: int | None, started: float, base: dict[str, Any]
) -> SandboxResult:
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
        _kill(proc, uid)
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
