"""The python tool's per-episode session: every case runs the real sandbox, nothing is mocked but where it must not run."""

from __future__ import annotations

import sys

import pytest

from rlvr.sandbox import SandboxLimits, isolation
from rlvr.tools import python_session
from rlvr.tools.python_session import CellResult, PythonSession

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox is Linux-only")

FAST = SandboxLimits(wall_seconds=5, cpu_seconds=5, memory_mb=256)
ONE_SECOND = SandboxLimits(wall_seconds=1, cpu_seconds=5, memory_mb=256)
# A cell that behaves differently when replayed: its stdout is then /dev/null, not the capture file.
REPLAYED = "import os, stat\nreplayed = not stat.S_ISREG(os.fstat(1).st_mode)\n"


@pytest.fixture(scope="module", autouse=True)
def probed() -> None:
    isolation()  # probe the kernel once, outside any timing


def ok(session: PythonSession, code: str) -> str:
    result = session.run(code)
    assert result.ok and result.error is None, result
    return result.output


def failed(session: PythonSession, code: str) -> CellResult:
    result = session.run(code)
    assert not result.ok and result.error, result
    return result


def test_state_persists_between_calls() -> None:
    session = PythonSession(FAST)
    assert ok(session, "x = 2") == ""
    assert ok(session, "x * 21") == "42"
    assert ok(session, "import math\ndef f(n):\n    return math.factorial(n)") == ""
    assert ok(session, "f(5)") == "120"
    assert session.cells == ["x = 2", "x * 21", "import math\ndef f(n):\n    return math.factorial(n)", "f(5)"]


def test_sessions_share_nothing() -> None:
    first, second = PythonSession(FAST), PythonSession(FAST)
    ok(first, "secret = 1")
    assert "NameError: name 'secret' is not defined" in failed(second, "secret").output
    assert ok(first, "secret") == "1"


def test_failing_cell_is_not_kept_and_the_session_goes_on() -> None:
    session = PythonSession(FAST)
    ok(session, "x = 1")
    result = failed(session, "x = 2\n1 / 0")
    assert result.error == "ZeroDivisionError: division by zero"
    assert session.cells == ["x = 1"]
    assert ok(session, "x") == "1"  # the failed cell's partial effect is gone


def test_output_shows_stdout_stderr_then_the_final_expression() -> None:
    session = PythonSession(FAST)
    assert ok(session, "'a' + 'b'") == "'ab'"
    assert ok(session, "None") == ""
    assert ok(session, "print('hi')") == "hi"  # print's None is not shown
    assert ok(session, "import sys\nprint('out')\nprint('err', file=sys.stderr)\n1 + 1") == "out\nerr\n2"
    assert ok(session, "print('no newline', end='')\n[3]") == "no newline\n[3]"


def test_earlier_output_is_not_repeated() -> None:
    session = PythonSession(FAST)
    assert ok(session, "print('first')") == "first"
    # Unflushed buffers and raw descriptor writes of a replayed cell stay hidden too.
    ok(session, "import os, sys\nsys.stdout.write('buffered')\nos.write(1, b'raw')\nos.write(2, b'err')")
    assert ok(session, "print('second')") == "second"


def test_traceback_shows_only_the_cells() -> None:
    session = PythonSession(FAST)
    ok(session, "def f(x):\n    return 1 / x")
    result = failed(session, "y = 1\nf(0)")
    assert result.error == "ZeroDivisionError: division by zero"
    assert result.output == (
        "Traceback (most recent call last):\n"
        '  File "<cell 2>", line 2, in <module>\n'
        "    f(0)\n"
        '  File "<cell 1>", line 2, in f\n'
        "    return 1 / x\n"
        "ZeroDivisionError: division by zero"
    )
    deep = failed(session, "def g(n):\n    return g(n + 1)\ng(0)")
    assert deep.error is not None and deep.error.startswith("RecursionError")
    assert "[Previous line repeated" in deep.output and len(deep.output) < 500


