"""Every algorithm and config path through a real trainer step on a tiny random model."""

import math

import pytest
import torch

from rlvr.config import load_config
from rlvr.reasoning_diagnostics import mixes_languages, reasoning_metrics, reflects
from rlvr.rewards import Score
from rlvr.trainer import Trainer


def _trainer(tiny_model_dir, tmp_path, *overrides):
    settings = [
        f"model.path={tiny_model_dir}",
        "rollout.engine=transformers",
        f"output_dir={tmp_path}",
        "train.prompts_per_step=2",
        "train.group_size=4",
        "train.micro_batch_size=3",
        "train.lr=1e-2",
        "sampling.max_new_tokens=6",
        "sampling.temperature=1.0",
        "env.eval_size=2",
        "env.format_reward=0.0",
        "algo.overlong_filter=false",
        "scoring.workers=0",
    ]
    return Trainer(load_config(None, [*settings, *overrides]))


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["algo.advantage=dr_grpo", "algo.aggregation=constant"],
        ["algo.advantage=rloo", "algo.aggregation=sequence"],
        ["train.epochs=2"],
        ["algo.kl.coef=0.1"],
        ["algo.kl={coef: 0.1, estimator: k1, in_reward: true}"],
        ["algo.loss=gspo", "algo.correction=icepop"],
        ["algo.loss=cispo", "algo.correction=seq_mask"],
        ["algo.loss=reinforce", "algo.advantage=reinforce_pp", "algo.correction=none"],
        ["algo.advantage=reinforce_pp_baseline"],
        ["algo.dynamic_sampling=true"],
        ["model.gradient_checkpointing=true"],
        ["model.autocast_bf16=true"],
        ["model.lora.rank=2"],
    ],
)
def test_a_step_updates_the_policy(tiny_model_dir, tmp_path, overrides):
    trainer = _trainer(tiny_model_dir, tmp_path, *overrides)
    # Random rewards make every group informative, so the step must move the weights.
    torch.manual_seed(0)
    trainer.scorer.rubric.score = lambda text, problem: Score(r := float(torch.rand(()) > 0.5), {"correct": r})
    before = [p.detach().clone() for p in trainer.params]
    metrics = trainer.train_step(0)
    after = trainer.params
    for key in ("reward", "accuracy", "response_length", "grad_norm", "entropy", "step_seconds", "tokens_per_second"):
        assert math.isfinite(metrics[key]), key
    assert metrics["episodes_trained"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, after))
    if "algo.kl.coef=0.1" in overrides:
        assert trainer.reference is not None and "kl" in metrics
    elif any("in_reward" in o for o in overrides):
        assert trainer.reference is not None and metrics["kl_in_reward"] != 0 and "kl" not in metrics
    else:
        assert trainer.reference is None
    if "model.lora.rank=2" in overrides:
        assert all("lora" in n for n, p in trainer.policy.named_parameters() if p.requires_grad)


def test_overlong_filter_and_dynamic_sampling_select_episodes(tiny_model_dir, tmp_path):
    trainer = _trainer(
        tiny_model_dir, tmp_path, "algo.dynamic_sampling=true", "algo.overlong_filter=true", "sampling.max_new_tokens=2"
    )
    episodes = trainer.engine.generate([[1, 2, 3]] * 8, trainer.sampling(0))
    for i, e in enumerate(episodes):
        e.reward = [1.0, 0.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5][i]
    kept = trainer.assign_advantages(episodes)
    # The second group is uniform (dropped); truncated completions in the first carry no gradient.
    assert all(e in episodes[:4] and not e.truncated for e in kept)
    assert len(kept) == sum(not e.truncated for e in episodes[:4])


def test_a_batch_with_nothing_to_learn_is_skipped(tiny_model_dir, tmp_path):
    trainer = _trainer(tiny_model_dir, tmp_path, "algo.overlong_filter=true", "sampling.max_new_tokens=1")
    before = [p.detach().clone() for p in trainer.params]
    metrics = trainer.train_step(0)  # one token, never a stop token: every completion is truncated
    assert metrics["skipped_update"] == 1.0 and metrics["episodes_trained"] == 0
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.params))


def test_metrics_are_split_per_subset_only_for_mixtures():
    from rlvr.step_metrics import subset_metrics
    from rlvr.types import Episode

    def episode(subset, correct, length):
        return Episode(
            prompt_ids=[1],
            completion_ids=[2] * length,
            logprobs=[0.0] * length,
            loss_mask=[1] * length,
            reward=correct + 0.1,
            rewards={"correct": correct},
            meta={"subset": subset},
        )

    mixed = [episode("a", 1.0, 2), episode("a", 0.0, 4), episode("b", 0.0, 6)]
    metrics = subset_metrics(mixed)
    assert metrics["a/accuracy"] == 0.5 and metrics["a/response_length"] == 3 and metrics["a/episodes"] == 2
    assert metrics["b/accuracy"] == 0.0 and metrics["b/reward"] == pytest.approx(0.1)
    assert subset_metrics(mixed[:2]) == {}  # one subset, and the data has no other
    assert subset_metrics(mixed[:2], mixed=True)["a/episodes"] == 2  # a mixture's batch that drew from one subset


def test_a_steps_row_carries_the_reasoning_diagnostics_of_its_episodes(tiny_model_dir, tmp_path):
    # A word the tiny model's random text may hold: the config's phrase list is the one used.
    trainer = _trainer(tiny_model_dir, tmp_path, "diagnostics.reflection_phrases=[the]")
    sampled = []
    rollout = trainer.rollout
    trainer.rollout = lambda step: sampled.extend(episodes := rollout(step)) or episodes
    torch.manual_seed(0)
    row = trainer.train_step(0)
    texts = [episode.text for episode in sampled]
    assert len(texts) == 8
    assert row["reasoning/reflection_rate"] == sum(reflects(text, ("the",)) for text in texts) / 8
    assert row["reasoning/language_mixing_rate"] == sum(mixes_languages(text) for text in texts) / 8
    count = lambda text: len(trainer.tokenizer(text, add_special_tokens=False).input_ids) if text else 0  # noqa: E731
    assert row == {**row, **reasoning_metrics(texts, count, trainer.config.diagnostics)}
