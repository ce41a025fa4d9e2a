"""KL estimators towards a reference policy (Schulman, "Approximating KL divergence"), per token.

With d = logp_ref - logp: k1 = -d (unbiased, can be negative), k2 = d^2 / 2 (low variance, biased), k3 =
exp(d) - d - 1 (unbiased and >= 0). As a loss term each is differentiated through the policy's log-probs; folded
into the reward (`in_reward`), the sampler's log-probs stand for the policy and the sequence's sum is subtracted.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from rlvr.registry import Registry

KLFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
KL_ESTIMATORS: Registry[KLFn] = Registry("KL estimator")


@KL_ESTIMATORS.register("k1")
def k1(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    return logprobs - ref_logprobs


@KL_ESTIMATORS.register("k2")
def k2(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    return 0.5 * (ref_logprobs - logprobs) ** 2


@KL_ESTIMATORS.register("k3")
def k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    delta = ref_logprobs - logprobs
    return torch.exp(delta) - delta - 1
