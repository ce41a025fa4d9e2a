"""The vLLM engine on the packaged SmolLM2 (CPU build on CPU), and a tiny random model where only the engine's
scheduling matters; skipped where vLLM is not installed."""

from __future__ import annotations

import json
import math

import pytest
import torch

pytest.importorskip("vllm")

from rlvr.learner import TokenBatch, completion_logprobs  # noqa: E402
from rlvr.rollout.base import SamplingParams  # noqa: E402
from rlvr.rollout.vllm_engine import VLLMEngine, WeightSyncError  # noqa: E402
from rlvr.tools.protocol import ChatFormat  # noqa: E402

TEMPERATURE = 0.8


# The run of test_training_steps_with_the_vllm_engine. Its trainer is built once, for the module: its policy and its
# engine (the packaged model, served by vLLM) are also the ones the engine tests below use, so that one vLLM engine
# of the packaged model starts for them all.
TRAINING = {
    "name": "vllm",
    "rollout.engine": "vllm",
    "train.steps": 2,
    "train.prompts_per_step": 2,
    "train.group_size": 4,
    "sampling.max_new_tokens": 32,
    "env.eval_size": 4,
    # The evaluations before and after run through the engine all the same, in fewer decoding steps.
    "eval.max_new_tokens": 8,
    # A guard verdict stops the run at once (failing the test) instead of rolling back; so no step-0 checkpoint
    # either, seconds of writing the 135M model and its optimiser state. Step 2's is still written.
    "train.guard.max_rollbacks": 0,
    # Scored in this process: two scoring workers would each start an interpreter and import rlvr (tests of the
    # Scorer and of end-to-end runs cover the workers).
    "scoring.workers": 0,
}


def _trainer(settings: dict):
    from rlvr.config import load_config
    from rlvr.trainer import Trainer

    return Trainer(load_config(None, [f"{k}={v}" for k, v in settings.items()]))


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    return _trainer({**TRAINING, "output_dir": tmp_path_factory.mktemp("vllm-run")})


@pytest.fixture(scope="module")
def policy(trainer):
    """The packaged model, the learner's copy (the trainer's, untrained until the training test, which comes last)."""
    return trainer.policy


@pytest.fixture(scope="module")
def engine(trainer):
    """The packaged model on vLLM, with the default settings (the trainer's engine, as `rollout.engine: vllm` builds
    it)."""
    assert isinstance(trainer.engine, VLLMEngine)
    return trainer.engine


def _prompt(tokenizer, question: str) -> list[int]:
    text = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False).input_ids


def _mismatch(model, episodes, tokenizer) -> torch.Tensor:
    """|learner - sampler| log-prob per generated token."""
    batch = TokenBatch.from_episodes(episodes, tokenizer.pad_token_id)
    with torch.no_grad():
        learner, _ = completion_logprobs(model, batch, TEMPERATURE)
    return (learner - batch.old_logprobs).abs()[batch.completion_attention.bool()]


def test_samples_carry_the_learners_logprobs_and_are_reproducible(engine, policy, tokenizer):
    prompts = [_prompt(tokenizer, "What is 17 + 25?")] * 4 + [_prompt(tokenizer, "Name a colour.")] * 4
    sampling = SamplingParams(temperature=TEMPERATURE, max_new_tokens=24, seed=5)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    episodes = engine.generate(prompts, sampling)
    assert torch.equal(torch.get_rng_state(), state)  # the engine's seeding leaves the caller's random state alone
    assert [e.prompt_ids for e in episodes] == prompts
    assert len({tuple(e.completion_ids) for e in episodes}) > 2  # one random stream per prompt
    assert [e.completion_ids for e in engine.generate(prompts, sampling)] == [e.completion_ids for e in episodes]
    for e in episodes:
        assert e.truncated == (e.num_tokens == 24 and e.completion_ids[-1] != tokenizer.eos_token_id)
        assert e.text == tokenizer.decode(e.completion_ids, skip_special_tokens=True)
    # The engine's kernels (in bf16 where it is native) against the fp32 learner: close, not equal.
    gap = _mismatch(policy, episodes, tokenizer)
    assert gap.mean() < 0.05 and gap.max() < 1.0


