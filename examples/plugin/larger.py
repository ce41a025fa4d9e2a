"""A plugin: a task, its verifier and a shaping reward of its own, trained by rlvr without editing rlvr.

`plugins: [larger.py]` in a recipe (or `rlvr train RECIPE --plugin larger.py`) imports this file before the
recipe is validated; the decorators below register the names the recipe then chooses: `env.name: larger`,
the `larger` verifier its problems name, and `env.rewards: {one_number: ...}`.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rlvr.envs import ENVIRONMENTS, Environment, standard_rubric
from rlvr.errors import ConfigError
from rlvr.rewards import extract_answer, register_reward, register_verifier
from rlvr.seeds import named_rng
from rlvr.types import Problem

NUMBER = re.compile(r"-?\d+")


def chosen_number(text: str) -> str | None:
    """The number a completion answers with (its vote in maj@k): the first integer of its final answer."""
    found = NUMBER.search(extract_answer(text) or "")
    return found.group() if found else None


@register_verifier("larger", vote=chosen_number)
def larger_verifier(text: str, problem: Problem) -> float:
    """1.0 when the answer is the larger of the two numbers."""
    return float(chosen_number(text) == problem.answer)


@register_reward("one_number")
def one_number_reward(text: str, problem: Problem) -> float:
    """Shaping: 1.0 when the final answer states exactly one number (naming both is hedging, not answering)."""
    return float(len(NUMBER.findall(extract_answer(text) or "")) == 1)


class LargerOptions(BaseModel):
    """`env.options` of the `larger` environment, validated here: a plugin checks its own keys."""

    model_config = ConfigDict(extra="forbid")
    max_value: int = Field(99, ge=2, description="the numbers are drawn from 1 .. max_value")


class LargerEnvironment(Environment):
    system_prompt = "Compare the numbers, then give the final answer on the last line as 'Answer: <number>'."

    def __init__(self, config) -> None:
        try:
            self.options = LargerOptions.model_validate(config.options)
        except ValidationError as error:
            first = error.errors()[0]
            raise ConfigError(f"env.options.{'.'.join(map(str, first['loc']))}: {first['msg']}") from None
        self.config = config
        self.system_prompt = config.system_prompt or self.system_prompt
        self.rubric = standard_rubric(config)  # correctness, format and the recipe's terms, as built-in tasks weigh them
        self._held_out = [self._problem("held-out", config.eval_seed, i) for i in range(config.eval_size)]
        self._held_out_questions = {p.question for p in self._held_out}

    def _problem(self, stream: str, seed: int, index: int) -> Problem:
        rng = named_rng("larger", stream, seed, index)
        a, b = rng.sample(range(1, self.options.max_value + 1), 2)
        return Problem(question=f"Which number is larger: {a} or {b}?", answer=str(max(a, b)), verifier="larger")

    def train_problems(self, start: int, count: int) -> list[Problem]:
        # An endless seeded stream that skips the held-out questions, so training never sees them.
        problems, index = [], start
        while len(problems) < count:
            problem = self._problem("train", self.config.train_seed, index)
            index += 1
            if problem.question not in self._held_out_questions:
                problems.append(problem)
        return problems

    def eval_problems(self) -> list[Problem]:
        return self._held_out


@ENVIRONMENTS.register("larger")
def larger(config) -> Environment:
    """Which of two numbers is larger (env.options: max_value)."""
    return LargerEnvironment(config)
