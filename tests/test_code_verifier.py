"""The `code` verifier and HumanEval: every case runs the real sandbox, nothing is mocked."""

from __future__ import annotations

import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from rlvr.envs.humaneval import CODE_SYSTEM_PROMPT, humaneval_problems
from rlvr.rewards import REWARDS, Verdict
from rlvr.rewards.code import CODE_LIMITS, extract_code, join_program, run_tests
from rlvr.sandbox import SandboxLimits
from rlvr.types import Problem

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox is Linux-only")

FAST = SandboxLimits(wall_seconds=5, cpu_seconds=5, memory_mb=256)


def score(text: str, problem: Problem) -> Verdict:
    verdict = REWARDS["correct"](text, problem)
    assert isinstance(verdict, Verdict)
    return verdict


def score_all(texts: list[str], problems: list[Problem]) -> list[Verdict]:
    # Two cores, 4 threads: each sandbox run spends much of its ~50 ms waiting on process start-up.
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(score, texts, problems))


def task_ids(problems: list[Problem], verdicts: list[Verdict], value: float) -> list[str]:
    return [p.meta["task_id"] for p, v in zip(problems, verdicts, strict=True) if v.value == value]


# ---------------------------------------------------------------- extract_code


@pytest.mark.parametrize(
    "text, expected",
    [
        ("```python\nx = 1\n```", "x = 1\n"),
        ("first\n```python\nx = 1\n```\nthen a fix:\n```py\nx = 2\n```\ndone", "x = 2\n"),
        ("```Python\ndef f():\n    return 1\n```", "def f():\n    return 1\n"),
        ("look:\n```\ny = 3\n```\n", "y = 3\n"),
        # A trailing bare block after a Python one is example output, not the solution.
        ("```python\nx = 1\n```\nOutput:\n```\n1\n```", "x = 1\n"),
        # Other languages are never the solution.
        ("```python\nx = 1\n```\nrun it with\n```bash\npython x.py\n```", "x = 1\n"),
        # Cut off mid-block: what follows the open fence.
        ("Sure.\n```python\ndef f():\n    return 1", "def f():\n    return 1\n"),
        ("```python\nx = 1\n```\nbetter:\n```python\nx = 2\n", "x = 2\n"),
        # No fence: the whole text, indentation kept (a HumanEval-style body).
        ("    return a + b\n", "    return a + b\n"),
        ("", ""),
    ],
)
def test_extract_code(text: str, expected: str) -> None:
    assert extract_code(text) == expected


def test_join_program_separates_with_a_newline() -> None:
    assert join_program("def f():\n", "    return 1\n") == "def f():\n    return 1\n"
    assert join_program("import os", "x = 1\n") == "import os\nx = 1\n"
    assert join_program("", "x = 1\n") == "x = 1\n"


# ---------------------------------------------------------------- HumanEval


def test_humaneval_problems() -> None:
    problems = humaneval_problems()
    assert len(problems) == 164
    assert len({p.meta["task_id"] for p in problems}) == 164
    first = problems[0]
    assert first.meta["task_id"] == "HumanEval/0" and first.meta["entry_point"] == "has_close_elements"
    for p in problems:
        assert p.verifier == "code" and p.subset == "humaneval" and p.system_prompt == CODE_SYSTEM_PROMPT
        assert f"```python\n{p.meta['code_prefix']}```" in p.question
        assert p.meta["tests"] == [p.meta["tests"][0]] and p.meta["tests"][0].endswith(f"\ncheck({p.meta['entry_point']})\n")
        assert p.answer.strip()
    assert humaneval_problems() is not problems and humaneval_problems()[5] is problems[5]  # cached


def test_every_canonical_solution_passes_as_a_bare_body() -> None:
    problems = humaneval_problems()
    verdicts = score_all([p.answer for p in problems], problems)
    assert task_ids(problems, verdicts, 0.0) == []
    assert all(v.info == {"code/pass_fraction": 1.0, "code/tests": 1.0} for v in verdicts)


def test_canonical_solutions_pass_as_fenced_full_functions() -> None:
    problems = humaneval_problems()[::20]
    texts = [f"Here is the function:\n\n```python\n{p.meta['code_prefix']}{p.answer}```\nIt is O(n).\n" for p in problems]
    assert task_ids(problems, score_all(texts, problems), 0.0) == []