def test_greedy_copies_of_a_prompt_get_the_same_completion(engine, tokenizer):
    prompts = [_prompt(tokenizer, "What is 2 + 2?")] * 3 + [_prompt(tokenizer, "Say hi.")]
    episodes = engine.generate(prompts, SamplingParams(greedy=True, max_new_tokens=12))
    assert episodes[0].completion_ids == episodes[1].completion_ids == episodes[2].completion_ids
    assert episodes[0] is not episodes[1] and episodes[3].prompt_ids == prompts[3]


def test_stop_strings_end_a_completion_and_stay_in_it(engine, tokenizer):
    (episode,) = engine.generate(
        [_prompt(tokenizer, "Count from 1 to 10, separated by commas.")],
        SamplingParams(greedy=True, max_new_tokens=40, stop=(",",)),
    )
    assert episode.text.count(",") == 1 and episode.text.rstrip().endswith(",")
    assert not episode.truncated


def test_min_new_tokens_hold_back_the_end_of_turn(engine, tokenizer):
    from test_rollout import _min_new_tokens_hold_back_the_end_of_turn

    _min_new_tokens_hold_back_the_end_of_turn(engine, tokenizer)


@pytest.mark.parametrize(
    "sampling",
    [SamplingParams(greedy=True, max_new_tokens=10), SamplingParams(temperature=TEMPERATURE, max_new_tokens=10, seed=3)],
    ids=["greedy", "sampled"],
)
def test_a_streamed_call_tells_each_step_and_samples_as_generate_does(engine, tokenizer, sampling):
    prompts = [_prompt(tokenizer, "What is 2 + 2?")] * 2 + [_prompt(tokenizer, "Say hi.")]
    told: list[tuple[int, list[int]]] = []
    streamed = engine.generate_streaming(prompts, sampling, lambda row, ids: told.append((row, ids)))
    for row, episode in enumerate(streamed):  # every copy of a prompt is told its own sample's ids, step by step
        steps = [ids for r, ids in told if r == row]
        assert [i for ids in steps for i in ids] == episode.completion_ids and len(steps) > 1
    plain = engine.generate(prompts, sampling)  # the same seed, the same samples and log-probs, stepped or not
    assert [(e.completion_ids, e.logprobs, e.truncated) for e in plain] == [
        (e.completion_ids, e.logprobs, e.truncated) for e in streamed
    ]


def test_new_weights_are_served_and_the_prefix_cache_forgets_the_old_ones(engine, policy, tokenizer):
    from rlvr.models import inference_weights, load_policy

    prompts = [_prompt(tokenizer, "Write a short poem about the sea.")] * 4
    sampling = SamplingParams(temperature=TEMPERATURE, max_new_tokens=16, seed=1)
    # Fills the prefix cache with the old weights' keys and values, and measures the engine's own noise: the gap
    # between its kernels (bf16 where that is native) and the fp32 learner on the very weights it serves.
    floor = _mismatch(policy, engine.generate(prompts, sampling), tokenizer).mean()
    changed = load_policy("smollm2-135m")
    torch.manual_seed(0)
    with torch.no_grad():
        for p in changed.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    try:
        engine.update_weights(inference_weights(changed))
        episodes = engine.generate(prompts, sampling)
        new, old = _mismatch(changed, episodes, tokenizer).mean(), _mismatch(policy, episodes, tokenizer).mean()
        # Served weights are the new ones: their gap is the engine's noise (0.045 against a floor of 0.047 here, in
        # bf16), the old weights' is far above it (0.66). The absolute slack covers fp32 engines, whose floor is ~0.
        assert new < 2 * floor + 0.02, (new, floor)
        assert old > 5 * new, (old, new)
    finally:
        engine.update_weights(inference_weights(policy))


def test_a_weight_load_that_misses_parameters_is_an_error(engine, policy):
    from rlvr.models import inference_weights

    without_norms = [(n, t) for n, t in inference_weights(policy) if not n.endswith("norm.weight")]
    try:
        with pytest.raises(WeightSyncError, match="not sent"):
            engine.update_weights(without_norms)
    finally:
        engine.update_weights(inference_weights(policy))


