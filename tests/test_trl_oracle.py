"""Our GRPO pieces against TRL's own code on identical tensors (TRL as an oracle)."""

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from rlvr.algos import ADVANTAGES, POLICY_LOSSES, LossInputs, LossSettings, aggregate, loss_normalizer

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


def _trl_loss(logprobs, old, advantages, mask, loss_type, beta=0.0, ref=None, eps_low=0.2, eps_high=0.28, max_len=6):
    """Run TRL's GRPOTrainer._compute_loss with the model forward replaced by fixed log-probs."""
    stub = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (logprobs, torch.zeros_like(logprobs), None),
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        importance_sampling_level="token",
        beta=beta,
        loss_type=loss_type,
        epsilon_low=eps_low,
        epsilon_high=eps_high,
        use_vllm=False,
        args=SimpleNamespace(delta=None, use_bias_correction_kl=False),
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


@pytest.mark.parametrize("loss_type, aggregation", [("bnpo", "token"), ("grpo", "sequence"), ("dr_grpo", "constant")])
@pytest.mark.parametrize("beta", [0.0, 0.05])
def test_loss_and_gradient_match_trl(loss_type, aggregation, beta):
    torch.manual_seed(0)
    n, length = 6, 5
    old = -torch.rand(n, length) * 3
    logprobs = (old + torch.randn(n, length) * 0.3).requires_grad_(True)
    ref = old + torch.randn(n, length) * 0.1
    mask = (torch.rand(n, length) > 0.25).float()
    mask[:, 0] = 1
    advantages = ADVANTAGES["grpo"](torch.rand(2, 3).round()).flatten()

    expected = _trl_loss(logprobs, old, advantages, mask, loss_type, beta, ref if beta else None)
    (expected_grad,) = torch.autograd.grad(expected, logprobs)

    settings = LossSettings(clip_low=0.2, clip_high=0.28, kl_coef=beta)
    per_token, _ = POLICY_LOSSES["ppo_clip"](LossInputs(logprobs, old, advantages, mask, ref if beta else None), settings)
    ours = aggregate(per_token, mask, aggregation, loss_normalizer(float(mask.sum()), n, aggregation, max_tokens=6))
    (our_grad,) = torch.autograd.grad(ours, logprobs)

    torch.testing.assert_close(ours, expected)
    torch.testing.assert_close(our_grad, expected_grad)


def test_grpo_advantage_matches_trl_group_scaling():
    rewards = torch.tensor([[1.0, 0.0, 0.1, 1.1], [0.0, 0.0, 0.0, 1.0], [0.3, 0.3, 0.3, 0.3]])
    mean = rewards.mean(dim=1, keepdim=True)
    std = trl_utils.nanstd(rewards, dim=1).unsqueeze(1)
    torch.testing.assert_close(ADVANTAGES["grpo"](rewards), (rewards - mean) / (std + 1e-4))
