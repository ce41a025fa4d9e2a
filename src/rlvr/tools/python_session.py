"""The `python` tool's state within one episode: a notebook-like session over the sandbox, by replay.

Each sandboxed run starts a fresh interpreter (`rlvr.sandbox`), so nothing survives from one call to the next
by itself. A `PythonSession` keeps the cells that ran successfully and, on every `run(code)`, replays them in one
fresh sandbox with their output discarded, then runs the new cell with its output captured. Variables, functions
and imports of earlier calls are therefore visible to later ones, and two sessions (episodes) share nothing. A cell
costs one sandbox start (~50 ms) plus the time its predecessors take to run again.

Semantics, where they differ from Jupyter:

* A cell that fails (raises, times out, exits the interpreter, floods its output) is not kept: its partial effects
  are lost. After `x = 1` and a failing `x = 2; 1 / 0`, `x` is 1 again, since only successful cells are replayed.
* Replay must reproduce what a cell did. `random` is seeded with a fixed seed at the start of every run, so values
  drawn by earlier cells come out the same; what depends on the clock, `os.urandom`, `secrets` or object ids can
  differ. Should an earlier cell fail when replayed (or the replay run out of time), the call reports it as its
  error, and that cell and every later one are dropped from the session, since they may depend on it: the model
  sees what was lost and can redefine it, rather than every later call failing the same way.
* Replaying counts towards the time limit: a session whose cells are slow gets less time for each new one.
* Output: the new cell's stdout, then its stderr, then the repr of a final expression (not shown when it is None),
  then, on failure, a short traceback that holds only frames of the cells (`<cell N>`, N counting this session's
  calls) or a bracketed reason such as `[timed out after 5 s]`. Long output keeps its beginning and its end around
  a `...[truncated N chars]...` marker; the output of a cell that floods is cut off at the sandbox's file size cap.
* Cells run in a module named `__main__` (so `if __name__ == "__main__":` blocks run, and classes defined in cells
  pickle); stdin is empty. Threads that earlier cells started run again during the replay, and what they print once
  the new cell has started is part of its output.

The harness (`python_harness.py`) follows `rlvr.rewards.code` and shares its protocol (`rlvr.sandbox.harness_protocol`):
it reads a random nonce from stdin before any cell runs and leaves it in no file or descriptor the cells can reach,
binds everything it calls to locals first, and reports on a duplicate of the original stdout with str methods only,
in lines that start with the nonce. The cells' own stdout and stderr go to /dev/null during the replay and to
unlinked files while the new cell runs, so neither a cell's prints nor its writes to any descriptor can pass for the
harness's report, and a cell that exits early, crashes or closes descriptors leaves no report, which reads as a
failure. As there, a cell that reaches into the harness on purpose (its frames, `gc`, `ctypes`) can read the nonce;
it runs in the sandbox all the same.

Timeouts are enforced twice: the harness's own timer (wall clock, and SIGXCPU at the CPU limit) stops the cell and
still reports what it printed; the sandbox kills the run `_GRACE_SECONDS` later if the cell blocked that.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
import traceback
from dataclasses import dataclass

from rlvr.sandbox import HARNESS_FILES, SandboxLimits, SandboxResult, read_program, run_python

__all__ = ["SESSION_LIMITS", "CellResult", "PythonSession"]

SESSION_LIMITS = SandboxLimits(wall_seconds=5, cpu_seconds=5, memory_mb=512)

# How long after the cell's own time limit the sandbox kills the run: time for the harness to report partial output.
_GRACE_SECONDS = 0.5
# Any fixed value makes replay reproducible; the same for every session, so every episode sees the same draws.
_RANDOM_SEED = 0
# Upper bound on the report's size per character of output kept: its text fields hold about 9 * `max_output_chars`
# characters (head and tail of stdout, stderr and the result, the error, the traceback), each at most 6 bytes in
# UTF-8 (a backslash-escaped surrogate), hex-encoded as 2 digits per byte.
_REPORT_BYTES_PER_CHAR = 128

# Runs as main.py in the sandbox, with the shared report protocol beside it (`HARNESS_FILES`).
_HARNESS = read_program("rlvr.tools", "python_harness.py")


@dataclass
class CellResult:
    """What one call of the python tool gave."""

    # What the model reads: stdout, stderr, the repr of a final expression, then a short traceback or the reason
    # for a failure; "" when a successful cell printed nothing (the caller decides what to show then).
    output: str
    ok: bool  # the cell ran to the end; exactly then it is kept in the session
    error: str | None  # one line, e.g. "ZeroDivisionError: division by zero", "timed out after 5 s"
    seconds: float  # wall-clock time of the call, replay included


@dataclass(frozen=True)
class _Cell:
    number: int  # which call of the session it was, from 1: tracebacks name it `<cell N>`
    source: str

    @property
    def filename(self) -> str:
        return f"<cell {self.number}>"


@dataclass(frozen=True)
class _Excerpt:
    """A text known by its first and last characters (at least as many as the output budget each) and its length."""

    head: str
    tail: str
    length: int

    @classmethod
    def whole(cls, text: str) -> _Excerpt:
        return cls(text, text, len(text))


@dataclass(frozen=True)
class _Report:
    """The harness's final report line, decoded."""

    status: str  # "ok", "error" (the new cell raised), "replay" (an earlier cell raised), "timeout", "cpu"
    cell: int  # index of the cell that was running, in replay order; the new cell is the last
    stdout: _Excerpt
    stderr: _Excerpt
    result: _Excerpt | None
    error: str | None
    traceback: str | None
    flooded: bool

    @classmethod
    def parse(cls, text: str) -> _Report:
        fields = dict(item.partition("=")[::2] for item in text.split(" "))

        def decoded(key: str) -> str | None:
            return bytes.fromhex(fields[key]).decode("utf-8", "replace") if key in fields else None

        def excerpt(key: str) -> _Excerpt | None:
            if key not in fields:
                return None
            return _Excerpt(decoded(key) or "", decoded(f"{key}_tail") or "", int(fields[f"{key}_len"]))

        stdout, stderr = excerpt("stdout"), excerpt("stderr")
        if stdout is None or stderr is None:
            raise ValueError("report without output fields")
        return cls(
            status=fields["status"],
            cell=int(fields["cell"]),
            stdout=stdout,
            stderr=stderr,
            result=excerpt("result"),
            error=decoded("error"),
            traceback=decoded("traceback"),
            flooded="flooded" in fields,
        )


