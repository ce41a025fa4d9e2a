"""Our GRPO pieces against TRL's own code on identical tensors (TRL as an oracle)."""

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from rlvr.algo_config import CISPOLoss, GSPOLoss, KLConfig, NoCorrection, PPOClipLoss
from rlvr.algos import ADVANTAGES, Objective, loss_normalizer
from rlvr.config import AlgoConfig

trl_grpo = pytest.importorskip("trl.trainer.grpo_trainer")
trl_utils = pytest.importorskip("trl.trainer.utils")


class _Accelerator:
    num_processes = 1
    sync_gradients = True

    def gather(self, x):
        return x

    gather_for_metrics = gather

    def reduce(self, x, reduction="sum"):
        return x


def _trl_loss(
    logprobs, old, advantages, mask, loss_type, beta=0.0, ref=None, eps_low=0.2, eps_high=0.28, max_len=6, level="token"
):
    """Run TRL's GRPOTrainer._compute_loss with the model forward replaced by fixed log-probs."""
    stub = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (logprobs, torch.zeros_like(logprobs), None),
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        importance_sampling_level=level,
        beta=beta,
        loss_type=loss_type,
        epsilon_low=eps_low,
        epsilon_high=eps_high,
        use_vllm=False,
        args=SimpleNamespace(delta=None, use_bias_correction_kl=False, steps_per_generation=1),
        model=SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1,
        _metrics={"train": defaultdict(list)},
        accelerator=_Accelerator(),
        _entropy_bonus_enabled=False,
        aux_loss_enabled=False,
        max_completion_length=max_len,
    )
    n, length = logprobs.shape
    inputs = {
        "prompt_ids": torch.zeros((n, 2), dtype=torch.long),
        "prompt_mask": torch.ones((n, 2), dtype=torch.long),
        "completion_ids": torch.zeros((n, length), dtype=torch.long),
        "completion_mask": mask.long(),
        "advantages": advantages,
        "old_per_token_logps": old,
        "num_items_in_batch": mask.sum(),
    }
    if ref is not None:
        inputs["ref_per_token_logps"] = ref
    return trl_grpo.GRPOTrainer._compute_loss(stub, None, inputs)


# (our loss, TRL's loss_type, TRL's importance-sampling level, our aggregation, the spread of the new log-probs)
CASES = [
    (PPOClipLoss(), "bnpo", "token", "token", 0.3),
    (PPOClipLoss(), "dapo", "token", "token", 0.3),
    (PPOClipLoss(), "grpo", "token", "sequence", 0.3),
    (PPOClipLoss(), "dr_grpo", "token", "constant", 0.3),
    # GSPO is TRL's clipped loss on sequence-level ratios; its clip range is narrow, so the ratios stay near it.
    (GSPOLoss(), "bnpo", "sequence", "token", 3e-4),
    (GSPOLoss(), "grpo", "sequence", "sequence", 3e-4),
    (GSPOLoss(clip_low=0.2, clip_high=0.28), "dr_grpo", "sequence", "constant", 0.3),
    (CISPOLoss(max_weight=1.2), "cispo", "token", "token", 0.3),
]


@pytest.mark.parametrize("loss, loss_type, level, aggregation, spread", CASES)
@pytest.mark.parametrize("beta", [0.0, 0.05])
def test_loss_and_gradient_match_trl(loss, loss_type, level, aggregation, spread, beta):
    torch.manual_seed(0)
    n, length = 6, 5
    old = -torch.rand(n, length) * 3
    logprobs = (old + torch.randn(n, length) * spread).requires_grad_(True)
    ref = old + torch.randn(n, length) * 0.1
    mask = (torch.rand(n, length) > 0.25).float()
    mask[:, 0] = 1
    advantages = ADVANTAGES["grpo"](torch.rand(2, 3).round()).flatten()
    low, high = (0.0, loss.max_weight) if isinstance(loss, CISPOLoss) else (loss.clip_low, loss.clip_high)

    expected = _trl_loss(logprobs, old, advantages, mask, loss_type, beta, ref if beta else None, low, high, level=level)
    (expected_grad,) = torch.autograd.grad(expected, logprobs)

    # TRL takes its ratio against the old log-probs it is given: the sampler's, with no correction.
    algo = AlgoConfig(loss=loss, correction=NoCorrection(), kl=KLConfig(coef=beta), aggregation=aggregation)
    objective = Objective(algo)
    out = objective(logprobs, old, old, advantages, mask, ref if beta else None)
    ours = objective.reduce(out.per_token, mask, loss_normalizer(float(mask.sum()), n, aggregation, max_tokens=6))
    (our_grad,) = torch.autograd.grad(ours, logprobs)

    torch.testing.assert_close(ours, expected)
    torch.testing.assert_close(our_grad, expected_grad)
    assert float(expected_grad.abs().sum()) > 0  # a case where everything is clipped would prove little


def test_grpo_advantage_matches_trl_group_scaling():
    rewards = torch.tensor([[1.0, 0.0, 0.1, 1.1], [0.0, 0.0, 0.0, 1.0], [0.3, 0.3, 0.3, 0.3]])
    mean = rewards.mean(dim=1, keepdim=True)
    std = trl_utils.nanstd(rewards, dim=1).unsqueeze(1)
    torch.testing.assert_close(ADVANTAGES["grpo"](rewards), (rewards - mean) / (std + 1e-4))
