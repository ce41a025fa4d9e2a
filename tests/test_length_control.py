"""Length and effort control: the efforts prompts state, the thinking-length reward (by hand), the per-effort step
metrics, a real trainer step on the tiny model, and an evaluation that states each effort."""

import pytest
import torch
from pydantic import ValidationError

from conftest import Replies
from rlvr.config import load_config
from rlvr.data import Source
from rlvr.env_config import MixtureEnvConfig
from rlvr.envs import make_env
from rlvr.errors import ConfigError
from rlvr.eval import EvalSettings, run_eval
from rlvr.eval.report import markdown, plots
from rlvr.jobs import eval_settings, learned_efforts
from rlvr.length_control import LengthControlConfig, effort_line, stated
from rlvr.rewards import Rubric
from rlvr.rewards.length import thinking_length_reward, thinking_penalty
from rlvr.scoring import Scorer
from rlvr.step_metrics import effort_metrics
from rlvr.types import Episode, Problem

CONTROL = ["length_control={efforts: {low: 8, high: 32}, no_reasoning: 0.25}", "env.rewards={thinking_length: 1.0}"]


def test_thinking_penalty_by_hand():
    assert thinking_penalty(32, 32) == 0.0
    assert thinking_penalty(16, 32) == -0.5 and thinking_penalty(48, 32) == -0.5
    assert thinking_penalty(100, 32) == -1.0  # at least -1
    assert thinking_penalty(0, 0) == 0.0 and thinking_penalty(1, 0) == -1.0  # reasoning off: any thinking costs all
    with pytest.raises(ValueError):
        thinking_penalty(-1, 8)


def test_the_reward_measures_the_thinking_against_the_stated_target():
    problem = stated(Problem("q", "1"), "low", 8)
    assert thinking_length_reward("<think>a b</think>Answer: 1", Problem("q", "1")) == 0.0  # no effort stated
    with_count = stated(Problem("q", "1", meta={"thinking_tokens": 6}), "low", 8)
    assert thinking_length_reward("<think>x</think>Answer: 1", with_count) == -0.25
    # Without the trainer's token count: the thinking's words, 4 against 8.
    assert thinking_length_reward("<think>one two three four</think>Answer: 1", problem) == -0.5
    # The scorer writes the counts it is given into each problem's meta.
    rubric = Rubric({"correct": 1.0, "thinking_length": 1.0})
    scores = Scorer(rubric, workers=0).score_completions(["Answer: 1"] * 2, [3, 3], [problem] * 2, 16, [8, 12])
    assert [s.components["thinking_length"] for s in scores] == [0.0, -0.5]


def test_efforts_are_drawn_per_prompt_seeded_with_reasoning_off_at_its_share():
    control = LengthControlConfig(efforts={"low": 8, "high": 32}, no_reasoning=0.25)
    drawn = [control.draw(Problem(f"q{i}", "1"), 0, step, i) for step in range(50) for i in range(8)]
    levels = [p.meta["effort"] for p in drawn]
    assert 0.18 < levels.count("off") / 400 < 0.32  # seeded: the same every run
    assert levels.count("low") > 100 and levels.count("high") > 100
    assert {(p.meta["effort"], p.meta["thinking_target"]) for p in drawn} == {("off", 0), ("low", 8), ("high", 32)}
    again = [control.draw(Problem(f"q{i}", "1"), 0, step, i) for step in range(50) for i in range(8)]
    assert [p.meta for p in again] == [p.meta for p in drawn]
    assert LengthControlConfig(no_reasoning=1.0).draw(Problem("q", "1"), 0, 0, 0).meta["effort"] == "off"