def _read_harness(stdout: str, nonce: str) -> tuple[int | None, _Report | None]:
    """The index of the last cell the harness started and its final report, either None if it never got there.

    Only lines that start with the nonce count; the harness writes one report, so a second means that the nonce
    leaked, and raises ValueError like any other malformed line.
    """
    prefix = nonce + " "
    started: int | None = None
    reports: list[_Report] = []
    for line in stdout.splitlines():
        if line.startswith(prefix):
            kind, _, rest = line[len(prefix) :].partition(" ")
            if kind == "run":
                started = int(rest)
            elif kind == "end":
                reports.append(_Report.parse(rest))
            else:
                raise ValueError(f"unknown harness line {kind!r}")
    if len(reports) > 1:
        raise ValueError("more than one report")
    return started, (reports[0] if reports else None)


def _first(parts: list[_Excerpt], count: int) -> str:
    taken: list[str] = []
    for part in parts:
        if count <= 0:
            break
        piece = part.head[:count]
        taken.append(piece)
        count -= len(piece)
    return "".join(taken)


def _last(parts: list[_Excerpt], count: int) -> str:
    taken: list[str] = []
    for part in reversed(parts):
        if count <= 0:
            break
        piece = part.tail[-count:]
        taken.append(piece)
        count -= len(piece)
    return "".join(reversed(taken))


def _compose(parts: list[_Excerpt | None], limit: int) -> str:
    """The parts one after another, each starting on a new line, cut to `limit` characters around a marker.

    The end is kept as well as the beginning: it holds the error and, often, the result a program prints last.
    """
    pieces: list[_Excerpt] = []
    for part in parts:
        if part is None or not part.length:
            continue
        if pieces and not pieces[-1].tail.endswith("\n"):
            pieces.append(_Excerpt.whole("\n"))
        pieces.append(part)
    total = sum(piece.length for piece in pieces)
    if total <= limit:
        text = "".join(piece.head for piece in pieces)  # each piece is whole: no longer than the budget
    else:
        head = limit // 2
        text = f"{_first(pieces, head)}...[truncated {total - limit} chars]...{_last(pieces, limit - head)}"
    return text.rstrip("\n")


