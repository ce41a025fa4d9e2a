"""Corrections for a sampler that is not the learner (`algo.correction`).

A fast sampler (vLLM in bf16, other kernels) and the learner (fp32 torch) assign slightly different
probabilities to the same tokens, and a stale rollout comes from an older policy still; so "on-policy" samples
are really drawn from a nearby behaviour policy. A correction turns the gap between the learner's own log-probs
before the update (the proximal policy) and the sampler's (the behaviour policy) into

- the anchor the loss takes its ratio against: the proximal policy when the correction accounts for the
  sampler (the decoupled objective: behaviour for the importance weight, proximal for the clip), the
  sampler's otherwise;
- per-token weights the loss multiplies by (no gradient): the importance weight, 0 where it drops a token or a
  whole sequence, 1 where it leaves the loss alone;
- what it did, for the step's metrics.

    tis       w = min(r, cap)                       (Yao et al. 2025, truncated importance sampling)
    icepop    w = r if low <= r <= high, else 0     (token masking, Ring-1T's IcePop)
    seq_mask  w = 1, or 0 for a whole sequence whose geometric-mean r leaves [low, high]
    none      w = 1, anchored at the sampler's log-probs

with r = exp(logp_proximal - logp_behaviour) per token.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from rlvr.algo_config import IcePopCorrection, NoCorrection, SeqMaskCorrection, TISCorrection
from rlvr.algos.stats import Stat
from rlvr.registry import Registry


@dataclass(frozen=True)
class Correction:
    anchor: torch.Tensor  # the log-probs a loss takes its ratio against
    weights: torch.Tensor  # per-token multipliers of the loss, no gradient
    stats: dict[str, Stat]


# name -> correction(proximal, behaviour, mask, its settings from `algo.correction`)
CorrectionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Any], Correction]
CORRECTIONS: Registry[CorrectionFn] = Registry("correction")


def _ratio(proximal: torch.Tensor, behaviour: torch.Tensor) -> torch.Tensor:
    return torch.exp(proximal - behaviour).detach()


def _per_sequence(hit: torch.Tensor, mask: torch.Tensor) -> Stat:
    """The share of sequences with at least one of their own tokens hit."""
    return Stat((hit.float() * mask).amax(dim=-1), "sequence_mean")


@CORRECTIONS.register("tis")
def tis(proximal: torch.Tensor, behaviour: torch.Tensor, mask: torch.Tensor, s: TISCorrection) -> Correction:
    ratio = _ratio(proximal, behaviour)
    capped = ratio > s.cap
    stats = {"correction/capped_tokens": Stat(capped.float()), "correction/capped_sequences": _per_sequence(capped, mask)}
    return Correction(proximal, ratio.clamp(max=s.cap), stats)


@CORRECTIONS.register("icepop")
def icepop(proximal: torch.Tensor, behaviour: torch.Tensor, mask: torch.Tensor, s: IcePopCorrection) -> Correction:
    ratio = _ratio(proximal, behaviour)
    inside = (ratio >= s.low) & (ratio <= s.high)
    stats = {
        "correction/masked_tokens": Stat((~inside).float()),
        "correction/sequences_with_masked": _per_sequence(~inside, mask),
    }
    return Correction(proximal, torch.where(inside, ratio, 0.0), stats)  # where, not *: an infinite ratio is dropped


@CORRECTIONS.register("seq_mask")
def seq_mask(proximal: torch.Tensor, behaviour: torch.Tensor, mask: torch.Tensor, s: SeqMaskCorrection) -> Correction:
    log_ratio = ((proximal - behaviour) * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    geometric = torch.exp(log_ratio).detach()
    kept = ((geometric >= s.low) & (geometric <= s.high)).to(proximal.dtype)
    weights = kept.unsqueeze(-1).expand_as(proximal)
    stats = {"correction/masked_sequences": Stat(1 - kept, "sequence_mean"), "correction/masked_tokens": Stat(1 - weights)}
    return Correction(proximal, weights, stats)


@CORRECTIONS.register("none")
def none(proximal: torch.Tensor, behaviour: torch.Tensor, mask: torch.Tensor, s: NoCorrection) -> Correction:
    return Correction(behaviour, torch.ones_like(behaviour), {})


def mismatch_stats(proximal: torch.Tensor, behaviour: torch.Tensor) -> dict[str, Stat]:
    """How far the sampler is from the learner, whatever the correction: the mean |log-ratio| and the ratio's range."""
    log_ratio = (proximal - behaviour).detach()
    ratio = torch.exp(log_ratio)
    return {
        "logprob_mismatch": Stat(log_ratio.abs()),
        "mismatch_max_ratio": Stat(ratio, "max"),
        "mismatch_min_ratio": Stat(ratio, "min"),
    }
