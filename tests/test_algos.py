"""Every estimator, loss and correction on cases small enough to check by hand."""

import dataclasses
import math

import pytest
import torch

from rlvr.algo_config import (
    CISPOLoss,
    GSPOLoss,
    IcePopCorrection,
    KLConfig,
    NoCorrection,
    PPOClipLoss,
    ReinforceLoss,
    SeqMaskCorrection,
    TISCorrection,
)
from rlvr.algos import (
    ADVANTAGES,
    CORRECTIONS,
    KL_ESTIMATORS,
    POLICY_LOSSES,
    Correction,
    LossInputs,
    Objective,
    StatSums,
    aggregate,
    drop_uniform_groups,
    loss_normalizer,
    mask_truncated,
    mismatch_stats,
)
from rlvr.config import AlgoConfig
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


def _inputs(log_ratio, advantages, mask=None, weights=None, ref=None):
    """A loss's inputs with the sampler as the anchor (no correction), or the given per-token weights."""
    log_ratio = torch.tensor(log_ratio)
    old = torch.zeros_like(log_ratio)
    weights = torch.ones_like(log_ratio) if weights is None else torch.tensor(weights)
    return LossInputs(
        logprobs=old + log_ratio,
        behaviour_logprobs=old,
        proximal_logprobs=old,
        advantages=torch.tensor(advantages),
        mask=torch.ones_like(log_ratio) if mask is None else torch.tensor(mask),
        correction=Correction(old, weights, {}),
        ref_logprobs=ref,
    )


def _with_grad(x: LossInputs) -> LossInputs:
    return dataclasses.replace(x, logprobs=x.logprobs.clone().requires_grad_(True))


def test_ppo_clip_by_hand():
    lr = [[math.log(1.5), math.log(0.5)], [math.log(0.5), math.log(1.5)]]
    out = POLICY_LOSSES["ppo_clip"](_inputs(lr, [1.0, -1.0]), PPOClipLoss(clip_low=0.2, clip_high=0.28))
    # A>0: ratio 1.5 clipped at 1.28; ratio 0.5 is kept (pessimistic min).
    # A<0: ratio 0.5 clipped at 0.8 -> loss 0.8; ratio 1.5 kept -> loss 1.5.
    torch.testing.assert_close(out.per_token, torch.tensor([[-1.28, -0.5], [0.8, 1.5]]))
    torch.testing.assert_close(out.stats["clip_frac"].value, torch.tensor([[1.0, 0.0], [1.0, 0.0]]))


def test_ppo_clip_gradient_vanishes_when_clipped():
    x = _with_grad(_inputs([[math.log(1.5), 0.0]], [1.0]))
    POLICY_LOSSES["ppo_clip"](x, PPOClipLoss()).per_token.sum().backward()
    # d/dlogp of -ratio*A at ratio 1 is -1; the clipped token has no gradient.
    torch.testing.assert_close(x.logprobs.grad, torch.tensor([[0.0, -1.0]]))


def test_gspo_clips_the_geometric_mean_of_a_sequence_by_hand():
    # Sequence 1: token log-ratios log 2 and 0 over 2 tokens -> s = sqrt(2) = 1.414, clipped at 1.0004 for A > 0.
    # Sequence 2: one token (the other is masked) with log-ratio log 0.9999 -> s = 0.9999, inside [0.9997, 1.0004].
    x = _with_grad(_inputs([[math.log(2.0), 0.0], [math.log(0.9999), 5.0]], [1.0, 2.0], mask=[[1.0, 1.0], [1.0, 0.0]]))
    out = POLICY_LOSSES["gspo"](x, GSPOLoss())
    torch.testing.assert_close(out.per_token, torch.tensor([[-1.0004, -1.0004], [-1.9998, -1.9998]]))
    torch.testing.assert_close(out.stats["clip_frac"].value, torch.tensor([1.0, 0.0]))
    (out.per_token * x.mask).sum().backward()
    # Clipped: no gradient. Unclipped: d(-s A)/dlogp_t = -A s / n_tokens on its own unmasked token, 0 on the masked one.
    torch.testing.assert_close(x.logprobs.grad, torch.tensor([[0.0, 0.0], [-2.0 * 0.9999, 0.0]]))


def test_cispo_keeps_the_gradient_of_clipped_tokens_by_hand():
    x = _with_grad(_inputs([[math.log(8.0), math.log(0.5)]], [1.0]))
    out = POLICY_LOSSES["cispo"](x, CISPOLoss(max_weight=5.0))
    # loss = -sg(min(r, 5)) * A * logp: weights 5 and 0.5, the log-probs are log 8 and log 0.5.
    torch.testing.assert_close(out.per_token, torch.tensor([[-5.0 * math.log(8.0), -0.5 * math.log(0.5)]]))
    out.per_token.sum().backward()
    torch.testing.assert_close(x.logprobs.grad, torch.tensor([[-5.0, -0.5]]))  # the clipped token still learns
    torch.testing.assert_close(out.stats["clip_frac"].value, torch.tensor([[1.0, 0.0]]))


