"""Weights from the learner to its rollout workers over a torch.distributed group of their own
(`cluster.weight_sync: collective`): NCCL when the learner and the workers are on GPUs, gloo otherwise.

The group is made from a TCP store the learner opens (group rank 0; worker i is rank i + 1), outside any default
process group: the learner ranks' own group (FSDP's) is another, and the workers have none. Each version goes out
as one broadcast per tensor, in the order of the learner's inference weights, into buffers each worker keeps (a
second copy of the weights); the worker then loads them with its engine's checked update at its next load point,
as it would a version fetched from Ray's object store.

Nothing here waits forever: the group's timeout (`cluster.timeout_seconds`) bounds every broadcast (gloo's own
timeout; NCCL's watchdog aborts a collective a member never joins), and the pool gives each worker's receive the
same deadline, so that a member that died or hangs is named, replaced, and the group formed again without it.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class TensorSpec:
    """One broadcast tensor: the inference weight's name, and what a worker allocates to receive it."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype


def free_port() -> int:
    """A TCP port free on this node now (for a store or a process group to listen on)."""
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class GroupAddress:
    """Where a group meets: the learner's node and a port free on it, and the group's size (the learner and the
    workers). Each group formed is new, with a store of its own."""

    host: str
    port: int
    size: int


def broadcast_device(learner_device: torch.device, worker_gpus: float) -> torch.device:
    """Where the broadcast tensors live: the learner's GPU when the workers have GPUs too (NCCL), else the CPU
    (gloo, which every pair of processes can use)."""
    return learner_device if learner_device.type == "cuda" and worker_gpus > 0 else torch.device("cpu")


class WeightGroup:
    """One member of a weight-broadcast group: the learner (rank 0) sends, the workers receive."""

    def __init__(self, address: GroupAddress, rank: int, device: torch.device, timeout_seconds: float) -> None:
        timeout = timedelta(seconds=timeout_seconds)
        store = dist.TCPStore(address.host, address.port, address.size, is_master=rank == 0, timeout=timeout)
        self.device, self.timeout = device, timeout
        if device.type == "cuda":
            options = dist.ProcessGroupNCCL.Options()
            options._timeout = timeout
            self.group = dist.ProcessGroupNCCL(store, rank, address.size, options)
        else:
            self.group = dist.ProcessGroupGloo(store, rank, address.size, timeout)

    def broadcast(self, tensors: Sequence[torch.Tensor]) -> None:
        """Rank 0's tensors into every member's (the same shapes, in the same order); raises past the timeout."""
        for tensor in tensors:
            self.group.broadcast(tensor, 0, self.timeout).wait()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def close(self) -> None:
        """Leave the group. The learner does so when a broadcast failed: a worker still blocked in it, waiting for
        the rest of the version, then fails at once ("connection closed") instead of at the group's timeout. Gloo's
        sockets close with the group's last reference; NCCL's communicators are aborted."""
        group, self.group = self.group, None
        if group is not None and self.device.type == "cuda":
            try:
                group.abort()
            except RuntimeError:  # already aborted
                pass


def allocate(specs: Sequence[TensorSpec], device: torch.device) -> dict[str, torch.Tensor]:
    """A worker's receive buffers."""
    return {spec.name: torch.empty(spec.shape, dtype=spec.dtype, device=device) for spec in specs}
