"""Running the rank scripts of tests/scripts: N ranks under torchrun, in a process group of their own, while one rank
runs in the test's own process beside them (the 1-rank reference a multi-rank run is compared with)."""

from __future__ import annotations

import contextlib
import os
import random
import re
import runpy
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

SCRIPTS = Path(__file__).parent / "scripts"
# torchrun's own warning lines (`W1201 12:59:48 ...`) and the progress bars of loading and writing a model
_NOISE = re.compile(r"[WI]\d{4} |Writing model|Loading weights")


def start(nproc: int, script: str, *args: str) -> subprocess.Popen:
    """`torchrun --nproc-per-node=N SCRIPT ARGS`, left running, one thread a rank, in its own process group (so that
    its ranks can be killed with it)."""
    return _torchrun(nproc, str(SCRIPTS / script), *args)


def start_steps(nproc: int, *steps: Sequence[str]) -> subprocess.Popen:
    """As `start`, but several scripts, one after another in the same N ranks: one launch, one start-up (seconds of
    importing torch and transformers in every rank), one process group. A step is `[SCRIPT, *ARGS]`, or
    `["--after", FILE, SCRIPT, *ARGS]` to wait first for FILE, which the test writes once what the step needs (say a
    checkpoint made beside the launch) is ready."""
    return _torchrun(nproc, __file__, *[arg for step in steps for arg in (_STEP, *step)])


def _torchrun(nproc: int, path: str, *args: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    pipe = subprocess.PIPE
    return subprocess.Popen([*command, path, *args], stdout=pipe, stderr=pipe, text=True, env=env, start_new_session=True)


_STEP = "--step"
STEP_WAIT = 300.0  # seconds a step waits for its --after file


def wait_for(path: Path, process: subprocess.Popen | None = None, timeout: float = STEP_WAIT) -> None:
    """Until `path` exists; a launch that ends first (it would never write it) or the timeout fails."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process is not None and process.poll() is not None:
            stderr = process.communicate()[1] or ""
            raise RuntimeError(f"{process.args}: ended (exit {process.returncode}) before writing {path}:\n{errors(stderr)}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} not written within {timeout:g} s")
        time.sleep(0.1)


def _run_steps(argv: list[str]) -> None:
    """A rank of `start_steps`: each step's script run here as `python SCRIPT ARGS` would run it. The scripts leave
    the process group when they end; here it is kept for the next step (whose trainer finds it joined) and left
    after the last."""
    from rlvr.distributed import Ranks

    steps, current = [], None
    for arg in argv:
        if arg == _STEP:
            current = []
            steps.append(current)
        else:
            current.append(arg)
    leave = Ranks.leave
    Ranks.leave = lambda self: None
    try:
        for step in steps:
            if step[0] == "--after":
                wait_for(Path(step[1]))
                step = step[2:]
            sys.argv = [str(SCRIPTS / step[0]), *step[1:]]
            runpy.run_path(sys.argv[0], run_name="__main__")
    finally:
        Ranks.leave = leave
    Ranks.from_environment().leave()


def finish(process: subprocess.Popen, timeout: float) -> subprocess.CompletedProcess:
    """The launch's end. Past `timeout` the whole process group is killed, torchrun's ranks included (no rank outlives
    the test), and the test fails saying so."""
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stderr = kill(process)
        pytest.fail(f"{process.args}: the ranks did not finish within {timeout:g} s (a rank stuck waiting?):\n{errors(stderr)}")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def kill(process: subprocess.Popen) -> str:
    """The launch's whole process group killed; what it wrote to stderr."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    return process.communicate()[1] or ""


@contextlib.contextmanager
def running(process: subprocess.Popen) -> Iterator[subprocess.Popen]:
    """The launch killed (its whole group) if the block raises: a failed test leaves no rank behind."""
    try:
        yield process
    except BaseException:
        kill(process)
        raise


def one_rank_here(script: str, *args: str) -> None:
    """`python SCRIPT ARGS` (one rank, no torchrun) run in this process instead: the same script on one thread, as
    OMP_NUM_THREADS=1 gives a launched one, without the seconds a fresh interpreter spends importing torch and
    transformers. This process's argv, thread count and random states are put back after it."""
    assert int(os.environ.get("WORLD_SIZE", "1")) <= 1
    saved = sys.argv, torch.get_num_threads(), random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        sys.argv = [str(SCRIPTS / script), *args]
        torch.set_num_threads(1)
        runpy.run_path(str(SCRIPTS / script), run_name="__main__")
    finally:
        sys.argv = saved[0]
        torch.set_num_threads(saved[1])
        random.setstate(saved[2])
        np.random.set_state(saved[3])
        torch.set_rng_state(saved[4])


def errors(stderr: str) -> str:
    """The end of stderr, without torchrun's warnings and progress bars."""
    return "\n".join(line for line in stderr.splitlines() if not _NOISE.match(line))[-4000:]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """1 vs 2 ranks: equal to fp32 noise. Adam moves each weight by about the learning rate (1e-4) whatever its
    gradient's size, so a gradient entry near zero whose last bits differ can move its weight by a few 1e-6 in one run
    and not the other (one entry in 1.5M does here); the gradients themselves are compared through the loss and the
    gradient norm."""
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-5, msg=name)


if __name__ == "__main__":  # a rank of `start_steps`, under torchrun
    _run_steps(sys.argv[1:])
