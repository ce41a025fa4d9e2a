"""The optimisers `train.optimizer` names, against torch's AdamW and by hand."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest
import torch

from rlvr.config import TrainConfig, load_config
from rlvr.errors import ConfigError
from rlvr.memory import release_freed_memory
from rlvr.optimizers import OPTIMIZERS, AdamWBF16, make_optimizer, step_freeing_gradients, stochastic_round_


def test_stochastic_rounding_picks_a_neighbour_and_is_unbiased():
    torch.manual_seed(0)
    low = torch.tensor(1.0, dtype=torch.bfloat16)
    high = torch.nextafter(low, torch.tensor(2.0, dtype=torch.bfloat16))  # 1 + 2^-7
    value = torch.full((20000,), 1.0 + 0.25 * float(high - low))  # a quarter of the way from low to high
    target = torch.empty(20000, dtype=torch.bfloat16)
    stochastic_round_(target, value)
    assert set(target.float().unique().tolist()) == {float(low), float(high)}
    assert (target == high).float().mean().item() == pytest.approx(0.25, abs=0.01)
    assert target.float().mean().item() == pytest.approx(value[0].item(), abs=1e-4)  # 4 sigma of 20,000 draws
    exact = torch.tensor([0.5, -3.0, 1024.0])  # representable in bf16: never moved
    stochastic_round_(out := torch.empty(3, dtype=torch.bfloat16), exact)
    assert out.float().tolist() == exact.tolist()


def _pair(seed: int = 0) -> tuple[torch.nn.Parameter, torch.nn.Parameter]:
    torch.manual_seed(seed)
    weights = torch.randn(64, 32)
    return torch.nn.Parameter(weights.clone()), torch.nn.Parameter(weights.clone())


def _steps_on_the_same_gradients(ours, theirs, optimizers, steps: int) -> Iterator[int]:
    """Give both weights the same seeded gradient and step every optimiser, `steps` times; yields each step's index."""
    generator = torch.Generator().manual_seed(1)
    for step in range(steps):
        grad = torch.randn(ours.shape, generator=generator)
        ours.grad, theirs.grad = grad.clone(), grad.clone()
        for optimizer in optimizers:
            optimizer.step()
        yield step


def _gap_over_distance_moved(ours, theirs) -> float:
    """How far the two weights ended apart, as a share of how far the reference moved from the start."""
    moved = (theirs.data - _pair()[1].data).abs().mean()
    return float((ours.data - theirs.data).abs().mean() / moved)


def test_adamw_bf16_takes_adamws_first_step_and_follows_it():
    ours, theirs = _pair()
    ours_opt = AdamWBF16([ours], lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)
    theirs_opt = torch.optim.AdamW([theirs], lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)
    for step in _steps_on_the_same_gradients(ours, theirs, [ours_opt, theirs_opt], 30):
        if step == 0:  # the first update uses the unrounded moments: AdamW's own step
            torch.testing.assert_close(ours.data, theirs.data, rtol=0, atol=1e-6)
    assert ours_opt.state[ours]["exp_avg"].dtype == torch.bfloat16
    # 30 steps of lr 1e-2 move each weight ~0.3; bf16 moments (3 significant digits) keep the paths within ~1%.
    assert _gap_over_distance_moved(ours, theirs) < 0.01


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="bitsandbytes not installed")
def test_adamw_8bit_is_bitsandbytes_and_follows_adamw():
    ours, theirs = _pair()
    train = TrainConfig(lr=1e-2, optimizer="adamw_8bit")
    optimizer = make_optimizer([ours], train)
    reference = make_optimizer([theirs], train.model_copy(update={"optimizer": "adamw"}))
    assert type(optimizer).__module__.startswith("bitsandbytes")
    for _ in _steps_on_the_same_gradients(ours, theirs, [optimizer, reference], 10):
        pass
    assert _gap_over_distance_moved(ours, theirs) < 0.05


def test_optimizers_are_chosen_by_name():
    assert set(OPTIMIZERS) == {"adamw", "adamw_bf16", "adamw_8bit"}
    assert type(make_optimizer([torch.nn.Parameter(torch.ones(2))], TrainConfig())) is torch.optim.AdamW
    with pytest.raises(ConfigError, match=r"train.optimizer: unknown optimizer 'sgd' \(choices: adamw, adamw_8bit, adamw_bf16\)"):
        load_config(None, ["train.optimizer=sgd"])


@pytest.mark.parametrize(
    "name",
    [
        "adamw",
        pytest.param(
            "adamw_8bit", marks=pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="no bitsandbytes")
        ),
    ],
)
def test_stepping_one_weight_at_a_time_is_the_same_step(name):
    torch.manual_seed(0)
    shapes = [(300, 64), (7,), (64, 64), (5000,)]
    together = [torch.nn.Parameter(torch.randn(shape)) for shape in shapes]
    apart = [torch.nn.Parameter(p.detach().clone()) for p in together]
    train = TrainConfig(lr=1e-2, optimizer=name, weight_decay=0.1)
    joint, split = make_optimizer(together, train), make_optimizer(apart, train)
    for _ in range(3):
        for a, b in zip(together, apart):
            a.grad = torch.randn_like(a)
            b.grad = a.grad.clone()
        joint.step()
        step_freeing_gradients(split)
        assert all(p.grad is None for p in apart)  # freed as they were used
        for a, b in zip(together, apart):
            assert torch.equal(a.data, b.data)
    assert all(len(group["params"]) == len(shapes) for group in split.param_groups)  # the groups are given back


def test_freed_memory_goes_back_to_the_system_where_the_c_library_is_glibc():
    import platform

    released = release_freed_memory()
    assert isinstance(released, bool)
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert released
