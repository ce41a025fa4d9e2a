"""The code sandbox against hostile programs: every case runs a real sandboxed interpreter, nothing is mocked."""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rlvr.sandbox import SandboxLimits, SandboxResult, isolation, run_file, run_python
from rlvr.sandbox.cli import sandbox_app

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox is Linux-only")

# Small limits keep every hostile case to a few seconds; SLACK covers process start and teardown on a busy machine.
FAST = SandboxLimits(wall_seconds=5, cpu_seconds=5, memory_mb=256)
SLACK = 1.5
ALLOWED_ENV = {
    "PATH",
    "LANG",
    "LC_ALL",
    "HOME",
    "TMPDIR",
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONHASHSEED",
    "PYTHONIOENCODING",
    "PYTHONUTF8",
}


@pytest.fixture(scope="module", autouse=True)
def probed() -> None:
    # Probe the kernel once up front so that no timing assertion below includes it.
    isolation()


def run(code: str, limits: SandboxLimits = FAST, **kwargs: object) -> SandboxResult:
    result = run_python(textwrap.dedent(code), limits=limits, **kwargs)  # type: ignore[arg-type]
    assert result.sandbox_error is None, result.sandbox_error
    return result


def require(feature: str) -> None:
    info = isolation()
    if feature not in info.features:
        pytest.skip(f"isolation feature {feature!r} unavailable on this machine ({info.features}; {info.reason})")


