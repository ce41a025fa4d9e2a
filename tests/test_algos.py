"""Every estimator and loss on cases small enough to check by hand."""

import math

import pytest
import torch

from rlvr.algos import (
    ADVANTAGES,
    POLICY_LOSSES,
    LossInputs,
    LossSettings,
    aggregate,
    drop_uniform_groups,
    loss_normalizer,
    mask_truncated,
)
from rlvr.algos.losses import k3_kl
from rlvr.types import Episode

REWARDS = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5]])


def test_grpo_advantage_by_hand():
    # group 1: mean 0.5, unbiased std sqrt(4 * 0.25 / 3) = sqrt(1/3)
    expected = 0.5 / (math.sqrt(1 / 3) + 1e-4)
    adv = ADVANTAGES["grpo"](REWARDS)
    torch.testing.assert_close(adv[0], torch.tensor([expected, -expected, -expected, expected]))
    torch.testing.assert_close(adv[1], torch.zeros(4))  # equal rewards carry no signal


def test_dr_grpo_advantage_has_no_std_scaling():
    adv = ADVANTAGES["dr_grpo"](torch.tensor([[3.0, 1.0, 2.0]]))
    torch.testing.assert_close(adv, torch.tensor([[1.0, -1.0, 0.0]]))


def test_rloo_is_reward_minus_mean_of_the_others():
    adv = ADVANTAGES["rloo"](REWARDS)
    torch.testing.assert_close(adv[0], torch.tensor([2 / 3, -2 / 3, -2 / 3, 2 / 3]))
    rewards = torch.tensor([[4.0, 1.0, 1.0]])
    torch.testing.assert_close(ADVANTAGES["rloo"](rewards), torch.tensor([[3.0, -1.5, -1.5]]))


def _inputs(log_ratio, advantages, mask=None, ref=None):
    log_ratio = torch.tensor(log_ratio)
    old = torch.zeros_like(log_ratio)
    return LossInputs(
        logprobs=old + log_ratio,
        old_logprobs=old,
        advantages=torch.tensor(advantages),
        mask=torch.ones_like(log_ratio) if mask is None else torch.tensor(mask),
        ref_logprobs=ref,
    )


def test_ppo_clip_by_hand():
    settings = LossSettings(clip_low=0.2, clip_high=0.28)
    lr = [[math.log(1.5), math.log(0.5)], [math.log(0.5), math.log(1.5)]]
    loss, stats = POLICY_LOSSES["ppo_clip"](_inputs(lr, [1.0, -1.0]), settings)
    # A>0: ratio 1.5 clipped at 1.28; ratio 0.5 is kept (pessimistic min).
    # A<0: ratio 0.5 clipped at 0.8 -> loss 0.8; ratio 1.5 kept -> loss 1.5.
    torch.testing.assert_close(loss, torch.tensor([[-1.28, -0.5], [0.8, 1.5]]))
    torch.testing.assert_close(stats["clip_frac"], torch.tensor([[1.0, 0.0], [1.0, 0.0]]))


def test_ppo_clip_gradient_vanishes_when_clipped():
    x = _inputs([[math.log(1.5), 0.0]], [1.0])
    logprobs = x.logprobs.clone().requires_grad_(True)
    loss, _ = POLICY_LOSSES["ppo_clip"](LossInputs(logprobs, x.old_logprobs, x.advantages, x.mask), LossSettings())
    loss.sum().backward()
    # d/dlogp of -ratio*A at ratio 1 is -1; the clipped token has no gradient.
    torch.testing.assert_close(logprobs.grad, torch.tensor([[0.0, -1.0]]))


def test_k3_kl_by_hand():
    value = k3_kl(torch.tensor(math.log(0.5)), torch.tensor(math.log(0.25)))
    assert value.item() == pytest.approx(0.5 + math.log(2) - 1, abs=1e-6)
    assert k3_kl(torch.tensor(-1.0), torch.tensor(-1.0)).item() == 0.0