def test_reinforce_is_the_importance_weighted_policy_gradient():
    x = _with_grad(_inputs([[0.0, math.log(2.0)]], [-3.0]))
    out = POLICY_LOSSES["reinforce"](x, ReinforceLoss())
    torch.testing.assert_close(out.per_token, torch.tensor([[3.0, 6.0]]))
    out.per_token.sum().backward()
    torch.testing.assert_close(x.logprobs.grad, torch.tensor([[3.0, 6.0]]))  # -r A: no clip at any ratio


@pytest.mark.parametrize("name", ["ppo_clip", "gspo", "cispo", "reinforce"])
def test_every_loss_applies_the_correction_weights(name):
    settings = {"ppo_clip": PPOClipLoss(), "gspo": GSPOLoss(), "cispo": CISPOLoss(), "reinforce": ReinforceLoss()}[name]
    plain = POLICY_LOSSES[name](_inputs([[0.1, -0.2]], [1.5]), settings).per_token
    weighted = POLICY_LOSSES[name](_inputs([[0.1, -0.2]], [1.5], weights=[[0.0, 2.0]]), settings).per_token
    torch.testing.assert_close(weighted, plain * torch.tensor([[0.0, 2.0]]))


def test_kl_estimators_by_hand():
    logp, ref = torch.tensor(math.log(0.5)), torch.tensor(math.log(0.25))
    d = math.log(0.25) - math.log(0.5)
    assert KL_ESTIMATORS["k1"](logp, ref).item() == pytest.approx(-d, abs=1e-6)
    assert KL_ESTIMATORS["k2"](logp, ref).item() == pytest.approx(d * d / 2, abs=1e-6)
    assert KL_ESTIMATORS["k3"](logp, ref).item() == pytest.approx(0.5 + math.log(2) - 1, abs=1e-6)
    assert all(KL_ESTIMATORS[k](torch.tensor(-1.0), torch.tensor(-1.0)).item() == 0.0 for k in ("k1", "k2", "k3"))


def test_the_objective_adds_the_kl_term_with_its_coefficient():
    algo = AlgoConfig(kl=KLConfig(coef=0.1), correction=NoCorrection())
    logp = torch.full((1, 2), math.log(0.5))
    ref = torch.full((1, 2), math.log(0.25))
    out = Objective(algo)(logp, logp, logp, torch.tensor([0.0]), torch.ones(1, 2), ref)
    torch.testing.assert_close(out.per_token, torch.full((1, 2), 0.1 * (0.5 + math.log(2) - 1)))
    assert "kl" in out.stats
    with pytest.raises(ValueError, match="reference"):
        Objective(algo)(logp, logp, logp, torch.tensor([0.0]), torch.ones(1, 2))
    assert Objective(AlgoConfig(kl=KLConfig(coef=0.1, in_reward=True))).kl is None  # folded into the reward instead


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


LEARNER = torch.tensor([[0.0, math.log(3.0), math.log(0.5), 5.0]])
SAMPLER = torch.zeros(1, 4)
TOKENS = torch.tensor([[1.0, 1.0, 1.0, 0.0]])  # the last token is padding: ignored in every statistic


def test_tis_weights_are_capped_ratios_by_hand():
    correction = CORRECTIONS["tis"](LEARNER, SAMPLER, TOKENS, TISCorrection(cap=2.0))
    torch.testing.assert_close(correction.weights, torch.tensor([[1.0, 2.0, 0.5, 2.0]]))
    assert correction.anchor is LEARNER  # the decoupled objective: the clip is against the learner's own
    sums = StatSums()
    sums.add({**correction.stats, **mismatch_stats(LEARNER, SAMPLER)}, TOKENS)
    stats = sums.result()
    assert stats["correction/capped_tokens"] == pytest.approx(1 / 3)  # one of three real tokens above the cap
    assert stats["correction/capped_sequences"] == 1.0  # the one sequence has a capped token (its ratio-3 one)
    assert stats["logprob_mismatch"] == pytest.approx((math.log(3.0) + math.log(2.0)) / 3)
    assert stats["mismatch_max_ratio"] == pytest.approx(3.0) and stats["mismatch_min_ratio"] == pytest.approx(0.5)


