"""Policy losses: per-token loss from new/old log-probs and advantages, plus how to average it.

All tensors are [sequences, tokens]; `mask` is 1 on tokens the model produced
(and that carry gradient). A loss returns a per-token loss and statistics; the
trainer reduces it with `aggregate`, which knows the normaliser of the whole
batch so that gradient accumulation over micro-batches gives the same gradient
as one big batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from rlvr.registry import Registry

Aggregation = Literal["token", "sequence", "constant"]


@dataclass(frozen=True)
class LossInputs:
    logprobs: torch.Tensor  # current policy, with grad
    old_logprobs: torch.Tensor  # policy that sampled (no grad)
    advantages: torch.Tensor  # [sequences], broadcast over tokens
    mask: torch.Tensor
    ref_logprobs: torch.Tensor | None = None


@dataclass(frozen=True)
class LossSettings:
    clip_low: float = 0.2
    clip_high: float = 0.28
    kl_coef: float = 0.0


LossFn = Callable[[LossInputs, LossSettings], tuple[torch.Tensor, dict[str, torch.Tensor]]]
POLICY_LOSSES: Registry[LossFn] = Registry("policy loss")
register_policy_loss = POLICY_LOSSES.register


def k3_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimator of KL(policy || ref): exp(d) - d - 1 with d = ref - policy; >= 0, unbiased."""
    delta = ref_logprobs - logprobs
    return torch.exp(delta) - delta - 1


@register_policy_loss("ppo_clip")
def ppo_clip(x: LossInputs, s: LossSettings) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate with separate low/high clip ranges (DAPO's clip-higher)."""
    ratio = torch.exp(x.logprobs - x.old_logprobs)
    advantages = x.advantages.unsqueeze(-1)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1 - s.clip_low, 1 + s.clip_high) * advantages
    loss = -torch.min(unclipped, clipped)
    stats = {"clip_frac": (clipped < unclipped).float(), "ratio": ratio.detach()}
    if s.kl_coef > 0:
        if x.ref_logprobs is None:
            raise ValueError("kl_coef > 0 needs reference log-probs")
        kl = k3_kl(x.logprobs, x.ref_logprobs)
        loss = loss + s.kl_coef * kl
        stats["kl"] = kl.detach()
    return loss, stats


def loss_normalizer(num_tokens: float, num_sequences: int, aggregation: Aggregation, max_tokens: int) -> float:
    """The denominator for the whole batch (all micro-batches together)."""
    if aggregation == "token":  # every token weighs the same (DAPO)
        return max(num_tokens, 1.0)
    if aggregation == "sequence":  # every sequence weighs the same (original GRPO)
        return float(max(num_sequences, 1))
    if aggregation == "constant":  # Dr. GRPO: no length normalisation at all
        return float(max(num_sequences, 1) * max_tokens)
    raise ValueError(f"unknown aggregation {aggregation!r}")


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, aggregation: Aggregation, normalizer: float) -> torch.Tensor:
    """This micro-batch's share of the batch loss."""
    mask = mask.to(per_token.dtype)
    if aggregation == "sequence":
        per_sequence = (per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)
        return per_sequence.sum() / normalizer
    return (per_token * mask).sum() / normalizer
