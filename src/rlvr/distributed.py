"""Several learner processes (ranks) as one: who does what, how they meet, and how a lost rank ends the run.

`torchrun --nproc-per-node N -m rlvr train ...` (or `rlvr train --nproc N`) starts N ranks. Each samples its share
of a step's prompts with its own engine; the episodes are then gathered, so every rank sees the whole batch and
computes the same advantages, the same loss normaliser and the same metrics. Each trains on the groups it sampled,
with the weights sharded over the ranks (FSDP2's `fully_shard`): the gradients of all ranks add up to the gradient
of the whole batch, so N ranks make the update one rank would make on the same batch.

Ranks meet at named points (`Ranks.barrier`), on a gloo group whatever the device: gloo's monitored barrier names
the ranks that did not arrive within `train.rank_timeout_seconds`, so a rank that died or hangs ends the run with
an error that names it, instead of every other rank waiting forever inside a collective.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

from rlvr.errors import RankError

T = TypeVar("T")


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    timeout_seconds: float = 600.0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """Rank 0 writes the run folder, the metrics and the progress bar; the others compute."""
        return self.rank == 0

    @classmethod
    def from_environment(cls, timeout_seconds: float = 600.0) -> Ranks:
        """The ranks torchrun describes in the environment (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`); one rank without."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls(timeout_seconds=timeout_seconds)
        return cls(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")), timeout_seconds)

    def join(self, device: torch.device) -> None:
        """Join the process group: NCCL between GPUs, gloo between CPUs, and a gloo group for the meeting points."""
        if not self.distributed or dist.is_initialized():
            return
        backend = "nccl" if device.type == "cuda" else "gloo"
        timeout = timedelta(seconds=self.timeout_seconds)
        dist.init_process_group(backend, timeout=timeout, device_id=device if device.type == "cuda" else None)
        _CONTROL[0] = dist.new_group(backend="gloo", timeout=timeout) if backend != "gloo" else dist.group.WORLD

    def share(self, count: int, rank: int | None = None) -> range:
        """The items of `count` (a step's prompts) that `rank` (default: this one) takes: a contiguous block, the
        first `count % world_size` ranks one more."""
        rank = self.rank if rank is None else rank
        return range(rank * count // self.world_size, (rank + 1) * count // self.world_size)

    def owner(self, index: int, count: int) -> int:
        """The rank whose share of `count` holds `index`."""
        return next(rank for rank in range(self.world_size) if index in self.share(count, rank))

    def barrier(self, point: str, timeout_seconds: float | None = None) -> None:
        """Wait until every rank reaches `point`; a rank missing after the timeout ends the run, named."""
        if not self.distributed:
            return
        seconds = timeout_seconds or self.timeout_seconds
        try:
            dist.monitored_barrier(group=_CONTROL[0], timeout=timedelta(seconds=seconds), wait_all_ranks=True)
        except RuntimeError as error:
            detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise RankError(f"rank {self.rank}: not every rank reached {point!r} within {seconds:g} s: {detail}") from None

    def gather(self, value: T) -> list[T]:
        """Every rank's `value` (any picklable object), in rank order, on every rank."""
        if not self.distributed:
            return [value]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, value, group=_CONTROL[0])
        return gathered

    def leave(self) -> None:
        if self.distributed and dist.is_initialized():
            # Together: a rank that tears its groups down while another still writes (rank 0 saving what they
            # computed) can be aborted by gloo in the teardown ("terminate called without an active exception").
            self.barrier("leaving the process group")
            dist.destroy_process_group()


_CONTROL: list[Any] = [None]  # the gloo group of the meeting points, once joined


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """A sharded tensor gathered whole (a collective: every rank calls it, in the same order); others as they are."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def shard_module(root: torch.nn.Module, layers: Sequence[torch.nn.Module]) -> None:
    """FSDP2 over all ranks: each of `layers` (the decoder blocks) its own unit, so only one block's weights are
    gathered at a time, and `root` the unit holding the rest (embeddings, final norm, head). FSDP averages the
    ranks' gradients; a rank's loss is its part of the whole batch's, so the learner scales it by the world size
    (a sum, as the ranks' parts are, would need a reduction gloo lacks)."""
    from torch.distributed.fsdp import fully_shard

    for layer in layers:
        fully_shard(layer)
    fully_shard(root)