def test_icepop_drops_tokens_outside_the_band_and_weights_the_rest():
    correction = CORRECTIONS["icepop"](LEARNER, SAMPLER, TOKENS, IcePopCorrection(low=0.6, high=2.5))
    # ratios 1, 3, 0.5, e^5: only the first is inside [0.6, 2.5].
    torch.testing.assert_close(correction.weights, torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    sums = StatSums()
    sums.add(correction.stats, TOKENS)
    assert sums.result()["correction/masked_tokens"] == pytest.approx(2 / 3)
    assert sums.result()["correction/sequences_with_masked"] == 1.0


def test_seq_mask_drops_whole_sequences_by_their_geometric_mean():
    learner = torch.tensor([[math.log(3.0), 0.0], [0.1, -0.1]])
    mask = torch.ones(2, 2)
    correction = CORRECTIONS["seq_mask"](learner, torch.zeros(2, 2), mask, SeqMaskCorrection(low=0.5, high=1.5))
    # geometric means: sqrt(3) = 1.73 (out) and 1.0 (in).
    torch.testing.assert_close(correction.weights, torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    sums = StatSums()
    sums.add(correction.stats, mask)
    assert sums.result()["correction/masked_sequences"] == 0.5


def test_no_correction_anchors_at_the_sampler():
    correction = CORRECTIONS["none"](LEARNER, SAMPLER, TOKENS, NoCorrection())
    assert correction.anchor is SAMPLER and torch.equal(correction.weights, torch.ones(1, 4))


def test_the_registered_choices_are_the_configs():
    from rlvr.algo_config import CORRECTION_CONFIGS, LOSS_CONFIGS

    assert set(CORRECTION_CONFIGS) <= set(CORRECTIONS) and set(LOSS_CONFIGS) <= set(POLICY_LOSSES)


def test_tis_scales_each_token_gradient_by_its_weight():
    """With TIS the PPO ratio starts at 1 (learner vs its own old log-probs) and each token's policy gradient is
    multiplied by min(learner/sampler, cap): d loss / d logp = -A * w."""
    logprobs = torch.tensor([[-1.0, -2.0, -0.5]], requires_grad=True)
    sampler = torch.tensor([[-1.0, -2.0 - math.log(4.0), -0.5 + math.log(2.0)]])
    objective = Objective(AlgoConfig())  # ppo_clip with tis, the default
    out = objective(logprobs, sampler, logprobs.detach(), torch.tensor([1.0]), torch.ones(1, 3))
    out.per_token.sum().backward()
    torch.testing.assert_close(logprobs.grad, torch.tensor([[-1.0, -2.0, -0.5]]))


def test_reinforce_pp_advantages_by_hand():
    rewards = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    # Whole-batch mean 0.75, unbiased std sqrt((3 * 0.0625 + 0.5625) / 3) = 0.5.
    torch.testing.assert_close(ADVANTAGES["reinforce_pp"](rewards), (rewards - 0.75) / (0.5 + 1e-4))
    # Group means 0.5 and 1 subtracted -> [0.5, -0.5, 0, 0]; their unbiased std over the batch is sqrt(1/6).
    expected = torch.tensor([[0.5, -0.5], [0.0, 0.0]]) / (math.sqrt(1 / 6) + 1e-4)
    torch.testing.assert_close(ADVANTAGES["reinforce_pp_baseline"](rewards), expected)


def test_icepop_through_the_objective_zeroes_the_gradient_of_dropped_tokens():
    """The learner/sampler ratios are 1, 4 and 1/4; with [0.5, 2] only the first token keeps its gradient, and
    it is weighted by its ratio (1). PPO's ratio is against the learner's own log-probs, so it is 1 and unclipped."""
    logprobs = torch.tensor([[-1.0, -2.0, -0.5]], requires_grad=True)
    sampler = logprobs.detach() - torch.tensor([[0.0, math.log(4.0), -math.log(4.0)]])
    objective = Objective(AlgoConfig(correction=IcePopCorrection(low=0.5, high=2.0)))
    objective(logprobs, sampler, logprobs.detach(), torch.tensor([2.0]), torch.ones(1, 3)).per_token.sum().backward()
    torch.testing.assert_close(logprobs.grad, torch.tensor([[-2.0, 0.0, 0.0]]))


def test_a_plugin_correction_is_configured_by_name_with_its_options():
    from rlvr.config import parse_config

    @CORRECTIONS.register("test_half")
    def half(proximal, behaviour, mask, settings):
        return Correction(proximal, torch.full_like(proximal, settings.options["weight"]), {})

    try:
        algo = parse_config({"algo": {"correction": {"name": "test_half", "options": {"weight": 0.25}}}}).algo
        logprobs = torch.zeros(1, 2, requires_grad=True)
        out = Objective(algo)(logprobs, torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([1.0]), torch.ones(1, 2))
        torch.testing.assert_close(out.per_token, torch.full((1, 2), -0.25))  # ppo_clip at ratio 1, weighted
    finally:
        del CORRECTIONS["test_half"]