@pytest.mark.parametrize("body", ["    return None\n", "    raise NotImplementedError\n"])
def test_wrong_bodies_fail_every_problem(body: str) -> None:
    # Checked for all 164: no HumanEval test passes a function that returns None.
    problems = humaneval_problems()
    verdicts = score_all([body] * len(problems), problems)
    assert task_ids(problems, verdicts, 1.0) == []
    assert all(v.info["code/pass_fraction"] == 0.0 for v in verdicts)


def test_another_problems_solution_fails() -> None:
    # The right code for the wrong function: HumanEval/0's body under HumanEval/2's signature, as a full redefinition.
    problems = humaneval_problems()
    wrong = f"```python\n{problems[0].meta['code_prefix']}{problems[0].answer}```"
    assert score(wrong, problems[2]).value == 0.0
    assert score(wrong, problems[0]).value == 1.0


# ---------------------------------------------------------------- partial credit and test formats


def add_problem(tests: list[str] | str | None = None, **meta: object) -> Problem:
    tests = ["assert add(1, 2) == 3", "assert add(2, 2) == 4", "assert add(-1, 1) == 0"] if tests is None else tests
    return Problem("Write add(a, b).", "def add(a, b):\n    return a + b\n", verifier="code", meta={"tests": tests, **meta})


RIGHT = "```python\ndef add(a, b):\n    return a + b\n```"


def test_partial_credit() -> None:
    verdict = score("```python\ndef add(a, b):\n    return 3 if a == 1 else a * b\n```", add_problem())
    assert verdict.value == 0.0
    assert verdict.info["code/pass_fraction"] == pytest.approx(2 / 3) and verdict.info["code/tests"] == 3.0
    assert score(RIGHT, add_problem()) == Verdict(1.0, {"code/pass_fraction": 1.0, "code/tests": 3.0})


def test_a_test_program_string_is_one_test() -> None:
    program = "assert add(1, 2) == 3\nassert add(5, 5) == 10\nfor i in range(10):\n    assert add(i, -i) == 0\n"
    assert score(RIGHT, add_problem(program)) == Verdict(1.0, {"code/pass_fraction": 1.0, "code/tests": 1.0})
    wrong = "```python\ndef add(a, b):\n    return a + b if a < 5 else 0\n```"
    assert score(wrong, add_problem(program)) == Verdict(0.0, {"code/pass_fraction": 0.0, "code/tests": 1.0})


def test_run_tests_reports_each_test() -> None:
    program = textwrap.dedent("""
        import sys
        def f(x):
            if x < 0:
                sys.exit(0)
            if x == 0:
                raise KeyboardInterrupt
            return 2 * x
    """)
    tests = ["assert f(1) == 2", "f(-1)", "assert f(3) == 7", "f(0)", "assert f(2) == 4"]
    report = run_tests(program, tests, FAST)
    # A test that exits or interrupts fails alone; the harness goes on with the next one.
    assert report.results == [True, False, False, False, True]
    assert (report.passed, report.total, report.reason, report.all_passed) == (2, 5, None, False)
    assert run_tests(program, ["assert f(1) == 2"], FAST).all_passed


def test_run_tests_reasons() -> None:
    assert run_tests("x = (", ["pass"], FAST).reason.startswith("the program raised SyntaxError")
    assert run_tests("import no_such_module_here", ["pass"], FAST).reason.startswith("the program raised ModuleNotFoundError")
    assert run_tests("import os\nos._exit(0)", ["pass"], FAST).reason.startswith("no result line")
    assert run_tests("while True:\n    pass", ["pass"], SandboxLimits(wall_seconds=1, cpu_seconds=1)).reason == "timed out"
    # With no tests it only checks that the program runs to the end.
    assert run_tests("x = 1", [], FAST).reason is None


def test_a_problem_without_tests_is_an_error() -> None:
    for tests in ([], "", ["   "], None):
        problem = Problem("q", "a", verifier="code", meta={} if tests is None else {"tests": tests})
        with pytest.raises(ValueError, match="tests"):
            score(RIGHT, problem)


def test_registered_and_reached_through_correct() -> None:
    assert "code" in REWARDS
    problem = add_problem()
    assert REWARDS["code"](RIGHT, problem) == REWARDS["correct"](RIGHT, problem) == Verdict(1.0, score(RIGHT, problem).info)


def test_default_limits() -> None:
    assert (CODE_LIMITS.wall_seconds, CODE_LIMITS.cpu_seconds, CODE_LIMITS.memory_mb) == (10, 10, 512)


# ---------------------------------------------------------------- hacks


def fenced(code: str) -> str:
    return "```python\n" + textwrap.dedent(code).strip() + "\n```"


