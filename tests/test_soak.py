"""Soak: a real run of the default recipe (on the tiny model) killed with SIGKILL five times, at seeded moments in
different phases (the step-0 checkpoint's write, before any checkpoint exists; generation; the update; a checkpoint
write; the final model's write), and resumed with `rlvr train --resume` after each kill, ends exactly as one
uninterrupted run: the same metrics rows, the same weights, optimiser moments and trainer state, the same files."""

from __future__ import annotations

import json
import os
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
STEPS = 8
TIMING = ("seconds", "tokens_per_second", "memory/")  # what differs between two runs of the same config
MARK = "@soak"

# `rlvr train` itself (the command line), with a marker on stdout at each phase's start and end, so the test knows
# what the process is doing when it kills it; the markers only observe, every phase runs unchanged. The process
# imports everything first and then waits for a line on stdin: the test starts the next launch's imports while the
# current launch trains, and lets it go only after the kill (the seconds of importing torch are not what a resume
# tests, and the run's own start, its config and checkpoint reads, all come after the go).
DRIVER = textwrap.dedent(
    f"""
    import functools, sys, time
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
    sys.argv = ["rlvr", *sys.argv[1:]]
    sys.stdin.readline()
    main()
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
    return [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]


@dataclass
class Marker:
    kind: str  # begin | end
    phase: str  # fit | generate | update | checkpoint | final
    step: int
    time: float  # the child's time.monotonic(): the same clock as the test's


class Launch:
    """One `rlvr train` process, started at once (its imports), running from `go()`, its markers read as they come."""

    def __init__(self, args: list[str], log: Path, cwd: Path) -> None:
        self.log = log
        self._stderr: IO[str] = open(log, "w")
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
        command = [sys.executable, "-c", DRIVER, "train", "default", *args]
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True, env=env, cwd=cwd
        )
        self.markers: list[Marker] = []
        self._ended = False
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def go(self) -> Launch:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.close()
        return self

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(MARK + " "):
                kind, phase, step, when = line.split()[1:]
                with self._changed:
                    self.markers.append(Marker(kind, phase, int(step), float(when)))
                    self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def errors(self) -> str:
        self._stderr.flush()
        return self.log.read_text()[-4000:]

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
        self.process.send_signal(signal.SIGKILL)
        returncode = self.process.wait(60)
        self.close()
        return sent, returncode

    def finish(self, timeout: float = 300.0) -> int:
        returncode = self.process.wait(timeout)
        self.close()
        return returncode

    def close(self) -> None:
        if self.process.poll() is None:  # a test that failed part-way: no process of ours outlives it
            self.process.kill()
            self.process.wait(60)
        self._reader.join(60)
        self._stderr.close()

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
    launches = [Launch(_settings(tiny_model_dir, tmp_path, "whole"), logs / "whole.log", tmp_path)]
    try:
        launches.append(Launch(args, logs / "soak-1.log", tmp_path))  # imports while the uninterrupted run trains
        reference = launches[0].go()
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
            launch = launches[-1].go()
            launches.append(Launch([*args, "--resume"], logs / f"soak-{index + 2}.log", tmp_path))  # the next one
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
        last = launches[-1].go()
        assert last.finish() == 0, last.errors()
        resumed = last.wait_for("begin", "fit").step
        assert resumed in on_disk and resumed >= kept, (resumed, on_disk, kept)
        print("\n".join([*kills, f"then resumed at step {resumed} and ran to the end"]))  # pytest -s shows them
    finally:
        for launch in launches:
            launch.close()

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
