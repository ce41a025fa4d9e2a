"""Code answers: run the extracted program and its unit tests in the sandbox; the reward is 1 only if every test passes.

One sandboxed interpreter per completion runs a small harness (`code_harness.py`, standard library only): it executes
the program in a fresh namespace, then each test (an `assert` line, MBPP style, or a whole test program such as
HumanEval's `check(candidate)`) in that namespace, and reports pass/fail per test. Batching the tests into one run
matters: starting a sandbox costs ~50 ms, running a test microseconds.

The program is untrusted and runs in the same interpreter as the harness, so the harness is built so that the cheap
ways to fake a pass fail instead:

* Exiting early (`sys.exit`, `os._exit`, `raise SystemExit` in the program or in a tested function), killing the
  process, hanging, crashing at import, or closing stdout (or every descriptor) all leave no result line, or one that
  records the failure: score 0. A test that raises any BaseException (SystemExit and KeyboardInterrupt included) fails.
* Printing a fake result line: the harness reads a random nonce from stdin *before* any candidate code runs, then
  empties the stdin file and points fd 0 at /dev/null, so the nonce is in no file or descriptor the program can read;
  only a line carrying the nonce is trusted. The harness writes it to a duplicate of stdout saved before the program
  runs; the program's own fd 1 goes to /dev/null, so its prints cannot flood or interleave with the report.
* Monkeypatching what the harness calls afterwards (`builtins.exec`, `compile`, `os.write`, `json`, ...): the harness
  binds everything it uses to locals before the program runs and formats its report with str methods only.
* Reading the tests to hard-code answers: they arrive on stdin with the nonce, not in a file.

Not defended, because the program shares the interpreter: a program that reaches into the harness on purpose
(its frames via `sys._getframe`, `gc` or a traceback, a trace function rewriting its locals, `ctypes` on its memory)
can read the nonce or change the results; an object whose `__eq__` always returns True passes `assert f(x) == y`;
and a program can shadow names a test uses (`abs`, `math`) in the shared namespace, as in HumanEval's own harness.
The sandbox still bounds what any of that can do outside the process. Rewards that must hold against a
deliberately adversarial policy need the tests to compare outputs in a separate process.

The program runs with `__name__ == "solution"`, so an `if __name__ == "__main__":` demo in a completion does not run
(and cannot block on `input()`: stdin is empty).
"""

from __future__ import annotations

import dataclasses
import json
import re
import secrets
from dataclasses import dataclass, field

from rlvr.rewards.base import Verdict, register_verifier
from rlvr.sandbox import HARNESS_FILES, SandboxLimits, read_program, run_python
from rlvr.types import Problem

# Per completion, program and all its tests together; `problem.meta["timeout_seconds"]` overrides both times.
CODE_LIMITS = SandboxLimits(wall_seconds=10, cpu_seconds=10, memory_mb=512)

_PYTHON_TAGS = {"python", "py", "python3", "py3"}
_FENCE = re.compile(r"^\s*```\s*([\w+-]*)[^`]*$")
_STDERR_TAIL = 2000

# Runs as main.py in the sandbox, with the shared report protocol beside it (`HARNESS_FILES`).
_HARNESS = read_program("rlvr.rewards", "code_harness.py")


@dataclass
class TestReport:
    """What running a program's tests gave. `reason` says why no test could count (the program did not run to the
    end of the harness); a failing test is not a reason, it is a False in `results`."""

    __test__ = False  # not a pytest test class

    passed: int
    total: int
    results: list[bool] = field(default_factory=list)
    reason: str | None = None
    stderr: str = ""  # the tail of the sandbox's stderr, for debugging

    @property
    def all_passed(self) -> bool:
        return self.reason is None and self.total > 0 and self.passed == self.total


def _keep_block(tag: str, lines: list[str], tagged: list[str], bare: list[str]) -> None:
    # Blocks in other languages (```bash, ```output) are never the solution.
    if tag in _PYTHON_TAGS:
        tagged.append("\n".join(lines) + "\n")
    elif not tag:
        bare.append("\n".join(lines) + "\n")


def extract_code(text: str) -> str:
    """The code in a completion.

    The last fenced block tagged Python (```python, ```py, ```Python, ...); if there is none, the last bare ```
    block (a trailing bare block after a tagged one is usually example output, not the solution); if there are
    no such blocks, the whole text, since a HumanEval-style completion may be a bare function body. A final fence
    left open (generation cut off) counts as a block up to the end of the text.
    """
    tagged: list[str] = []
    bare: list[str] = []
    tag: str | None = None
    lines: list[str] = []
    for line in text.splitlines():
        match = _FENCE.match(line)
        if tag is None:
            if match:
                tag, lines = match[1].lower(), []
        elif match and not match[1]:
            _keep_block(tag, lines, tagged, bare)
            tag = None
        else:
            lines.append(line)
    if tag is not None:
        _keep_block(tag, lines, tagged, bare)
    if tagged:
        return tagged[-1]
    if bare:
        return bare[-1]
    return text