def test_kl_term_is_added_with_its_coefficient():
    ref = torch.full((1, 2), math.log(0.25))
    x = _inputs([[math.log(0.5), math.log(0.5)]], [0.0], ref=ref)
    x = LossInputs(torch.full((1, 2), math.log(0.5)), x.logprobs, x.advantages, x.mask, ref)
    loss, stats = POLICY_LOSSES["ppo_clip"](x, LossSettings(kl_coef=0.1))
    torch.testing.assert_close(loss, torch.full((1, 2), 0.1 * (0.5 + math.log(2) - 1)))
    assert "kl" in stats
    with pytest.raises(ValueError, match="reference"):
        POLICY_LOSSES["ppo_clip"](_inputs([[0.0]], [1.0]), LossSettings(kl_coef=0.1))


PER_TOKEN = torch.tensor([[1.0, 2.0, 7.0], [3.0, 9.0, 9.0]])
MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


@pytest.mark.parametrize("aggregation, expected", [("token", 2.0), ("sequence", 2.25), ("constant", 0.75)])
def test_aggregation_by_hand(aggregation, expected):
    norm = loss_normalizer(float(MASK.sum()), 2, aggregation, max_tokens=4)
    assert aggregate(PER_TOKEN, MASK, aggregation, norm).item() == pytest.approx(expected)


@pytest.mark.parametrize("aggregation", ["token", "sequence", "constant"])
def test_micro_batches_sum_to_the_full_batch(aggregation):
    norm = loss_normalizer(float(MASK.sum()), 2, aggregation, max_tokens=4)
    whole = aggregate(PER_TOKEN, MASK, aggregation, norm)
    parts = aggregate(PER_TOKEN[:1], MASK[:1], aggregation, norm) + aggregate(PER_TOKEN[1:], MASK[1:], aggregation, norm)
    torch.testing.assert_close(whole, parts)


def _episode(reward, truncated=False):
    return Episode(
        prompt_ids=[1], completion_ids=[2, 3], logprobs=[0.0, 0.0], loss_mask=[1, 1], truncated=truncated, reward=reward
    )


def test_dynamic_sampling_drops_groups_with_equal_rewards():
    mixed = [_episode(1.0), _episode(0.0)]
    kept = drop_uniform_groups([mixed, [_episode(1.0), _episode(1.0)], [_episode(0.0), _episode(0.0)]])
    assert kept == [mixed]


def test_overlong_filter_masks_only_truncated():
    episodes = [_episode(0.0, truncated=True), _episode(1.0)]
    assert mask_truncated(episodes) == 1
    assert episodes[0].loss_mask == [0, 0] and episodes[1].loss_mask == [1, 1]


def test_tis_weights_are_capped_ratios_by_hand():
    from rlvr.algos import mismatch_stats, tis_weights

    learner = torch.tensor([[0.0, math.log(3.0), math.log(0.5), 5.0]])
    sampler = torch.zeros(1, 4)
    torch.testing.assert_close(tis_weights(learner, sampler, cap=2.0), torch.tensor([[1.0, 2.0, 0.5, 2.0]]))
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])  # the last token is padding: ignored everywhere
    stats = mismatch_stats(learner, sampler, mask, cap=2.0)
    assert math.isclose(stats["logprob_mismatch"], math.log(3.0) + math.log(2.0), rel_tol=1e-6)
    assert math.isclose(stats["mismatch_max_ratio"], 3.0, rel_tol=1e-6)
    assert stats["tis_clip_frac"] == 1.0  # one masked token above the cap (a sum; the trainer divides by tokens)
    assert "tis_clip_frac" not in mismatch_stats(learner, sampler, mask, cap=None)


def test_tis_scales_each_token_gradient_by_its_weight():
    """With TIS the PPO ratio starts at 1 (learner vs its own old log-probs) and each token's policy gradient is
    multiplied by min(learner/sampler, cap): d loss / d logp = -A * w."""
    from rlvr.algos import tis_weights

    logprobs = torch.tensor([[-1.0, -2.0, -0.5]], requires_grad=True)
    sampler = torch.tensor([[-1.0, -2.0 - math.log(4.0), -0.5 + math.log(2.0)]])
    weights = tis_weights(logprobs.detach(), sampler, cap=2.0)
    inputs = LossInputs(logprobs, logprobs.detach(), torch.tensor([1.0]), torch.ones(1, 3))
    per_token, _ = POLICY_LOSSES["ppo_clip"](inputs, LossSettings())
    (per_token * weights).sum().backward()
    torch.testing.assert_close(logprobs.grad, torch.tensor([[-1.0, -2.0, -0.5]]))
