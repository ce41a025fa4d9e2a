"""The mixture environment: user files and reasoning-gym tasks drawn by weight, split per source, each problem
checked by its own verifier, and the recipe that trains on one."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from rlvr.config import ConfigError, load_config
from rlvr.data import Source
from rlvr.env_config import GymEnvConfig, HumanEvalEnvConfig, MixtureEnvConfig
from rlvr.envs import make_env
from rlvr.envs.mixture import eval_sizes
from rlvr.rewards import REWARDS

CHAIN = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2}


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def gsm8k_file(tmp_path: Path, count: int = 40) -> str:
    rows = [
        {"question": f"What is {i} plus {i}?", "answer": f"{i} + {i} = <<{i}+{i}={2 * i}>>{2 * i}\n#### {2 * i}"}
        for i in range(count)
    ]
    return write_jsonl(tmp_path / "gsm.jsonl", rows)


def mixture(*sources: dict, eval_size: int = 30) -> MixtureEnvConfig:
    return MixtureEnvConfig(sources=[Source(**s) for s in sources], eval_size=eval_size)


@pytest.mark.parametrize(
    "sources, total, expected",
    [
        ([{"path": "a.jsonl"}, {"path": "gym:chain_sum"}, {"path": "gym:leg_counting"}], 10, [4, 3, 3]),
        ([{"path": "a.jsonl", "weight": 3}, {"path": "b.jsonl"}], 10, [8, 2]),  # 7.5 / 2.5: the tie goes to the first
        ([{"path": "a.jsonl", "eval_size": 5}, {"path": "b.jsonl"}], 10, [5, 10]),  # an explicit size stays out of the share
        ([{"path": "a.jsonl", "use": "train"}, {"path": "b.jsonl"}], 10, [0, 10]),
        ([{"path": "a.jsonl", "use": "eval"}, {"path": "b.jsonl"}], 10, [None, 10]),  # None: every row
        ([{"path": "gym:chain_sum", "use": "eval"}, {"path": "b.jsonl"}], 10, [5, 5]),  # an endless task needs a size
    ],
)
def test_eval_sizes_by_hand(sources, total, expected):
    assert eval_sizes([Source(**s) for s in sources], total) == expected


def test_sources_are_split_mixed_by_weight_and_verified_by_their_own_verifier(tmp_path):
    config = mixture(
        {"path": gsm8k_file(tmp_path), "weight": 2.0},
        {"path": "gym:chain_sum", "task_config": CHAIN},
        {"path": "gym:basic_arithmetic", "task_config": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}},
        eval_size=20,
    )
    env = make_env(config)
    held_out = env.eval_problems()
    assert Counter(p.subset for p in held_out) == {"gsm": 10, "chain_sum": 5, "basic_arithmetic": 5}
    train = env.train_problems(0, 400)
    shares = Counter(p.subset for p in train)
    assert shares["gsm"] == pytest.approx(200, abs=40) and shares["chain_sum"] == pytest.approx(100, abs=30)
    assert not {p.question for p in held_out} & {p.question for p in train}
    # The stream is a pure function of the position: a rebuilt environment draws the same problems.
    assert [p.question for p in make_env(config).train_problems(100, 20)] == [p.question for p in train[100:120]]

    by_subset = {p.subset: p for p in train}
    gsm, chain = by_subset["gsm"], by_subset["chain_sum"]
    assert (gsm.verifier, chain.verifier) == ("math", "gym")
    assert gsm.meta["origin"].startswith(str(tmp_path / "gsm.jsonl") + ":")
    correct = REWARDS["correct"]
    assert correct(f"so the answer is\nAnswer: {gsm.answer.split('####')[-1].strip()}", gsm) == 1.0
    assert correct("Answer: -1", gsm) == 0.0
    assert correct(f"Answer: {chain.answer}", chain) == 1.0
    assert correct(f"Answer: {int(chain.answer) + 1}", chain) < 1.0


def test_the_gym_environment_is_a_one_source_mixture():
    config = GymEnvConfig(task="chain_sum", task_config=CHAIN, eval_size=10)
    single = make_env(config)
    mixed = make_env(MixtureEnvConfig(sources=[Source(path="gym:chain_sum", task_config=CHAIN)], eval_size=10))
    assert [p.question for p in single.eval_problems()] == [p.question for p in mixed.eval_problems()]
    assert [p.question for p in single.train_problems(0, 50)] == [p.question for p in mixed.train_problems(0, 50)]


def test_use_train_and_use_eval(tmp_path):
    train_file = gsm8k_file(tmp_path, 12)
    test_file = write_jsonl(tmp_path / "test.jsonl", [{"question": f"q{i}", "answer": str(i)} for i in range(7)])
    env = make_env(mixture({"path": train_file, "use": "train"}, {"path": test_file, "use": "eval"}))
    assert [p.subset for p in env.eval_problems()] == ["test"] * 7
    assert env.subsets() == {"gsm", "test"}  # the training-only source counts too
    assert {p.subset for p in env.train_problems(0, 30)} == {"gsm"}
    only_eval = make_env(mixture({"path": test_file, "use": "eval"}))
    with pytest.raises(ConfigError, match="nothing to train on"):
        only_eval.train_problems(0, 1)


def test_rows_exported_from_reasoning_gym_are_scored_by_the_task(tmp_path):
    import reasoning_gym

    entries = list(reasoning_gym.create_dataset("leg_counting", seed=3, size=12))
    rows = [{"question": e["question"], "answer": e["answer"], "metadata": e["metadata"]} for e in entries]
    env = make_env(
        mixture({"path": write_jsonl(tmp_path / "legs.jsonl", json.loads(json.dumps(rows))), "verifier": "gym"}, eval_size=4)
    )
    for problem in env.eval_problems():
        assert REWARDS["correct"](f"Answer: {problem.answer}", problem) == 1.0
        assert REWARDS["correct"](f"Answer: {int(problem.answer) + 3}", problem) < 1.0


def test_data_errors_name_the_file_line_and_field(tmp_path):
    no_metadata = write_jsonl(tmp_path / "plain.jsonl", [{"question": "q", "answer": "1"}, {"question": "r", "answer": "2"}])
    with pytest.raises(ConfigError, match=r"plain.jsonl:1: metadata: the gym verifier needs reasoning-gym's metadata"):
        make_env(mixture({"path": no_metadata, "verifier": "gym"}, eval_size=1))
    with pytest.raises(ConfigError, match=r"plain.jsonl: the code verifier needs unit tests: name their column in fields.tests"):
        make_env(mixture({"path": no_metadata, "verifier": "code"}, eval_size=1))
    with pytest.raises(ConfigError, match=r"plain.jsonl: held-out size 2: only 2 distinct questions"):
        make_env(mixture({"path": no_metadata}, eval_size=2))
    with pytest.raises(ConfigError, match=r"env.sources.1.path: unknown reasoning-gym task 'chain_summ'"):
        make_env(mixture({"path": no_metadata, "eval_size": 0}, {"path": "gym:chain_summ"}))
    with pytest.raises(ConfigError, match=r"env.sources.0.task_config: invalid for chain_sum"):
        make_env(mixture({"path": "gym:chain_sum", "task_config": {"min_termz": 2}}))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["env.name=mixture"], "the mixture environment needs at least one entry in env.sources"),
        (["env.sources=[{path: gym:chain_sum}]"], "env.sources: unknown key (valid keys: name, system_prompt,"),
        (
            ["env.name=mixture", "env.sources=[{path: a.jsonl, wieght: 2}]"],
            "env.sources.0.wieght: unknown key (valid keys: path,",
        ),
        (
            ["env.name=mixture", "env.sources=[{path: a.jsonl, verifier: maths}]"],
            "unknown verifier 'maths' (choices: code, exact_match, f1, gym, instructions, judge, math)",
        ),
        # `correct` calls a verifier and `length` shapes a reward: neither decides correctness.
        (["env.name=mixture", "env.sources=[{path: a.jsonl, verifier: correct}]"], "unknown verifier 'correct'"),
        (["env.name=mixture", "env.sources=[{path: a.jsonl, verifier: length}]"], "unknown verifier 'length'"),
        (["env.name=mixture", "env.sources=[{path: a.jsonl, task_config: {x: 1}}]"], "task_config is for reasoning-gym sources"),
        (["env.rewards={lenght: 1.0}"], "env.rewards.lenght"),
    ],
)
def test_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(None, overrides)


def test_the_mixture_recipe_reads_its_data_next_to_it():
    config = load_config("mixture")
    env = make_env(config.env)
    assert Counter(p.subset for p in env.eval_problems()) == {"word_problems": 50, "chain_sum": 50, "basic_arithmetic": 50}
    problem = next(p for p in env.train_problems(0, 20) if p.subset == "word_problems")
    assert REWARDS["correct"](f"Answer: {problem.answer.split('####')[-1]}", problem) == 1.0


def test_humaneval_is_an_evaluation_environment():
    env = make_env(HumanEvalEnvConfig())
    problems = env.eval_problems()
    assert len(problems) == 164 and {p.verifier for p in problems} == {"code"}
    assert env.messages(problems[0])[0]["content"] == problems[0].system_prompt
    with pytest.raises(ConfigError, match="nothing to train on"):
        env.train_problems(0, 1)
