"""Sampler/learner mismatch: truncated importance sampling (TIS) and the statistics that show the gap.

A fast sampler (vLLM in bf16, other kernels) and the learner (fp32 torch) assign slightly different
probabilities to the same tokens, so "on-policy" samples are really drawn from a nearby policy. TIS
(Yao et al., 2025, "Your efficient RL framework secretly brings you off-policy RL training") weights each
token's loss by the ratio learner / sampler, capped at `cap` so that a rare token the sampler liked far
less than the learner cannot blow up the gradient:

    w = min(exp(logp_learner_old - logp_sampler), cap)

The PPO ratio is then taken against the learner's own log-probs before the update, not the sampler's.
"""

from __future__ import annotations

import torch


def tis_weights(learner_old: torch.Tensor, sampler: torch.Tensor, cap: float) -> torch.Tensor:
    """Per-token importance weights (no gradient)."""
    return torch.exp(learner_old - sampler).clamp(max=cap).detach()


def mismatch_stats(learner_old: torch.Tensor, sampler: torch.Tensor, mask: torch.Tensor, cap: float | None) -> dict[str, float]:
    """Sums over the masked tokens (the trainer divides by the token count) and the largest ratio."""
    delta = (learner_old - sampler) * mask
    ratio = torch.exp(learner_old - sampler).masked_fill(mask == 0, 0.0)
    stats = {"logprob_mismatch": float(delta.abs().sum()), "mismatch_max_ratio": float(ratio.max()) if mask.any() else 1.0}
    if cap is not None:
        stats["tis_clip_frac"] = float(((ratio > cap) * mask).sum())
    return stats
