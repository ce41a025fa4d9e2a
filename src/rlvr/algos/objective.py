"""The objective one update step minimises, from `algo:` in a recipe: correction, loss, KL term, reduction.

    correction = CORRECTIONS[algo.correction](proximal, behaviour)   anchor and per-token weights
    per_token  = POLICY_LOSSES[algo.loss](inputs with the correction)   the loss applies them itself
               + kl.coef * KL_ESTIMATORS[kl.estimator](logp, ref)     unless the KL is folded into the reward
    loss       = aggregate(per_token, mask, algo.aggregation)           token, sequence or constant (Dr. GRPO)

The trainer only feeds it log-probs and advantages, micro-batch by micro-batch.
"""

from __future__ import annotations

import torch

from rlvr.algos.corrections import CORRECTIONS, mismatch_stats
from rlvr.algos.kl import KL_ESTIMATORS
from rlvr.algos.losses import POLICY_LOSSES, LossInputs, LossOutputs, aggregate
from rlvr.algos.stats import Stat
from rlvr.config import AlgoConfig


class Objective:
    def __init__(self, algo: AlgoConfig) -> None:
        self.algo = algo
        self.loss = POLICY_LOSSES[algo.loss.name]
        self.correction = CORRECTIONS[algo.correction.name]
        self.kl = KL_ESTIMATORS[algo.kl.estimator] if algo.kl.coef > 0 and not algo.kl.in_reward else None

    @property
    def needs_reference(self) -> bool:
        return self.algo.kl.coef > 0

    def __call__(
        self,
        logprobs: torch.Tensor,
        behaviour: torch.Tensor,
        proximal: torch.Tensor,
        advantages: torch.Tensor,
        mask: torch.Tensor,
        ref: torch.Tensor | None = None,
        version_gap: torch.Tensor | None = None,
    ) -> LossOutputs:
        """The per-token loss and its statistics, with those of the correction and of the sampler's gap."""
        correction = self.correction(proximal, behaviour, mask, self.algo.correction)
        inputs = LossInputs(logprobs, behaviour, proximal, advantages, mask, correction, ref, version_gap)
        out = self.loss(inputs, self.algo.loss)
        per_token, stats = out.per_token, {**out.stats, **correction.stats, **mismatch_stats(proximal, behaviour)}
        if self.kl is not None:
            if ref is None:
                raise ValueError("a KL term needs the reference model's log-probs")
            kl = self.kl(logprobs, ref)
            per_token = per_token + self.algo.kl.coef * kl
            stats["kl"] = Stat(kl.detach())
        return LossOutputs(per_token, stats)

    def reduce(self, per_token: torch.Tensor, mask: torch.Tensor, normalizer: float) -> torch.Tensor:
        return aggregate(per_token, mask, self.algo.aggregation, normalizer)
