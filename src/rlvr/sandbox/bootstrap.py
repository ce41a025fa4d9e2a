"""The program that runs first inside the sandbox's namespaces.

It builds the private root, then forks the user's interpreter with privileges dropped and limits set, and stays as a
minimal init that reaps orphans and reports the main process's wait status and CPU time on a side pipe (the user's
code cannot forge an exit by a signal with an ordinary exit code there).

The launcher (`rlvr.sandbox.launch`) runs it as `python -I -S -c <this file's source> <config as JSON>`: standard
library only, since it runs under `-I -S`, and nothing happens unless it runs as `__main__` (importing it does not
run it). It is the same interpreter as the host's, so the same Python version.
"""

import ctypes
import json
import os
import re
import resource
import shutil
import signal
import sys

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC = 32, 1024, 2048, 4096, 16384
MS_PRIVATE, MS_RELATIME = 1 << 18, 1 << 21
ST_RELATIME = 4096  # statvfs's f_flag bit for a relatime mount
MNT_DETACH = 2
CLONE_NEWUSER = 0x10000000
PR_SET_NO_NEW_PRIVS = 38
PIVOT_ROOT = {
    "x86_64": 155,
    "aarch64": 41,
    "riscv64": 41,
    "ppc64le": 203,
    "ppc64": 203,
    "s390x": 217,
    "i686": 217,
    "i386": 217,
    "armv7l": 218,
}


def report(status_fd: int, obj: dict) -> None:
    try:
        os.write(status_fd, (json.dumps(obj) + "\n").encode())
    except OSError:
        pass


def enc(s: str | None) -> bytes | None:
    return None if s is None else os.fsencode(s)


def check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, what + ": " + os.strerror(err))


def mountpoints_under(prefix: str) -> list[str]:
    found = []
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            raw = line.split()[4]
            mp = os.fsdecode(re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), raw))
            if mp == prefix or mp.startswith(prefix.rstrip("/") + "/"):
                found.append(mp)
    return found


def place(path: str, is_dir: bool) -> None:
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    if is_dir:
        os.makedirs(path, mode=0o755, exist_ok=True)
    elif not os.path.exists(path):
        open(path, "w").close()


def chown_tree(path: str, uid: int) -> None:
    os.chown(path, uid, uid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, uid, follow_symlinks=False)


