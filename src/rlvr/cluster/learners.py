"""The learner as Ray actors: `cluster.learners: N` ranks of one torch.distributed group, placed by Ray.

With `cluster.learners: 0` (the default) the learner trains in the process that starts the run. With N >= 1 that
process only controls: it starts N learner actors, each reserving `cluster.learner_cpus` and `cluster.learner_gpus`
(Ray places them on whichever nodes have those free), hands them what torchrun would (a rank, the world size, and
rank 0's node and a free port), and each runs the whole run as that rank: the scale-up issue's sharded learner
(`rlvr.distributed`: gloo between CPUs, NCCL between GPUs), with rank 0 owning the rollout pool, the run folder and
the metrics. Rank 0's console (the progress bar, the step lines, the tables) reaches this process through a Ray
queue and is written to its terminal as rank 0 drew it.

Nothing waits without a deadline: a rank that cannot be placed or does not start within
`cluster.startup_timeout_seconds` is named with the resources it asked for; a rank that dies ends the run at once
with an error naming it (the others are stopped, not left waiting in a collective); a rank that hangs is named by
the ranks' own meeting points (`train.rank_timeout_seconds`). The run folder must be one every rank's node can
write (on several nodes, a shared file system), as under torchrun.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from rich.console import Console

from rlvr.cluster.pool import connect_ray, import_ray, last_line
from rlvr.cluster.weight_group import free_port
from rlvr.config import RunConfig
from rlvr.errors import RankError

_POLL_SECONDS = 0.1  # how often the console is relayed and the ranks are looked at


@dataclass(frozen=True)
class Screen:
    """What rank 0's console draws for: the terminal of the process that started the run."""

    terminal: bool
    width: int
    color_system: str | None

    @classmethod
    def of(cls, console: Console) -> Screen:
        return cls(console.is_terminal, console.width, console.color_system)


class _QueueFile(io.TextIOBase):
    """A console's output, sent on through a Ray queue a frame at a time (rich flushes after each print and redraw)."""

    def __init__(self, queue: Any) -> None:
        self.queue, self.parts = queue, []

    def write(self, text: str) -> int:
        self.parts.append(text)
        return len(text)

    def flush(self) -> None:
        if self.parts:
            self.queue.put("".join(self.parts))
            self.parts = []


class LearnerRank:
    """One learner rank, run as a Ray actor (a plain class, so that it can be read and tested without Ray)."""

    def __init__(self, rank: int, world_size: int, threads: int) -> None:
        self.rank, self.world_size = rank, world_size
        torch.set_num_threads(threads)  # the CPUs Ray reserved for it (train.threads, when set, still decides)

    def address(self) -> tuple[str, int, int]:
        """This rank's node, a port free on it (rank 0's is the group's meeting address), and its process id."""
        return import_ray().util.get_node_ip_address(), free_port(), os.getpid()

    def train(
        self,
        run: Callable[..., dict],
        config: RunConfig,
        resume: bool,
        overwrite: bool,
        master: tuple[str, int],
        console_queue: Any | None,
        screen: Screen,
    ) -> dict:
        """The whole run as this rank: `run` is `rlvr.run.train`, which reads the rank from the environment."""
        if self.world_size > 1:
            # One device a rank: Ray shows each GPU rank only its own (CUDA_VISIBLE_DEVICES), so it is local rank 0.
            os.environ.update(
                RANK=str(self.rank), WORLD_SIZE=str(self.world_size), LOCAL_RANK="0",
                MASTER_ADDR=master[0], MASTER_PORT=str(master[1]),
            )  # fmt: skip
        if console_queue is not None:
            console = Console(
                file=_QueueFile(console_queue), force_terminal=screen.terminal, width=screen.width,
                color_system=screen.color_system, stderr=False,
            )  # fmt: skip
        else:  # the other ranks print nothing: rank 0 speaks for the run
            console = Console(file=io.StringIO())
        return run(config, resume=resume, overwrite=overwrite, console=console)


def train_on_learners(config: RunConfig, resume: bool, overwrite: bool, console: Console, run: Callable[..., dict]) -> dict:
    """Run `run` (`rlvr.run.train` with the asynchronous trainer) as `cluster.learners` ranks on Ray actors, and
    return rank 0's summary; a rank's own error is raised here as it was raised there."""
    ray = import_ray()
    from ray.util.queue import Queue

    cluster = config.cluster
    owns = connect_ray(cluster)
    actor_type = ray.remote(num_cpus=cluster.learner_cpus, num_gpus=cluster.learner_gpus, max_restarts=0)(LearnerRank)
    threads = config.train.threads or max(1, int(cluster.learner_cpus))
    queue = Queue(actor_options={"num_cpus": 0})
    ranks = [actor_type.remote(rank, cluster.learners, threads) for rank in range(cluster.learners)]
    try:
        addresses = _started(ray, ranks, cluster.startup_timeout_seconds, cluster.learner_cpus, cluster.learner_gpus)
        pids = [pid for _, _, pid in addresses]
        master = addresses[0][:2]
        calls = {
            actor.train.remote(run, config, resume, overwrite, master, queue if rank == 0 else None, Screen.of(console)): rank
            for rank, actor in enumerate(ranks)
        }
        results = _await(ray, calls, pids, queue, console)
    finally:
        for actor in ranks:
            ray.kill(actor, no_restart=True)
        _relay(queue, console)
        ray.kill(queue.actor, no_restart=True)
        if owns:
            ray.shutdown()
    return results[0]


def _started(ray: Any, ranks: list[Any], deadline: float, cpus: float, gpus: float) -> list[tuple[str, int, int]]:
    calls = [actor.address.remote() for actor in ranks]
    ready, late = ray.wait(calls, num_returns=len(calls), timeout=deadline)
    if late:
        names = ", ".join(f"learner rank {calls.index(ref)}" for ref in late)
        asked = f"{cpus:g} CPUs" + (f" and {gpus:g} GPUs" if gpus else "")
        raise RankError(
            f"{names}: did not start within cluster.startup_timeout_seconds={deadline:g} s "
            f"(each asks the cluster for {asked}; the cluster has {ray.available_resources()} free)"
        )
    return ray.get(calls)


def _await(ray: Any, calls: dict[Any, int], pids: list[int], queue: Any, console: Console) -> dict[int, dict]:
    """Every rank's result, relaying rank 0's console meanwhile; the first rank to die or fail ends the wait."""
    pending, results = dict(calls), {}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=_POLL_SECONDS)
        _relay(queue, console)
        for ref in ready:
            rank = pending.pop(ref)
            try:
                results[rank] = ray.get(ref)
            except ray.exceptions.ActorDiedError as error:
                raise RankError(f"learner rank {rank} (pid {pids[rank]}): died during the run ({last_line(error)})") from None
            except ray.exceptions.RayTaskError as error:  # the rank raised: its own error, as a local run raises it
                if isinstance(error.cause, BaseException):
                    raise error.cause from None
                raise RankError(f"learner rank {rank} (pid {pids[rank]}): {last_line(error)}") from None
    return results


def _relay(queue: Any, console: Console) -> None:
    waiting = queue.qsize()
    if waiting:
        console.file.write("".join(queue.get_nowait_batch(waiting)))
        console.file.flush()