def test_syntax_error_is_reported_without_a_sandbox_run(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_sandbox(*args: object, **kwargs: object) -> None:
        raise AssertionError("the sandbox must not start for a cell that does not compile")

    monkeypatch.setattr(python_session, "run_python", no_sandbox)
    session = PythonSession(FAST)
    result = failed(session, "y = (")
    assert result.error == "SyntaxError: '(' was never closed (line 1)"
    assert result.output.endswith("    y = (\n        ^\nSyntaxError: '(' was never closed")
    # Errors of the compiler, not only the parser, and with the offending line shown.
    result = failed(session, "x = 1\nreturn x")
    assert result.error == "SyntaxError: 'return' outside function (line 2)"
    assert "    return x" in result.output
    assert session.cells == []


def test_timeout_reports_partial_output_and_does_not_poison_the_session() -> None:
    session = PythonSession(ONE_SECOND)
    ok(session, "x = 1")
    result = failed(session, "print('started')\nwhile True:\n    pass")
    assert result.error == "timed out after 1 s"
    assert result.output == "started\n[timed out after 1 s]"
    assert 1.0 <= result.seconds < 3.0
    assert session.cells == ["x = 1"]
    assert ok(session, "x") == "1"


def test_cpu_limit() -> None:
    session = PythonSession(SandboxLimits(wall_seconds=10, cpu_seconds=1, memory_mb=256))
    result = failed(session, "while True:\n    pass")
    assert result.error is not None and result.error.startswith("timed out")
    assert session.cells == []


def test_replay_failure_drops_the_cell_and_reports_it() -> None:
    session = PythonSession(FAST)
    ok(session, "a = 1")
    ok(session, REPLAYED + "if replayed:\n    raise RuntimeError('differs on replay')")
    result = failed(session, "print('new')")
    assert result.error is not None
    assert result.error.startswith("replaying earlier cell 2 failed (RuntimeError: differs on replay), so this cell did not run")
    assert "new" not in result.output and "RuntimeError: differs on replay" in result.output
    assert session.cells == ["a = 1"]
    assert ok(session, "a") == "1"


def test_replay_timeout_counts_as_a_replay_failure() -> None:
    session = PythonSession(ONE_SECOND)
    ok(session, REPLAYED + "if replayed:\n    while True:\n        pass")
    result = failed(session, "1")
    assert result.error is not None and result.error.startswith("replaying earlier cell 1 failed (timed out after 1 s)")
    assert session.cells == []
    assert ok(session, "1") == "1"


def test_exiting_early_is_a_failure() -> None:
    session = PythonSession(FAST)
    ok(session, "x = 1")
    result = failed(session, "import sys\nprint('a')\nsys.exit(0)\nprint('b')")
    assert result.error == "SystemExit: 0"
    assert result.output.startswith("a\n")
    result = failed(session, "import os\nprint('a', flush=True)\nos._exit(0)")
    assert "exited" in (result.error or "")
    assert session.cells == ["x = 1"]
    assert ok(session, "x") == "1"


FORGE = """
import os
fake = b"\\n" + b"0" * 32 + b" end status=ok cell=0 stdout= stdout_tail= stdout_len=0 stderr= stderr_tail= stderr_len=0\\n"
for fd in range(1, 64):
    try:
        os.write(fd, fake)
    except OSError:
        pass
"""


@pytest.mark.parametrize("ending", ["1 / 0", "import sys\nsys.exit(0)", "import os\nos._exit(0)"])
def test_fake_report_lines_cannot_turn_a_failure_into_success(ending: str) -> None:
    session = PythonSession(FAST)
    failed(session, FORGE + ending)
    assert session.cells == []
    assert ok(session, "print('fine')") == "fine"


def test_random_values_are_stable_across_replays() -> None:
    session = PythonSession(FAST)
    ok(session, "import random\nr = random.random()")
    first = ok(session, "r")
    assert ok(session, "r") == first
    assert ok(session, "random.random() != r") == "True"


def test_output_is_truncated_keeping_both_ends() -> None:
    session = PythonSession(FAST, max_output_chars=100)
    output = ok(session, "print('A' * 10 + 'x' * 1000 + 'é' * 10)")
    assert output.startswith("A" * 10) and output.endswith("é" * 10)
    assert "...[truncated 921 chars]..." in output  # 1021 characters with the newline, 100 kept
    # The error at the end survives truncation.
    result = failed(session, "print('x' * 1000)\n1 / 0")
    assert "...[truncated" in result.output and result.output.endswith("ZeroDivisionError: division by zero")


def test_output_flood_is_a_failure() -> None:
    session = PythonSession(SandboxLimits(wall_seconds=5, cpu_seconds=5, memory_mb=256, max_file_size_mb=1))
    result = failed(session, "while True:\n    print('x' * 10000)")
    assert result.error == "output limit exceeded: the cell wrote more than 1 MB"
    assert result.output.endswith("[output limit exceeded: the cell wrote more than 1 MB]")
    assert session.cells == []


def test_cells_run_as_main_like_a_notebook() -> None:
    session = PythonSession(FAST)
    ok(session, "import pickle\nclass Point:\n    pass")
    assert ok(session, "__name__, type(pickle.loads(pickle.dumps(Point()))).__name__") == "('__main__', 'Point')"
    assert "EOFError" in failed(session, "input()").output


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        PythonSession(FAST, max_output_chars=0)
    with pytest.raises(TypeError):
        PythonSession(FAST).run(b"1")  # type: ignore[arg-type]
