"""An Environment is a dataset, a prompt format and a rubric; the trainer knows nothing of the task."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rlvr.rewards import REWARDS

# Short on purpose: every prompt token is paid for again in each forward and backward pass.
DEFAULT_SYSTEM_PROMPT = "Think briefly, then give the final answer on the last line as 'Answer: <answer>'."


@dataclass
class Problem:
    question: str
    answer: str
    # Scores an extracted answer against this problem: 1.0 is correct.
    score: Callable[[str], float]
    subset: str = "default"
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Rubric:
    """Weighted reward functions. `correct` is also the accuracy criterion (score == 1)."""

    weights: dict[str, float]

    def __post_init__(self) -> None:
        unknown = set(self.weights) - set(REWARDS)
        if unknown:
            raise ValueError(f"unknown reward functions {sorted(unknown)} (registered: {sorted(REWARDS)})")

    def score(self, text: str, problem: Problem) -> tuple[float, dict[str, float]]:
        components = {name: REWARDS[name](text, problem) for name in self.weights}
        return sum(self.weights[n] * v for n, v in components.items()), components


class Environment(ABC):
    rubric: Rubric
    system_prompt: str = DEFAULT_SYSTEM_PROMPT

    @abstractmethod
    def train_problems(self, start: int, count: int) -> list[Problem]:
        """Training problems number start .. start+count-1 of an endless, seeded stream."""

    @abstractmethod
    def eval_problems(self) -> list[Problem]:
        """The fixed held-out split."""

    def messages(self, problem: Problem) -> list[dict[str, str]]:
        return [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": problem.question}]