def sandboxed_processes() -> list[int]:
    """Live processes running a sandboxed program (the user interpreter's argv ends in `-B main.py`)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if b"\0-B\0main.py" in cmdline and state not in (b"Z", b"X"):
            found.append(int(entry))
    return found


def test_normal_code_returns_stdout_and_exit_zero() -> None:
    result = run("print('hello', 6 * 7)")
    assert result.stdout == "hello 42\n"
    assert result.stderr == ""
    assert result.exit_code == 0 and result.ok
    assert not result.timed_out and result.killed_by is None and not result.output_truncated
    assert result.duration_seconds < FAST.wall_seconds


def test_stdin_and_files_are_passed() -> None:
    code = """
        import sys
        import helper
        data = open("data/input.txt").read()
        print(helper.double(int(sys.stdin.read())), data)
    """
    result = run(code, stdin="21\n", files={"helper.py": "def double(x):\n    return 2 * x\n", "data/input.txt": "ok"})
    assert result.stdout == "42 ok\n", result.stderr


def test_exception_gives_nonzero_exit_and_traceback() -> None:
    result = run("def f():\n    raise ValueError('boom')\nf()")
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.stderr and "ValueError: boom" in result.stderr
    assert result.killed_by is None and not result.timed_out


def test_infinite_loop_times_out_within_wall_limit() -> None:
    limits = SandboxLimits(wall_seconds=2, cpu_seconds=30, memory_mb=256)
    result = run("print('started', flush=True)\nwhile True:\n    pass", limits)
    assert result.timed_out and result.killed_by == "wall_time"
    assert result.exit_code < 0
    assert result.stdout == "started\n"
    assert 2 <= result.duration_seconds < 2 + SLACK


def test_cpu_burn_is_killed_by_cpu_limit() -> None:
    limits = SandboxLimits(wall_seconds=5, cpu_seconds=1, memory_mb=256)
    result = run("while True:\n    pass", limits)
    assert not result.timed_out
    assert result.killed_by == "cpu_time"
    assert result.exit_code in (-signal.SIGXCPU, -signal.SIGKILL)
    assert result.duration_seconds < 2 + SLACK


def test_memory_bomb_is_contained() -> None:
    result = run("x = bytearray(2 * 1024**3)\nprint('allocated')", SandboxLimits(wall_seconds=5, memory_mb=256))
    assert result.exit_code != 0
    assert "allocated" not in result.stdout
    assert result.killed_by == "memory"
    assert "MemoryError" in result.stderr
    assert result.peak_rss_mb is not None and result.peak_rss_mb < 256

    creeping = run("chunks = []\nwhile True:\n    chunks.append(b'x' * 10**6)", SandboxLimits(wall_seconds=5, memory_mb=256))
    assert creeping.killed_by == "memory" and not creeping.timed_out
    assert creeping.peak_rss_mb is not None and creeping.peak_rss_mb < 256


def test_fork_bomb_is_contained_and_leaves_nothing_behind() -> None:
    code = """
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
    """
    limits = SandboxLimits(wall_seconds=3, cpu_seconds=3, memory_mb=256, max_processes=32)
    started = time.monotonic()
    result = run(code, limits)
    assert time.monotonic() - started < 3 + SLACK
    assert result.timed_out and result.killed_by == "wall_time"
    assert sandboxed_processes() == []
    assert subprocess.run(["true"], timeout=10).returncode == 0


def test_background_processes_do_not_outlive_the_program() -> None:
    code = """
        import os, time
        if os.fork() == 0:
            os.setsid()
            time.sleep(60)
            os._exit(0)
        print("main done")
    """
    result = run(code)
    assert result.stdout == "main done\n" and result.exit_code == 0
    assert result.duration_seconds < 5
    assert sandboxed_processes() == []


def test_writes_outside_the_workdir_do_not_reach_the_host(tmp_path: Path) -> None:
    require("rootfs")
    in_tmp = Path(tempfile.gettempdir()) / f"rlvr-sandbox-escape-{uuid.uuid4().hex}"
    in_test_dir = tmp_path / "escape.txt"
    code = f"""
        import os
        for path in ({str(in_tmp)!r}, {str(in_test_dir)!r}):
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "w") as f:
                    f.write("escaped")
                print("wrote inside the sandbox", path)
            except OSError as error:
                print("refused", path, error)
        for path in ("/usr/rlvr-escape", "/etc/rlvr-escape", "/rlvr-escape"):
            try:
                open(path, "w").close()
                print("WROTE", path)
            except OSError as error:
                print("refused", path, error.errno)
    """
    result = run(code)
    assert result.exit_code == 0, result.stderr
    assert "WROTE" not in result.stdout
    assert not in_tmp.exists()
    assert not in_test_dir.exists()
    assert not Path("/usr/rlvr-escape").exists() and not Path("/etc/rlvr-escape").exists()


def test_host_files_cannot_be_deleted_or_read(tmp_path: Path) -> None:
    require("rootfs")
    keep = tmp_path / "keep.txt"
    keep.write_text("precious")
    project = Path(__file__).resolve().parents[1]
    code = f"""
        import os, shutil
        for attempt in (lambda: os.remove({str(keep)!r}), lambda: shutil.rmtree({str(tmp_path)!r})):
            try:
                attempt()
                print("DELETED")
            except OSError as error:
                print("refused", error.errno)
        print("project visible:", os.path.exists({str(project)!r}))
        print("this test visible:", os.path.exists({__file__!r}))
    """
    result = run(code)
    assert keep.read_text() == "precious"
    assert "DELETED" not in result.stdout
    assert "project visible: False" in result.stdout and "this test visible: False" in result.stdout


def test_network_is_unreachable() -> None:
    require("net")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        code = f"""
            import socket
            try:
                socket.create_connection(("127.0.0.1", {port}), timeout=2).close()
                print("CONNECTED")
            except OSError as error:
                print("blocked", error)
            try:
                socket.create_connection(("1.1.1.1", 53), timeout=2).close()
                print("CONNECTED")
            except OSError as error:
                print("blocked", error)
        """
        result = run(code)
        listener.settimeout(0.2)
        with pytest.raises(TimeoutError):
            listener.accept()
    assert result.network_isolated
    assert "CONNECTED" not in result.stdout
    assert result.stdout.count("blocked") == 2


def test_parent_environment_is_not_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLVR_SECRET_TEST", "s3cret")
    result = run("import json, os\nprint(json.dumps(dict(os.environ)))")
    env = json.loads(result.stdout)
    assert "RLVR_SECRET_TEST" not in env
    assert "s3cret" not in result.stdout
    assert set(env) <= ALLOWED_ENV
    assert env["PATH"] == "/usr/bin:/bin" and env["PYTHONHASHSEED"] == "0"
    cwd = run("import os\nprint(os.getcwd(), os.environ['HOME'], os.environ['TMPDIR'])").stdout.split()
    assert cwd[1] == cwd[0] and cwd[2].startswith(cwd[0] + "/")


def test_parent_cannot_be_signalled() -> None:
    info = isolation()
    if not ({"pid", "uid"} & set(info.features)):
        pytest.skip(f"no PID namespace and no separate uid on this machine: the code could signal us ({info.reason})")
    received: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        code = f"""
            import os, signal
            for action in (lambda: os.kill({os.getpid()}, signal.SIGTERM), lambda: os.killpg({os.getpgrp()}, signal.SIGTERM),
                           lambda: os.kill(-1, signal.SIGTERM)):
                try:
                    action()
                    print("sent")
                except OSError as error:
                    print("refused", error.errno)
        """
        run(code)
        time.sleep(0.2)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert received == []


def test_output_flood_is_truncated_quickly_with_bounded_memory() -> None:
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code = """
        import sys
        chunk = "x" * 65536
        for _ in range(16384):  # 1 GiB
            sys.stdout.write(chunk)
    """
    limits = SandboxLimits(wall_seconds=10, cpu_seconds=10, memory_mb=256)
    result = run(code, limits)
    assert result.output_truncated
    assert len(result.stdout) == limits.max_output_bytes
    assert result.killed_by == "output_limit"
    assert result.duration_seconds < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 64 * 1024  # KiB


def test_output_over_the_cap_is_truncated_without_a_kill() -> None:
    limits = SandboxLimits(wall_seconds=5, memory_mb=256, max_output_bytes=1000)
    result = run("import sys\nprint('a' * 5000)\nprint('b' * 5000, file=sys.stderr)", limits)
    assert result.exit_code == 0 and result.killed_by is None
    assert result.output_truncated
    assert result.stdout == "a" * 1000 and result.stderr == "b" * 1000


def test_written_file_size_is_capped() -> None:
    limits = SandboxLimits(wall_seconds=5, memory_mb=256, max_file_size_mb=1)
    result = run("open('big.bin', 'wb').write(b'x' * (4 << 20))", limits)
    assert result.exit_code != 0
    assert "File too large" in result.stderr


def test_temp_dir_is_removed_even_on_timeout() -> None:
    result = run("import os\nprint(os.getcwd())")
    finished = Path(result.stdout.strip())
    assert finished.is_absolute() and finished.name == "work"
    assert not finished.parent.exists()

    limits = SandboxLimits(wall_seconds=1.5, cpu_seconds=5, memory_mb=256)
    result = run("import os, time\nprint(os.getcwd(), flush=True)\ntime.sleep(60)", limits)
    assert result.timed_out
    killed = Path(result.stdout.strip())
    assert killed.name == "work" and killed.parent != finished.parent
    assert not killed.parent.exists()


def test_caller_errors_raise() -> None:
    with pytest.raises(TypeError):
        run_python(b"print(1)")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        run_python("print(1)", files={"../outside.py": ""})
    with pytest.raises(ValueError):
        run_python("print(1)", files={"main.py": ""})
    with pytest.raises(ValueError):
        run_python("print(1)", limits=SandboxLimits(wall_seconds=0))
    with pytest.raises(FileNotFoundError):
        run_file("/nonexistent/rlvr-sandbox.py")


def test_result_serializes_to_json() -> None:
    data = json.loads(run("print('x')").to_json())
    assert data["stdout"] == "x\n" and data["exit_code"] == 0
    assert isinstance(data["isolation"], list) and data["network_isolated"] == ("net" in data["isolation"])


def test_cli_prints_one_json_object(tmp_path: Path) -> None:
    program = tmp_path / "prog.py"
    program.write_text("import sys\nprint('from file')\nsys.exit(3)\n")
    runner = CliRunner()
    result = runner.invoke(sandbox_app, ["run", str(program), "--timeout", "5", "--memory-mb", "256"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["stdout"] == "from file\n" and data["exit_code"] == 3 and data["timed_out"] is False

    missing = runner.invoke(sandbox_app, ["run", str(tmp_path / "missing.py")])
    assert missing.exit_code == 2
    assert missing.stderr.startswith("error: ") and missing.stderr.count("\n") == 1
    assert missing.stdout == ""