class PythonSession:
    """The state of the python tool within one episode: later calls see what earlier successful calls defined.

    Not thread-safe: one episode calls it from one thread. Sessions are independent and may run concurrently.
    """

    def __init__(self, limits: SandboxLimits = SESSION_LIMITS, max_output_chars: int = 2000) -> None:
        if not isinstance(limits, SandboxLimits):
            raise TypeError(f"limits must be SandboxLimits, not {type(limits).__name__}")
        limits.validate()
        if not isinstance(max_output_chars, int) or max_output_chars < 1:
            raise ValueError(f"max_output_chars must be a positive integer, got {max_output_chars!r}")
        self._limits = limits
        self._max_output_chars = max_output_chars
        # The cell's limits apply through the harness's timers; the sandbox's wall limit is the backstop behind them,
        # and its stdout carries only the report, whose size follows from max_output_chars.
        self._sandbox_limits = dataclasses.replace(
            limits,
            wall_seconds=limits.wall_seconds + _GRACE_SECONDS,
            max_output_bytes=max(limits.max_output_bytes, _REPORT_BYTES_PER_CHAR * max_output_chars + 65536),
        )
        self._cells: list[_Cell] = []
        self._calls = 0

    @property
    def cells(self) -> list[str]:
        """The sources of the kept cells (those that ran successfully), in order: what each call replays."""
        return [cell.source for cell in self._cells]

    def run(self, code: str) -> CellResult:
        """Replay the kept cells, then run `code`, and keep it if it runs to the end.

        Never raises because of what the code does: every failure is a `CellResult` with `ok` False.
        """
        if not isinstance(code, str):
            raise TypeError(f"code must be str, not {type(code).__name__}")
        started = time.monotonic()
        self._calls += 1
        cell = _Cell(self._calls, code)
        try:
            # Cheap on the host, and catches what the parser and the compiler reject, before any sandbox starts.
            compile(code, cell.filename, "exec", dont_inherit=True)
        except (SyntaxError, ValueError, RecursionError, MemoryError) as error:
            return self._rejected(code, error, started)
        nonce = secrets.token_hex(16)
        result = run_python(_HARNESS, stdin=self._job(nonce, cell), limits=self._sandbox_limits, files=HARNESS_FILES)
        if result.sandbox_error is not None:
            return self._failed(f"sandbox error: {result.sandbox_error}", [], started)
        try:
            running, report = _read_harness(result.stdout, nonce)
        except (ValueError, KeyError):
            return self._failed("the harness's report was garbled", [], started)

        parts: list[_Excerpt | None] = []
        traceback_text: str | None = None
        if report is None:
            error = self._death(result)
        else:
            running = report.cell
            parts = [report.stdout, report.stderr]
            if report.status == "ok" and not report.flooded:
                self._cells.append(cell)
                output = _compose([*parts, report.result], self._max_output_chars)
                return CellResult(output, True, None, time.monotonic() - started)
            if report.flooded:  # whatever the cell did next (an OSError, most likely) follows from this
                error = f"output limit exceeded: the cell wrote more than {self._limits.max_file_size_mb} MB"
            elif report.status in ("error", "replay"):
                error = report.error or "an exception"
                traceback_text = report.traceback
            elif report.status == "timeout":
                error = self._wall_timeout()
            elif report.status == "cpu":
                error = self._cpu_timeout()
            else:
                return self._failed("the harness's report was garbled", [], started)

        if running is None:
            return self._failed(f"the sandbox failed before running the cell: {error}", parts, started)
        if running < len(self._cells):
            return self._replay_failed(running, error, traceback_text, started)
        return self._failed(error, parts, started, traceback_text)

    def _job(self, nonce: str, cell: _Cell) -> str:
        header = f"{self._limits.wall_seconds!r} {self._max_output_chars} {self._limits.max_file_size_mb << 20} {_RANDOM_SEED}"
        cells = [f"{c.number} {c.source.encode('utf-8').hex()}" for c in [*self._cells, cell]]
        return "\n".join([nonce, header, *cells])

    def _wall_timeout(self) -> str:
        return f"timed out after {self._limits.wall_seconds:g} s"

    def _cpu_timeout(self) -> str:
        return f"timed out: used more than {self._limits.cpu_seconds:g} s of CPU time"

    def _death(self, result: SandboxResult) -> str:
        """Why the interpreter ended without a report."""
        if result.timed_out:
            return self._wall_timeout()
        if result.killed_by == "cpu_time":
            return self._cpu_timeout()
        if result.killed_by == "memory":
            return f"ran out of memory (limit {self._limits.memory_mb} MB)"
        if result.killed_by == "output_limit":
            return "output limit exceeded"
        if result.killed_by is not None:
            return f"the interpreter was killed ({result.killed_by.removeprefix('signal:')})"
        return f"the interpreter exited before the cell finished (exit code {result.exit_code})"

    def _failed(self, error: str, parts: list[_Excerpt | None], started: float, traceback_text: str | None = None) -> CellResult:
        ending = traceback_text if traceback_text is not None else f"[{error}]"
        output = _compose([*parts, _Excerpt.whole(ending)], self._max_output_chars)
        return CellResult(output, False, error, time.monotonic() - started)

    def _replay_failed(self, index: int, reason: str, traceback_text: str | None, started: float) -> CellResult:
        dropped = self._cells[index:]
        del self._cells[index:]
        first = dropped[0].number
        lost = f"cell {first}" if len(dropped) == 1 else f"cells {first} to {dropped[-1].number}"
        error = (
            f"replaying earlier cell {first} failed ({reason}), so this cell did not run; "
            f"the state from {lost} is lost: run again what you still need"
        )
        ending = f"{traceback_text}\n[{error}]" if traceback_text else f"[{error}]"
        return CellResult(_compose([_Excerpt.whole(ending)], self._max_output_chars), False, error, time.monotonic() - started)

    def _rejected(self, code: str, error: SyntaxError | ValueError | RecursionError | MemoryError, started: float) -> CellResult:
        """A cell Python cannot compile: reported the way Python prints it, without running anything."""
        if isinstance(error, SyntaxError):
            lines = code.splitlines()
            if error.text is None and error.lineno is not None and 0 < error.lineno <= len(lines):
                error.text = lines[error.lineno - 1]  # the compiler (unlike the parser) leaves it out
            where = f" (line {error.lineno})" if error.lineno is not None else ""
            summary = f"{type(error).__name__}: {error.msg}{where}"
            shown = "".join(traceback.format_exception_only(error))
        else:  # null bytes, or nesting too deep for the compiler
            summary = shown = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        output = _compose([_Excerpt.whole(shown)], self._max_output_chars)
        return CellResult(output, False, summary, time.monotonic() - started)