# The training test trains the module's trainer: it comes after every test of `engine` and `policy`.
@pytest.mark.slow
def test_training_steps_with_the_vllm_engine(trainer):
    from rlvr.run import train
    from rlvr.seeds import seed_everything

    seed_everything(trainer.config.seed)  # as a fresh trainer would be, whatever the tests before drew
    train(trainer.config, trainer_type=lambda config, ranks: trainer)  # the whole run, on the module's trainer
    rows = [json.loads(line) for line in (trainer.config.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2]
    for row in rows:
        # The sampler's and the learner's kernels differ (and so may their dtypes, chosen from the hardware): a
        # small, nonzero gap.
        assert 0 < row["logprob_mismatch"] < 0.1
        assert 0.0 < row["mismatch_min_ratio"] <= row["mismatch_max_ratio"] and 0.0 <= row["correction/capped_tokens"] <= 1.0
        assert math.isfinite(row["loss"]) and row["grad_norm"] > 0


# A budget far below what the calls below schedule, so that vLLM's chunked prefill splits prompts across engine
# steps: the situation in which a per-request seed killed vLLM-CPU ("CPU Generator does not use offset").
SMALL_BUDGET = 128


@pytest.fixture(scope="module")
def tiny_vllm_model_dir(tmp_path_factory, tokenizer):
    """A tiny random Llama with the real tokenizer, in a shape vLLM's CPU attention takes (head size 32, not the 8 of
    conftest's tiny model), and room for the long prompts below: for the tests where what is sampled does not matter,
    only how the engine schedules it."""
    from conftest import save_tiny_model

    shape = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2, "num_key_value_heads": 1}
    path = tmp_path_factory.mktemp("tiny-vllm-model")
    return save_tiny_model(path, tokenizer, max_position_embeddings=1024, bos_token_id=tokenizer.bos_token_id, **shape)


@pytest.fixture(scope="module")
def small_budget_trainer(tiny_vllm_model_dir, tmp_path_factory):
    """A trainer whose vLLM engine (on the tiny model) has the small budget, and whose prompts are longer than it:
    its engine serves the sampled evaluation, then it trains a step."""
    settings = {
        "model.path": tiny_vllm_model_dir,
        "output_dir": tmp_path_factory.mktemp("small-budget"),
        "rollout.engine": "vllm",
        "rollout.vllm.max_num_batched_tokens": SMALL_BUDGET,
        "env.system_prompt": "'" + "Think about the numbers, add them carefully, then answer. " * 16 + "'",
        "train.prompts_per_step": 2,  # 8 requests of over 128 tokens each: still far beyond one engine step
        "train.group_size": 4,
        "sampling.max_new_tokens": 8,
        "algo.overlong_filter": "false",  # every episode trains, however many hit the 8-token limit
        "scoring.workers": 0,
    }
    trainer = _trainer(settings)
    assert isinstance(trainer.engine, VLLMEngine)
    assert trainer.engine.llm.llm_engine.vllm_config.scheduler_config.max_num_batched_tokens == SMALL_BUDGET
    return trainer


def test_sampled_evaluation_survives_prefills_split_across_engine_steps(small_budget_trainer, tokenizer):
    from rlvr.config import SamplingConfig, load_config
    from rlvr.envs import make_env
    from rlvr.eval import EvalSettings, run_eval
    from rlvr.scoring import Scorer

    env = make_env(load_config(None, ["env.eval_size=12"]).env)
    settings = EvalSettings(n=4, ks=(1, 4), sampling=SamplingConfig(max_new_tokens=8), seed=3)
    scheduled = sum(len(ChatFormat(tokenizer).prompt_ids(env.messages(p))) for p in env.eval_problems()) * settings.n
    assert scheduled > 10 * SMALL_BUDGET  # every engine step is full and prefills are split
    engine = small_budget_trainer.engine
    with Scorer(env.rubric, workers=0) as scorer:
        first, samples = run_eval(engine, env, tokenizer, scorer, settings)
        again, samples_again = run_eval(engine, env, tokenizer, scorer, settings)
    assert first["questions"] == 12 and len(samples) == 48
    completions = [s.completion for s in samples]
    assert completions == [s.completion for s in samples_again]  # the same seed, the same samples
    assert first["avg@n"] == again["avg@n"] and first["pass@4"] == again["pass@4"]
    # The n samples of a question are distinct draws, not n copies of one.
    assert any(len(set(completions[i : i + 4])) > 1 for i in range(0, 48, 4))


@pytest.mark.slow
def test_a_training_step_with_prompts_longer_than_the_token_budget(small_budget_trainer):
    trainer = small_budget_trainer
    metrics = trainer.train_step(0)
    prompts = [trainer.chat.prompt_ids(trainer.env.messages(p)) for p in trainer.env.train_problems(0, 2)]
    assert min(len(p) for p in prompts) > SMALL_BUDGET  # no prompt fits in one engine step
    assert metrics["episodes_trained"] == 8 and math.isfinite(metrics["loss"])
