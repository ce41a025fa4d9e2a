"""The weight-broadcast group of `cluster.weight_sync: collective`, its members as threads of this process: gloo
here, NCCL where two GPUs are (skipped otherwise, with the reason). The pool's use of it (a killed and a hung worker,
the group formed again) is in tests/test_cluster.py."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from rlvr.cluster.weight_group import GroupAddress, TensorSpec, WeightGroup, allocate, broadcast_device, free_port


def _members(size: int, devices: list[torch.device], timeout: float) -> list[WeightGroup]:
    """`size` members formed at once (each constructor waits for the others), on `devices`."""
    address = GroupAddress("127.0.0.1", free_port(), size)
    members: list[WeightGroup | None] = [None] * size
    errors: list[BaseException] = []

    def join(rank: int) -> None:
        try:
            members[rank] = WeightGroup(address, rank, devices[rank], timeout)
        except BaseException as error:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=join, args=(rank,)) for rank in range(size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    return members


def _broadcast_to_all(members: list[WeightGroup], sent: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    specs = [TensorSpec(name, tuple(t.shape), t.dtype) for name, t in sent.items()]
    buffers = [allocate(specs, member.device) for member in members[1:]]
    threads = [threading.Thread(target=m.broadcast, args=(list(b.values()),)) for m, b in zip(members[1:], buffers)]
    for thread in threads:
        thread.start()
    members[0].broadcast(list(sent.values()))
    for thread in threads:
        thread.join(timeout=60)
    return buffers


def _weights(device: torch.device) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    shapes = {"embed": (50, 8), "norm": (8,), "head": (50, 8)}
    weights = {name: torch.randn(shape, generator=generator) for name, shape in shapes.items()}
    weights["step"] = torch.tensor([7], dtype=torch.int64)  # any dtype travels as it is
    return {name: tensor.to(device) for name, tensor in weights.items()}


def test_every_member_receives_each_tensor_exactly_on_gloo():
    members = _members(3, [torch.device("cpu")] * 3, timeout=30)
    sent = _weights(torch.device("cpu"))
    for received in _broadcast_to_all(members, sent):
        assert list(received) == list(sent)
        for name, tensor in sent.items():
            assert torch.equal(received[name], tensor), name
    for member in members:
        member.close()


def test_a_member_waiting_for_a_broadcast_that_never_comes_fails_within_the_timeout():
    members = _members(2, [torch.device("cpu")] * 2, timeout=2)
    started = time.monotonic()
    with pytest.raises(RuntimeError):
        members[1].broadcast([torch.empty(4)])  # the learner never sends
    assert time.monotonic() - started < 2 + 3


def test_the_learner_closing_its_group_frees_a_member_blocked_in_it_at_once():
    """What the learner does when a broadcast failed: the workers still waiting for the rest of the version return
    now, free to join the next group, instead of at the group's timeout."""
    members = _members(2, [torch.device("cpu")] * 2, timeout=120)
    outcome: list[BaseException | None] = []

    def wait() -> None:
        try:
            members[1].broadcast([torch.empty(4)])
            outcome.append(None)
        except RuntimeError as error:
            outcome.append(error)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.5)
    started = time.monotonic()
    members[0].close()
    waiter.join(timeout=30)
    assert outcome and isinstance(outcome[0], RuntimeError)
    assert time.monotonic() - started < 10  # not the group's 120 s


def test_the_broadcast_uses_the_gpu_only_when_the_workers_have_one_too():
    assert broadcast_device(torch.device("cpu"), 1.0) == torch.device("cpu")
    assert broadcast_device(torch.device("cuda", 0), 0.0) == torch.device("cpu")  # CPU workers: gloo on the CPU
    assert broadcast_device(torch.device("cuda", 0), 0.5) == torch.device("cuda", 0)


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL between two members needs two CUDA GPUs")
def test_every_member_receives_each_tensor_exactly_on_nccl():
    devices = [torch.device("cuda", 0), torch.device("cuda", 1)]
    members = _members(2, devices, timeout=60)
    sent = _weights(devices[0])
    (received,) = _broadcast_to_all(members, sent)
    for name, tensor in sent.items():
        assert received[name].device == devices[1] and torch.equal(received[name].cpu(), tensor.cpu()), name