def join_program(prefix: str, code: str) -> str:
    """`prefix` + `code` with a line break between them: a bare indented body continues the prefix's function, and a
    full definition after it (starting at column 0) replaces the prefix's stub."""
    if prefix and not prefix.endswith("\n"):
        prefix += "\n"
    return prefix + code


def _parse_report(stdout: str, nonce: str, total: int) -> TestReport | None:
    """The harness's report line, or None if there is none: only a line that starts with the nonce counts, and the
    harness writes exactly one (a second means the program learnt the nonce)."""
    reports = [line.split(" ") for line in stdout.splitlines() if line.startswith(nonce)]
    if not reports:
        return None
    failed = [False] * total
    if len(reports) > 1 or len(reports[0]) != 3 or reports[0][0] != nonce:
        return TestReport(0, total, failed, reason="malformed result line")
    _, bits, error_hex = reports[0]
    try:
        error = bytes.fromhex(error_hex).decode("utf-8", "replace")
    except ValueError:
        return TestReport(0, total, failed, reason="malformed result line")
    if error:
        return TestReport(0, total, failed, reason=f"the program raised {error}")
    if len(bits) != total or set(bits) - {"0", "1"}:
        return TestReport(0, total, failed, reason="malformed result line")
    results = [bit == "1" for bit in bits]
    return TestReport(sum(results), total, results)


def run_tests(program: str, tests: list[str] | str, limits: SandboxLimits = CODE_LIMITS) -> TestReport:
    """Run `program`, then each test in its namespace, in one sandboxed interpreter.

    `tests` is a list of test snippets or one string (a whole test program, counted as one test). Never raises
    because of what the program does. With no tests it only checks that the program runs to the end.
    """
    tests = [tests] if isinstance(tests, str) else list(tests)
    if not all(isinstance(test, str) for test in tests):
        raise TypeError("tests must be a string or a list of strings")
    nonce = secrets.token_hex(16)
    payload = nonce + "\n" + json.dumps({"program": program, "tests": tests})
    result = run_python(_HARNESS, stdin=payload, limits=limits, files=HARNESS_FILES)
    stderr = result.stderr[-_STDERR_TAIL:]
    total = len(tests)
    report = _parse_report(result.stdout, nonce, total)
    if result.sandbox_error is not None:
        reason = f"sandbox error: {result.sandbox_error}"
    elif report is not None:
        report.stderr = stderr
        return report
    elif result.timed_out:
        reason = "timed out"
    elif result.killed_by is not None:
        reason = f"killed ({result.killed_by})"
    else:
        reason = f"no result line (the program exited early, exit code {result.exit_code})"
    return TestReport(0, total, [False] * total, reason=reason, stderr=stderr)


def problem_limits(problem: Problem) -> SandboxLimits:
    timeout = problem.meta.get("timeout_seconds")
    if timeout is None:
        return CODE_LIMITS
    return dataclasses.replace(CODE_LIMITS, wall_seconds=float(timeout), cpu_seconds=float(timeout))


def problem_tests(problem: Problem) -> list[str]:
    """The problem's tests as a list; a problem without tests is a data error, not a wrong answer."""
    tests = problem.meta.get("tests")
    tests = [tests] if isinstance(tests, str) else tests
    if not isinstance(tests, list) or not tests or not all(isinstance(t, str) and t.strip() for t in tests):
        raise ValueError("a code problem needs meta['tests']: a non-empty string or list of non-empty strings")
    return tests


@register_verifier("code")
def code_reward(text: str, problem: Problem) -> Verdict:
    """1.0 when the extracted program (after `meta["code_prefix"]`) passes every test in `meta["tests"]`, else 0;
    `code/pass_fraction` is the share of tests passed."""
    tests = problem_tests(problem)
    limits = problem_limits(problem)
    code = extract_code(text)
    if not code.strip():
        return Verdict(0.0, {"code/pass_fraction": 0.0, "code/tests": float(len(tests))})
    report = run_tests(join_program(problem.meta.get("code_prefix", ""), code), tests, limits)
    info = {"code/pass_fraction": report.passed / report.total, "code/tests": float(report.total)}
    return Verdict(float(report.all_passed), info)
