"""Soak: a real run of the default recipe (on the tiny model) killed with SIGKILL five times, at seeded moments in
different phases (the step-0 checkpoint's write, before any checkpoint exists; generation; the update; a checkpoint
write; the final model's write), and resumed with `rlvr train --resume` after each kill, ends exactly as one
uninterrupted run: the same metrics rows, the same weights, optimiser moments and trainer state, the same files."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

SEED = 20240611  # the kill moments: drawn from a fixed seed, so the test never fails by chance and a failure reproduces
# Each resume starts at most one step after the one before, and kills 2 to 4 fall at most two steps after their
# resume's: at 6 steps the seeded kills fall where they do at more (steps 0, 2, 3 and 3, then the write of final/),
# each with steps left after it.
STEPS = 6
TIMING = ("seconds", "tokens_per_second", "memory/")  # what differs between two runs of the same config
MARK = "@soak"

# `rlvr train` itself (the command line), with a marker on stdout at each phase's start and end, so the test knows
# what the process is doing when it kills it; the markers only observe, every phase runs unchanged. Every launch is a
# process of its own, forked from one that imported everything first (what the run would import on its way too: the
# command's API, the environment's reasoning-gym, the curves' matplotlib): the seconds of importing torch are not what
# a resume tests, and would be paid seven times over. A launch waits for its go, and the run's own start (its config
# and checkpoint reads) comes after it. The forking process answers one request a line on stdin, on its stdout:
#   fork {"args": [...], "stdout": FIFO, "stderr": LOG}  -> the launch's pid (its markers go to FIFO, its stderr to LOG)
#   go PID                                                -> ok; the launch runs `rlvr train ARGS`
#   wait PID                                              -> its exit status once it ends (-9: killed by SIGKILL)
FORKER = textwrap.dedent(
    f"""
    import functools, json, os, sys, time
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot
    import reasoning_gym
    import rlvr.api
    import rlvr.run
    from rlvr.cli import main
    from rlvr.trainer import Trainer

    def mark(kind, phase, step):
        sys.stdout.write(f"{MARK} {{kind}} {{phase}} {{step}} {{time.monotonic():.6f}}\\n")
        sys.stdout.flush()

    def traced(phase, method, step_of):
        @functools.wraps(method)
        def wrapper(self, *args, **kwargs):
            step = step_of(self, *args)
            mark("begin", phase, step)
            result = method(self, *args, **kwargs)
            mark("end", phase, step)
            return result
        return wrapper

    Trainer.fit = traced("fit", Trainer.fit, lambda self, *a: self.step)  # the step it starts at: resumed or 0
    Trainer.rollout = traced("generate", Trainer.rollout, lambda self, step: step + 1)
    Trainer.update = traced("update", Trainer.update, lambda self, *a: self.step + 1)
    Trainer.save = traced("checkpoint", Trainer.save, lambda self: self.step)
    Trainer.save_final = traced("final", Trainer.save_final, lambda self, *a: self.step)

    def launch(request, gate):
        # The launch's own stdin (its gate), stdout (the test's FIFO) and stderr (its log), on the standard descriptors
        # that every stream object here writes through; then, once the go comes, the command line.
        out = os.open(request["stdout"], os.O_WRONLY)
        err = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        for fd, standard in ((gate, 0), (out, 1), (err, 2)):
            os.dup2(fd, standard)
            os.close(fd)
        if os.fdopen(0, closefd=False).readline() != "go\\n":  # the test, or this process, went away first
            os._exit(3)
        sys.argv = ["rlvr", *request["args"]]
        main()  # its SystemExit ends the process as `rlvr train` ends

    gates = {{}}  # pid -> the write end of its stdin, until its go
    for line in sys.stdin:
        command, _, rest = line.rstrip("\\n").partition(" ")
        if command == "fork":
            gate, gate_end = os.pipe()
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                for fd in (gate_end, *gates.values()):
                    os.close(fd)
                launch(json.loads(rest), gate)
                sys.exit(0)  # main() returned: the process ends here, never back in this loop
            os.close(gate)
            gates[pid] = gate_end
            reply = pid
        elif command == "go":
            gate_end = gates.pop(int(rest))
            os.write(gate_end, b"go\\n")
            os.close(gate_end)
            reply = "ok"
        elif command == "wait":
            try:
                _, status = os.waitpid(int(rest), 0)
                reply = os.waitstatus_to_exitcode(status)
            except ChildProcessError:  # waited for already
                reply = "gone"
            if int(rest) in gates:
                os.close(gates.pop(int(rest)))
        print(reply, flush=True)
    """
)


def _settings(model_dir: Path, out: Path, name: str) -> list[str]:
    settings = {
        "name": name,
        "output_dir": out,
        "model.path": model_dir,
        "rollout.engine": "transformers",
        "scoring.workers": 0,  # no scoring processes: the kill ends the whole run
        "train.threads": 1,  # two cores shared with others: one thread keeps the phases' lengths steady
        "train.steps": STEPS,
        "train.save_every": 1,
        "train.prompts_per_step": 2,
        "train.group_size": 4,
        "train.micro_batch_size": 8,
        "train.lr": 1e-3,  # large enough that a step replayed or skipped moves the weights visibly
        "sampling.max_new_tokens": 16,
        # A random tiny model never answers: the control's coin-flip reward gives the groups spread, so every
        # update moves the weights; and no completion ends before the limit, so the overlong filter must be off.
        "env.rewards.random": 1.0,
        "algo.overlong_filter": "false",
        "eval.before": "false",
        "eval.after": "false",
    }
    return ["train", "default", *(arg for key, value in settings.items() for arg in ("--set", f"{key}={value}"))]


@dataclass
class Marker:
    kind: str  # begin | end
    phase: str  # fit | generate | update | checkpoint | final
    step: int
    time: float  # the child's time.monotonic(): the same clock as the test's


class Forker:
    """The process every launch is forked from (FORKER), and its answers."""

    def __init__(self, log: Path, cwd: Path) -> None:
        self.log = log
        self._stderr: IO[str] = open(log, "w")
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
        pipe = subprocess.PIPE
        self.process = subprocess.Popen(
            [sys.executable, "-c", FORKER], stdin=pipe, stdout=pipe, stderr=self._stderr, text=True, env=env, cwd=cwd
        )
        self._answers: queue.Queue[str | None] = queue.Queue()
        self._ended = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._answers.put(line.strip())
        self._answers.put(None)

    def ask(self, request: str, timeout: float = 300.0) -> str:
        assert self.process.stdin is not None
        answer = None
        if not self._ended:
            self.process.stdin.write(request + "\n")
            self.process.stdin.flush()
            with contextlib.suppress(queue.Empty):
                answer = self._answers.get(timeout=timeout)
            self._ended = answer is None and self.process.poll() is not None
        if answer is None:
            self._stderr.flush()
            raise AssertionError(f"no answer to {request!r} within {timeout:g} s:\n{self.log.read_text()[-4000:]}")
        return answer

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()  # its loop ends
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(60)
        self._stderr.close()


class Launch:
    """One `rlvr train` process, forked at once, running from `go()`, its markers read as they come."""

    def __init__(self, forker: Forker, args: list[str], log: Path) -> None:
        self.log = log
        self._forker = forker
        self._fifo = log.with_suffix(".markers")
        os.mkfifo(self._fifo)
        self.markers: list[Marker] = []
        self._ended = False
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.returncode: int | None = None
        self.pid = int(forker.ask("fork " + json.dumps({"args": args, "stdout": str(self._fifo), "stderr": str(log)})))

    def go(self) -> Launch:
        assert self._forker.ask(f"go {self.pid}") == "ok"
        return self

    def _read(self) -> None:
        with open(self._fifo) as stream:  # opened once the launch opens its end
            for line in stream:
                if line.startswith(MARK + " "):
                    kind, phase, step, when = line.split()[1:]
                    with self._changed:
                        self.markers.append(Marker(kind, phase, int(step), float(when)))
                        self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def errors(self) -> str:
        return self.log.read_text()[-4000:] if self.log.exists() else ""

    def wait_for(self, kind: str, phase: str, step: int | None = None, timeout: float = 300.0) -> Marker:
        """The first marker of `kind` and `phase` (at `step`, unless None), once it has come."""

        def found() -> Marker | None:
            return next((m for m in self.markers if (m.kind, m.phase) == (kind, phase) and step in (None, m.step)), None)

        with self._changed:
            self._changed.wait_for(lambda: found() is not None or self._ended, timeout)
            marker = found()
        assert marker is not None, f"the run never reached {kind} {phase} {step}:\n{self.errors()}"
        return marker

    def kill(self) -> tuple[float, int]:
        """SIGKILL now: the moment it was sent, and the exit status (-9 where it killed a running process)."""
        sent = time.monotonic()
        os.kill(self.pid, signal.SIGKILL)
        return sent, self.finish(60)

    def finish(self, timeout: float = 300.0) -> int:
        self.returncode = int(self._forker.ask(f"wait {self.pid}", timeout))
        self.close()
        return self.returncode

    def close(self) -> None:
        if self.returncode is None:  # a test that failed part-way: no process of ours outlives it
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            with contextlib.suppress(AssertionError, OSError, ValueError):
                self.returncode = int(self._forker.ask(f"wait {self.pid}", 60))
        if self._reader.is_alive():  # a launch that never opened its end: open it, so that the reader sees the end
            with contextlib.suppress(OSError):
                os.close(os.open(self._fifo, os.O_WRONLY | os.O_NONBLOCK))
        self._reader.join(60)

    def phase_at(self, when: float) -> str:
        """What the process was doing at `when`: the innermost phase begun and not yet ended."""
        open_phases: list[Marker] = []
        last = None
        for marker in self.markers:
            if marker.time > when:
                break
            last = marker
            if marker.kind == "begin":
                open_phases.append(marker)
            elif open_phases and open_phases[-1].phase == marker.phase:
                open_phases.pop()
        if open_phases and open_phases[-1].phase != "fit":
            inner = open_phases[-1]
            return f"{1000 * (when - inner.time):.0f} ms into {inner.phase} {inner.step}"
        return f"between phases, after {last.kind} {last.phase} {last.step}" if last else "starting up"


def _shortest(markers: list[Marker]) -> dict[str, float]:
    """Each phase's shortest run, in seconds."""
    begun: dict[tuple[str, int], float] = {}
    shortest: dict[str, float] = {}
    for marker in markers:
        if marker.kind == "begin":
            begun[marker.phase, marker.step] = marker.time
        else:
            took = marker.time - begun[marker.phase, marker.step]
            shortest[marker.phase] = min(took, shortest.get(marker.phase, took))
    return shortest


