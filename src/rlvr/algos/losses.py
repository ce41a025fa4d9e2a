"""Policy losses: each one owns its objective, from everything a loss may use to a per-token loss and its stats.

All tensors are [sequences, tokens]; `mask` is 1 on tokens the model produced (and that carry gradient). A loss
takes its ratio against `correction.anchor` (the learner's own log-probs before the update when a correction
accounts for the sampler, the sampler's otherwise) and multiplies by `correction.weights` (1, or the correction's
importance weights and masks: 0 where a token or a sequence is dropped). The trainer reduces the per-token loss
with `aggregate`, which knows the normaliser of the whole batch, so that gradient accumulation over micro-batches
gives the same gradient as one big batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch

from rlvr.algo_config import CISPOLoss, GSPOLoss, PPOClipLoss, ReinforceLoss
from rlvr.algos.corrections import Correction
from rlvr.algos.stats import Stat
from rlvr.registry import Registry

Aggregation = Literal["token", "sequence", "constant"]


@dataclass(frozen=True)
class LossInputs:
    logprobs: torch.Tensor  # the policy being trained, with grad
    behaviour_logprobs: torch.Tensor  # the sampler's, that drew the tokens (no grad)
    proximal_logprobs: torch.Tensor  # the learner's own before this update (no grad)
    advantages: torch.Tensor  # [sequences], broadcast over tokens
    mask: torch.Tensor
    correction: Correction  # what the configured correction made of the sampler/learner gap
    ref_logprobs: torch.Tensor | None = None  # the reference model's, when there is one
    version_gap: torch.Tensor | None = None  # [sequences]: policy versions between sampler and learner (0 on-policy)


@dataclass(frozen=True)
class LossOutputs:
    per_token: torch.Tensor
    stats: dict[str, Stat]


# name -> loss(inputs, its settings from `algo.loss`)
LossFn = Callable[[LossInputs, Any], LossOutputs]
POLICY_LOSSES: Registry[LossFn] = Registry("policy loss")
register_policy_loss = POLICY_LOSSES.register


def _clipped_surrogate(
    ratio: torch.Tensor, advantages: torch.Tensor, low: float, high: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """-min(r A, clip(r, 1 - low, 1 + high) A) and where the clip is the smaller (the clipped fraction)."""
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1 - low, 1 + high) * advantages
    return -torch.min(unclipped, clipped), (clipped < unclipped).float()


@register_policy_loss("ppo_clip")
def ppo_clip(x: LossInputs, s: PPOClipLoss) -> LossOutputs:
    """PPO's clipped surrogate on token ratios, with separate low/high clip ranges (DAPO's clip-higher)."""
    ratio = torch.exp(x.logprobs - x.correction.anchor)
    loss, clipped = _clipped_surrogate(ratio, x.advantages.unsqueeze(-1), s.clip_low, s.clip_high)
    return LossOutputs(loss * x.correction.weights, {"clip_frac": Stat(clipped), "ratio": Stat(ratio.detach())})


@register_policy_loss("gspo")
def gspo(x: LossInputs, s: GSPOLoss) -> LossOutputs:
    """GSPO: the sequence's ratio is the geometric mean of its token ratios, clipped as one; each of its tokens
    carries the sequence's loss (as TRL's `importance_sampling_level="sequence"`)."""
    log_ratio = (x.logprobs - x.correction.anchor) * x.mask
    ratio = torch.exp(log_ratio.sum(-1) / x.mask.sum(-1).clamp(min=1)).unsqueeze(-1)  # [sequences, 1]
    loss, clipped = _clipped_surrogate(ratio, x.advantages.unsqueeze(-1), s.clip_low, s.clip_high)
    per_token = loss.expand_as(x.logprobs) * x.correction.weights
    return LossOutputs(
        per_token,
        {"clip_frac": Stat(clipped.squeeze(-1), "sequence_mean"), "ratio": Stat(ratio.squeeze(-1).detach(), "sequence_mean")},
    )


@register_policy_loss("cispo")
def cispo(x: LossInputs, s: CISPOLoss) -> LossOutputs:
    """CISPO: -sg(clip(r)) A log p. The clipped weight has no gradient, so every token keeps its gradient."""
    ratio = torch.exp(x.logprobs - x.correction.anchor)
    weight = torch.clamp(ratio, min=s.min_weight, max=s.max_weight).detach()
    loss = -weight * x.advantages.unsqueeze(-1) * x.logprobs
    clipped = ((ratio > s.max_weight) | (ratio < s.min_weight)).float()
    return LossOutputs(loss * x.correction.weights, {"clip_frac": Stat(clipped), "ratio": Stat(ratio.detach())})


@register_policy_loss("reinforce")
def reinforce(x: LossInputs, s: ReinforceLoss) -> LossOutputs:
    """Plain policy gradient, importance-weighted: -r A, whose gradient is r A grad log p (A grad log p on-policy)."""
    ratio = torch.exp(x.logprobs - x.correction.anchor)
    loss = -ratio * x.advantages.unsqueeze(-1)
    return LossOutputs(loss * x.correction.weights, {"ratio": Stat(ratio.detach())})


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