class Setup:
    """The privileged steps before the user's code starts, with the config and the C library they need."""

    def __init__(self, cfg: dict) -> None:
        self.cfg = cfg
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
        self.libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]

    def mount(self, src: str | None, dst: str, fstype: str | None, flags: int, data: str | None = None) -> None:
        check(self.libc.mount(enc(src), enc(dst), enc(fstype), flags, enc(data)), "mount " + dst)

    def remount_ro(self, target: str) -> None:
        # Flags the kernel locked on the source (in a user namespace) must be repeated, or EPERM.
        for mp in mountpoints_under(target):
            keep = os.statvfs(mp).f_flag
            flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV
            flags |= keep & (MS_NOEXEC | MS_NOATIME | MS_NODIRATIME)
            if keep & ST_RELATIME:
                flags |= MS_RELATIME
            self.mount(None, mp, None, flags)

    def tmpfs(self, dst: str, mode: str, size_mb: int, flags: int = MS_NOSUID | MS_NODEV) -> None:
        place(dst, True)
        self.mount("tmpfs", dst, "tmpfs", flags, f"mode={mode},size={size_mb}m")

    def build_rootfs(self) -> None:
        cfg = self.cfg
        new = cfg["newroot"]
        self.mount(None, "/", None, MS_REC | MS_PRIVATE)
        self.mount("tmpfs", new, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=4m")
        for link, target in cfg["symlinks"]:
            os.makedirs(os.path.dirname(new + link), mode=0o755, exist_ok=True)
            os.symlink(target, new + link)
        for src in cfg["ro_binds"]:
            dst = new + src
            place(dst, os.path.isdir(src))
            self.mount(src, dst, None, MS_BIND | MS_REC)
            self.remount_ro(dst)
        place(new + "/proc", True)
        self.mount("proc", new + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        self.tmpfs(new + "/dev", "0755", 1, MS_NOSUID | MS_NOEXEC)
        for node in ("null", "zero", "full", "random", "urandom"):
            if os.path.exists("/dev/" + node):
                place(new + "/dev/" + node, False)
                self.mount("/dev/" + node, new + "/dev/" + node, None, MS_BIND)
        for name, target in (
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ):
            os.symlink(target, new + "/dev/" + name)
        self.tmpfs(new + "/dev/shm", "1777", cfg["scratch_mb"])
        self.tmpfs(new + "/tmp", "1777", cfg["scratch_mb"])
        work = new + cfg["workdir"]
        self.tmpfs(work, "0700", cfg["scratch_mb"])
        shutil.copytree(cfg["workdir"], work, dirs_exist_ok=True, symlinks=True)
        if cfg["drop"] == "setuid":
            chown_tree(work, cfg["uid"])
        self.mount(None, new, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
        nr = PIVOT_ROOT.get(os.uname().machine)
        if nr is None:
            raise OSError("pivot_root: unknown syscall number on " + os.uname().machine)
        os.chdir(new)
        check(self.libc.syscall(ctypes.c_long(nr), b".", b"."), "pivot_root")
        check(self.libc.umount2(b".", MNT_DETACH), "umount old root")
        os.chdir("/")

    def drop_privileges(self) -> None:
        cfg = self.cfg
        if cfg["drop"] == "setuid":
            uid = cfg["uid"]
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
        elif cfg["drop"] == "userns":
            # A nested user namespace where the code is uid 1000, not root: no capabilities over the
            # mounts above, so it cannot remount the read-only binds writable.
            check(self.libc.unshare(CLONE_NEWUSER), "unshare(CLONE_NEWUSER)")
            for name, text in (
                ("setgroups", "deny"),
                ("uid_map", f"{cfg['nested_uid']} 0 1"),
                ("gid_map", f"{cfg['nested_uid']} 0 1"),
            ):
                with open("/proc/self/" + name, "w") as f:
                    f.write(text)
        check(self.libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")

    def set_limits(self) -> None:
        for name, value in self.cfg["limits"].items():
            resource.setrlimit(getattr(resource, name), tuple(value))


def reap(pid: int, status_fd: int, backstop_seconds: int) -> None:
    """Stay as the namespace's init: reap orphans until the main process ends, then report how it ended."""

    def backstop(signum: int, frame: object) -> None:
        # The parent enforces the wall limit; this only matters if the parent died without killing us.
        try:
            os.kill(pid, signal.SIGKILL)
        finally:
            os._exit(137)

    signal.signal(signal.SIGALRM, backstop)
    signal.alarm(backstop_seconds)
    while True:
        try:
            child, status, usage = os.wait4(-1, 0)
        except ChildProcessError:
            break
        if child == pid:
            report(status_fd, {"status": status, "cpu": usage.ru_utime + usage.ru_stime, "maxrss_kb": usage.ru_maxrss})
            break


def main() -> None:
    cfg = json.loads(sys.argv[1])
    status_fd = cfg["status_fd"]
    os.set_inheritable(status_fd, False)
    os.umask(0o022)
    setup = Setup(cfg)
    try:
        if cfg["rootfs"]:
            setup.build_rootfs()
    except BaseException as error:
        report(status_fd, {"setup_error": f"{type(error).__name__}: {error}"})
        os._exit(125)

    pid = os.fork()
    if pid == 0:
        try:
            os.chdir(cfg["workdir"])
            setup.drop_privileges()
            setup.set_limits()
            os.execve(cfg["python"], cfg["argv"], cfg["env"])
        except BaseException as error:
            report(status_fd, {"setup_error": f"{type(error).__name__}: {error}"})
        os._exit(126)

    reap(pid, status_fd, cfg["backstop_seconds"])
    os._exit(0)


if __name__ == "__main__":
    main()
