"""The reasoning-gym environment: a fixed held-out split that training never sees."""

import pytest

from rlvr.config import ConfigError
from rlvr.env_config import GymEnvConfig
from rlvr.envs import make_env
from rlvr.rewards import REWARDS


def test_held_out_split_is_fixed_and_disjoint_from_training():
    config = GymEnvConfig(
        task="chain_sum", task_config={"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}, eval_size=60
    )
    env = make_env(config)
    held_out = {p.question for p in env.eval_problems()}
    assert [p.question for p in env.eval_problems()] == [p.question for p in make_env(config).eval_problems()]
    train = env.train_problems(0, 300)
    assert not held_out & {p.question for p in train}
    assert [p.question for p in env.train_problems(10, 5)] == [p.question for p in train[10:15]]  # a stream


def test_problems_are_scored_by_the_task():
    env = make_env(GymEnvConfig(task="chain_sum", eval_size=3))
    problem = env.eval_problems()[0]
    assert problem.verifier == "gym" and problem.subset == "chain_sum"
    assert REWARDS["correct"](f"Answer: {problem.answer}", problem) == 1.0
    assert REWARDS["correct"](f"Answer: {int(problem.answer) + 1}", problem) < 1.0
    assert env.messages(problem)[-1] == {"role": "user", "content": problem.question}


def test_unknown_task_and_bad_task_config_are_named():
    with pytest.raises(ConfigError, match="env.task: unknown reasoning-gym task 'chain_summ'"):
        make_env(GymEnvConfig(task="chain_summ"))
    with pytest.raises(ConfigError, match="env.task_config: invalid for chain_sum"):
        make_env(GymEnvConfig(task="chain_sum", task_config={"min_termz": 2}))