def _complete_checkpoints(run: Path) -> list[int]:
    """The steps of the checkpoints on disk that a resume may load (trainer.pt is written last, in the temporary
    folder before the rename)."""
    folders = (run / "checkpoints").glob("step-*")
    return sorted(int(path.name.removeprefix("step-")) for path in folders if (path / "trainer.pt").exists())


def _rows(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if not any(t in k for t in TIMING)} for row in rows]


def _same(a: Any, b: Any) -> bool:
    """Exact equality through dicts, sequences, tensors and arrays (the RNG states hold all of them)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def _files(run: Path) -> list[str]:
    return sorted(str(path.relative_to(run)) for path in run.rglob("*"))


def test_a_run_killed_five_times_resumes_to_the_uninterrupted_run(tiny_model_dir: Path, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    run, whole = tmp_path / "soak", tmp_path / "whole"
    args = _settings(tiny_model_dir, tmp_path, "soak")
    forker = Forker(logs / "forker.log", tmp_path)
    launches: list[Launch] = []

    def launch_next(args: list[str], name: str) -> Launch:
        launches.append(Launch(forker, args, logs / f"{name}.log"))
        return launches[-1].go()

    try:
        reference = launch_next(_settings(tiny_model_dir, tmp_path, "whole"), "whole")
        assert reference.finish() == 0, reference.errors()
        # How long each phase takes on this machine now: a kill comes at a random fraction of its phase's shortest
        # run (at most 0.1 s: the run always has more than that left to do when the kill comes).
        shortest = {phase: min(took, 0.2) for phase, took in _shortest(reference.markers).items()}

        rng = random.Random(SEED)
        # The first kill falls in the step-0 checkpoint's write, before any checkpoint exists: a resume from scratch.
        # The next three fall in generation, the update and a checkpoint write, in a seeded order and at seeded
        # steps; the last in the write of final/, after the last checkpoint: a resume with no step left to train.
        phases = ["checkpoint", *rng.sample(["generate", "update", "checkpoint"], 3), "final"]
        kills: list[str] = []
        kept = 0  # the newest checkpoint a killed launch had finished writing (its end marker came): never lost
        for index, phase in enumerate(phases):
            on_disk = _complete_checkpoints(run) if run.exists() else []
            launch = launch_next(args if index == 0 else [*args, "--resume"], f"soak-{index + 1}")
            start = launch.wait_for("begin", "fit")
            # What the resume loaded: a complete checkpoint that was on disk (none: from scratch), and none older than
            # one a killed launch had finished writing.
            assert start.step in (on_disk or [0]) and start.step >= kept, (index, start.step, on_disk, kept)
            if phase == "final":
                step = STEPS
            elif index == 0:
                step = 0
            else:  # the step after the resumed one or the next, never the last: the run has work left after it
                step = min(start.step + 1 + rng.randrange(2), STEPS - 1)
            target = launch.wait_for("begin", phase, step)
            time.sleep(rng.uniform(0.1, 0.5) * shortest[phase])
            sent, returncode = launch.kill()
            assert returncode == -signal.SIGKILL, f"kill {index + 1} found the run ended ({returncode}):\n{launch.errors()}"
            kept = max([kept, *(m.step for m in launch.markers if (m.kind, m.phase) == ("end", "checkpoint"))])
            kills.append(
                f"kill {index + 1}: started at step {start.step}, killed {sent - start.time:.2f} s into its loop, "
                f"{1000 * (sent - target.time):.0f} ms after {phase} {step} began: {launch.phase_at(sent)}; "
                f"checkpoints left: {_complete_checkpoints(run) or 'none'}"
            )
        on_disk = _complete_checkpoints(run)
        last = launch_next([*args, "--resume"], f"soak-{len(phases) + 1}")
        assert last.finish() == 0, last.errors()
        resumed = last.wait_for("begin", "fit").step
        assert resumed in on_disk and resumed >= kept, (resumed, on_disk, kept)
        print("\n".join([*kills, f"then resumed at step {resumed} and ran to the end"]))  # pytest -s shows them
    finally:
        for launch in launches:
            launch.close()
        forker.close()

    rows, expected = _rows(run), _rows(whole)
    assert [row["step"] for row in rows] == list(range(1, STEPS + 1))  # no row lost or written twice
    for row, want in zip(rows, expected):
        assert row == want, f"step {row['step']}"
    # The same files (no partial checkpoint or temporary file left behind), and in them the same weights, optimiser
    # moments, scheduler, guard and RNG states.
    assert _files(run) == _files(whole)
    checkpoint = Path("checkpoints") / f"step-{STEPS:06d}"
    for weights in (Path("final") / "model.safetensors", checkpoint / "model" / "model.safetensors"):
        assert _same(load_file(run / weights), load_file(whole / weights)), weights
    for folder in (run, whole):
        dcp_to_torch_save(folder / checkpoint / "state", tmp_path / f"{folder.name}-state.pt")
    states = [torch.load(tmp_path / f"{folder.name}-state.pt", weights_only=False) for folder in (run, whole)]
    assert states[0]["optimizer"]["state"] and _same(*states)
    assert _same(*(torch.load(folder / checkpoint / "trainer.pt", weights_only=False) for folder in (run, whole)))