def test_the_prompt_states_the_effort():
    env = make_env(load_config(None, CONTROL).env)
    problem = env.eval_problems()[0]
    assert effort_line(problem) is None
    system = env.messages(stated(problem, "high", 32))[0]["content"]
    assert system.endswith("Reasoning effort: high. Think for about 32 tokens.")
    assert env.messages(stated(problem, "off", 0))[0]["content"].endswith("give the answer line at once.")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["length_control={efforts: {low: 8}}"], "add env.rewards: {thinking_length: 1.0}"),
        (["length_control={efforts: {low: 0}}", "env.rewards={thinking_length: 1.0}"], "at least 1 token"),
        (["length_control={efforts: {'off': 8}}", "env.rewards={thinking_length: 1.0}"], "not 'off'"),
    ],
)
def test_a_bad_length_control_config_is_named(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_effort_metrics_by_hand():
    problems = [stated(Problem("a", "1"), "low", 8), stated(Problem("b", "1"), "off", 0), Problem("c", "1")]

    def episode(group, correct, thinking):
        return Episode([0], [1], [0.0], [1], group=group, rewards={"correct": float(correct)}, meta={"thinking_tokens": thinking})

    episodes = [episode(0, True, 6), episode(0, False, 10), episode(1, True, 0), episode(2, True, 50)]
    assert effort_metrics(episodes, problems) == {
        "effort/low/target": 8,
        "effort/low/thinking_tokens": 8.0,
        "effort/low/accuracy": 0.5,
        "effort/off/target": 0,
        "effort/off/thinking_tokens": 0.0,
        "effort/off/accuracy": 1.0,
    }


def test_a_trainer_step_states_efforts_and_pays_for_keeping_to_them(tiny_model_dir, tmp_path):
    from rlvr.trainer import Trainer

    settings = [
        f"model.path={tiny_model_dir}",
        "rollout.engine=transformers",
        f"output_dir={tmp_path}",
        "train.prompts_per_step=4",
        "train.group_size=2",
        "train.micro_batch_size=8",
        "sampling.max_new_tokens=6",
        "env.eval_size=2",
        "scoring.workers=0",
        "train.guard.max_rollbacks=0",
        *CONTROL,
    ]
    trainer = Trainer(load_config(None, settings))
    sampled = []
    rollout = trainer.rollout
    trainer.rollout = lambda step: sampled.extend(episodes := rollout(step)) or episodes
    torch.manual_seed(0)
    row = trainer.train_step(0)
    stated_levels = {p.meta["effort"] for p in trainer.step_problems}
    assert stated_levels and stated_levels <= {"low", "high", "off"}
    assert all(trainer.tokenizer.decode(e.prompt_ids).count("Reasoning") == 1 for e in sampled)
    for episode in sampled:
        problem = trainer.step_problems[episode.group]
        assert episode.rewards["thinking_length"] == thinking_penalty(
            episode.meta["thinking_tokens"], problem.meta["thinking_target"]
        )
    assert {key.split("/")[1] for key in row if key.startswith("effort/")} == stated_levels


def test_eval_states_the_learned_efforts_instead_of_forcing_budgets():
    config = load_config(None, CONTROL)
    assert learned_efforts(config, "low,high", True) == (("low", 8), ("high", 32))
    assert learned_efforts(config, None, False) == (("off", 0),)
    assert learned_efforts(config, None, True) == ()
    assert learned_efforts(load_config(None, []), "low", True) == ()  # no length control: budget forcing as before
    settings = eval_settings(config, effort="off,high")
    assert settings.efforts == (("off", 0), ("high", 32)) and settings.budgets == ()
    assert eval_settings(load_config(None, []), effort="low").budgets == (64,)
    with pytest.raises(ConfigError, match="--effort: 'medium': the recipe's length control trained low, high, off"):
        learned_efforts(config, "medium", True)


def test_an_evaluation_per_stated_effort(tokenizer):
    prompts = []

    def thinks(prompt: str) -> str:
        """One word per token of the target the prompt states, then the answer."""
        prompts.append(prompt)
        return (f"<think>{' ok' * 8}</think>" if "about 8 tokens" in prompt else "") + "\nAnswer: 3"

    env = make_env(MixtureEnvConfig(sources=[Source(path="gym:chain_sum", use="eval", eval_size=3)]))
    settings = EvalSettings(efforts=(("off", 0), ("low", 8)), resamples=100)
    summary, samples = run_eval(Replies(tokenizer, thinks), env, tokenizer, Scorer(env.rubric, workers=0), settings)
    assert [row["effort"] for row in summary["efforts"]] == ["off", "low"] and len(samples) == 6
    assert [s.effort for s in samples] == ["off"] * 3 + ["low"] * 3
    assert summary["effort"] == "low"  # the headline: the last effort (what --compare pairs)
    from rlvr.eval.compare import question_accuracy

    assert len(question_accuracy(samples, None, "off")) == 3 and question_accuracy(samples) == {}
    assert sum("Reasoning: off" in p for p in prompts) == 3 and sum("about 8 tokens" in p for p in prompts) == 3
    assert summary["efforts"][0]["reasoning"]["thinking_tokens"] == 0.0
    assert summary["efforts"][1]["reasoning"]["thinking_tokens"] == 8.0  # " ok" is one token
    report = markdown({**summary, "samples_per_question": 1})
    assert "| low | 8 | 8.0 | 100% |" in report and "| off | 0 | 0.0 | - |" in report
    assert "accuracy and thinking vs stated effort" in plots(summary, samples)
    with pytest.raises(ValueError, match="two controls"):
        run_eval(
            Replies(tokenizer, thinks),
            env,
            tokenizer,
            Scorer(env.rubric, workers=0),
            EvalSettings(efforts=(("low", 8),), budgets=(8,)),
        )


def test_a_bad_effort_config_is_a_validation_error():
    with pytest.raises(ValidationError):
        LengthControlConfig(efforts={"two words": 8})


def test_the_packaged_cold_start_states_each_effort_as_training_does(tokenizer):
    import json

    from rlvr.config import RECIPES_DIR
    from rlvr.reasoning_diagnostics import split_thinking

    config = load_config("length-control", [])
    env = make_env(config.env)
    efforts = {**config.length_control.efforts, "off": 0}
    spent: dict[str, list[int]] = {}
    for line in (RECIPES_DIR / "data" / "effort_traces.jsonl").read_text().splitlines():
        system, user, assistant = json.loads(line)["messages"]
        level = next(
            name
            for name in efforts
            if env.system_text(stated(Problem(user["content"], ""), name, efforts[name])) == system["content"]
        )
        thinking = split_thinking(assistant["content"])[0]
        spent.setdefault(level, []).append(len(tokenizer(thinking, add_special_tokens=False).input_ids) if thinking else 0)
    assert {level: len(counts) for level, counts in spent.items()} == dict.fromkeys(efforts, 100)
    for level, counts in spent.items():  # the recipe's budgets are the traces' own means
        assert sum(counts) / len(counts) == pytest.approx(efforts[level], abs=1.0)
