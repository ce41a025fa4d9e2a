"""Advantage estimators: rewards of shape [groups, group_size] -> advantages of the same shape.

Each completion is compared with the other completions of its own prompt, so no
value network is needed. Add one by writing a function and registering it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from rlvr.registry import Registry

AdvantageFn = Callable[[torch.Tensor], torch.Tensor]
ADVANTAGES: Registry[AdvantageFn] = Registry("advantage estimator")
register_advantage = ADVANTAGES.register

EPS = 1e-4


@register_advantage("grpo")
def grpo(rewards: torch.Tensor) -> torch.Tensor:
    """(r - group mean) / (group std + eps), the DeepSeekMath estimator (unbiased std, as TRL)."""
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True) if rewards.shape[1] > 1 else torch.zeros_like(mean)
    return (rewards - mean) / (std + EPS)


@register_advantage("dr_grpo")
def dr_grpo(rewards: torch.Tensor) -> torch.Tensor:
    """Dr. GRPO: r - group mean. Dividing by the std up-weights near-uniform groups
    (too easy or too hard prompts); pair with `aggregation: constant` to also drop
    the length normalisation."""
    return rewards - rewards.mean(dim=1, keepdim=True)


@register_advantage("rloo")
def rloo(rewards: torch.Tensor) -> torch.Tensor:
    """REINFORCE leave-one-out: r_i - mean of the other G-1 rewards = G/(G-1) (r_i - mean)."""
    size = rewards.shape[1]
    if size < 2:
        return torch.zeros_like(rewards)
    return (rewards - rewards.mean(dim=1, keepdim=True)) * size / (size - 1)


def _batch_normalised(advantages: torch.Tensor) -> torch.Tensor:
    """Whitened over the whole batch: zero mean, unit (unbiased) std."""
    flat = advantages.flatten()
    std = flat.std() if flat.numel() > 1 else torch.zeros(())
    return (advantages - flat.mean()) / (std + EPS)


@register_advantage("reinforce_pp")
def reinforce_pp(rewards: torch.Tensor) -> torch.Tensor:
    """REINFORCE++ (Hu 2025): the reward normalised over the whole batch, no per-prompt baseline. Whitened over
    sequences (one reward each), where OpenRLHF whitens per-token returns."""
    return _batch_normalised(rewards)


@register_advantage("reinforce_pp_baseline")
def reinforce_pp_baseline(rewards: torch.Tensor) -> torch.Tensor:
    """REINFORCE++ with a baseline: the group mean subtracted, then normalised over the whole batch."""
    return _batch_normalised(rewards - rewards.mean(dim=1, keepdim=True))