WRONG = "def add(a, b):\n    return None\n"
HACKS = {
    "sys.exit at top level": WRONG + "import sys\nsys.exit(0)\n",
    "os._exit at top level": WRONG + "import os\nos._exit(0)\n",
    "SystemExit in the tested function": "def add(a, b):\n    raise SystemExit(0)\n",
    "os._exit in the tested function": "import os\ndef add(a, b):\n    os._exit(0)\n",
    "KeyboardInterrupt in the tested function": "def add(a, b):\n    raise KeyboardInterrupt\n",
    "kills itself": "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n" + WRONG,
    "kills itself in a test": "import os, signal\ndef add(a, b):\n    os.kill(os.getpid(), signal.SIGKILL)\n",
    "closes stdout": WRONG + "import os, sys\nsys.stdout.close()\nos.close(1)\n",
    "closes every descriptor": WRONG + "import os\nos.closerange(0, 4096)\n",
    "syntax error": "def add(a, b)\n    return a + b\n",
    "crashes at import (right function)": "import no_such_module_here\ndef add(a, b):\n    return a + b\n",
    # A harness that looked exec up in builtins after the program ran would run no test and count them all passed.
    "patches exec": WRONG + "import builtins\nbuiltins.exec = lambda *a, **k: None\n",
    # The shared protocol writes the report with the os.write it bound before the program ran: were it looked up when
    # writing, this would turn every failing test into a pass.
    "patches os.write": WRONG
    + "import os\n_write = os.write\ndef write(fd, data):\n    _write(fd, data.replace(b' 000 ', b' 111 '))\n"
    + "    return len(data)\nos.write = write\n",
}


@pytest.mark.parametrize("name", list(HACKS))
def test_hacks_score_zero(name: str) -> None:
    verdict = score(fenced(HACKS[name]), add_problem())
    assert verdict == Verdict(0.0, {"code/pass_fraction": 0.0, "code/tests": 3.0})


def test_fake_result_lines_score_zero() -> None:
    # Everything the program can find that might be the nonce (stdin, its own descriptors, files around it),
    # echoed in the report format to every descriptor, plus made-up nonces; then exit before the harness reports.
    forger = """
        import glob, os, re
        def add(a, b):
            return None
        seen = set()
        for path in ["/dev/stdin", *glob.glob("/proc/*/fd/*"), *glob.glob("*"), *glob.glob("/tmp/*")]:
            try:
                with open(path, "rb") as f:
                    seen.update(re.findall(rb"[0-9a-f]{32}", f.read(1 << 20)))
            except OSError:
                pass
        try:
            os.lseek(0, 0, 0)
            seen.update(re.findall(rb"[0-9a-f]{32}", os.read(0, 1 << 20)))
        except OSError:
            pass
        seen.update([b"0" * 32, b"f" * 32])
        lines = b"".join(b"\\n" + nonce + b" 111 \\n" for nonce in seen)
        for fd in range(1, 64):
            try:
                os.write(fd, lines)
            except OSError:
                pass
        print(lines.decode(), flush=True)
        os._exit(0)  # so that no true report follows the forged ones
    """
    assert score(fenced(forger), add_problem()) == Verdict(0.0, {"code/pass_fraction": 0.0, "code/tests": 3.0})


def test_hangs_score_zero_within_the_timeout() -> None:
    for code in ["while True:\n    pass\n" + WRONG, "def add(a, b):\n    while True:\n        pass\n"]:
        started = time.monotonic()
        verdict = score(fenced(code), add_problem(timeout_seconds=1))
        assert verdict == Verdict(0.0, {"code/pass_fraction": 0.0, "code/tests": 3.0})
        assert time.monotonic() - started < 5


@pytest.mark.parametrize("text", ["", "   \n", "```python\n```"])
def test_no_code_scores_zero(text: str) -> None:
    assert score(text, add_problem()) == Verdict(0.0, {"code/pass_fraction": 0.0, "code/tests": 3.0})


def test_harmless_side_effects_still_pass() -> None:
    # The controls for the hacks above: the same moves in a correct program are not penalised.
    correct = """
        import atexit, os, sys
        def add(a, b):
            return a + b
        # More than the sandbox lets stdout carry (it kills a program past 4 MiB): the harness sends it to /dev/null.
        print("x" * 5_000_000)
        atexit.register(print, "bye")
        if __name__ == "__main__":
            add(int(input()), 1)
        sys.stdout.close()
        os.close(1)
    """
    assert score(fenced(correct), add_problem()).value == 1.0
