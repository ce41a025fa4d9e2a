"""An Environment is a dataset, a prompt format and a rubric; the trainer knows nothing of the task."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rlvr.rewards import REWARDS, Verdict

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# Short on purpose: every prompt token is paid for again in each forward and backward pass.
DEFAULT_SYSTEM_PROMPT = "Think briefly, then give the final answer on the last line as 'Answer: <answer>'."


@dataclass
class Problem:
    """One question and everything needed to check an answer to it.

    Plain, picklable data (no callables): problems travel to scoring worker processes.
    """

    question: str
    answer: str
    # The registered reward that decides correctness (what `correct` calls): math, gym, code, exact_match, f1, ...
    verifier: str = "math"
    subset: str = "default"
    # Overrides the environment's system prompt (a mixture of math and code needs two instructions).
    system_prompt: str | None = None
    # What the verifier needs beyond the answer: a gym entry, unit tests, aliases, the generation limit, ...
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Score:
    """A rubric's verdict on one completion."""

    total: float
    components: dict[str, float]  # reward name -> value, before weighting
    info: dict[str, float] = field(default_factory=dict)  # diagnostics, e.g. code/pass_fraction
    error: str | None = None  # why the completion could not be scored (then every component is 0)


@dataclass
class Rubric:
    """Weighted reward functions. `correct` is also the accuracy criterion (score == 1)."""

    weights: dict[str, float]

    def __post_init__(self) -> None:
        unknown = set(self.weights) - set(REWARDS)
        if unknown:
            raise ValueError(f"unknown reward functions {sorted(unknown)} (registered: {sorted(REWARDS)})")

    def score(self, text: str, problem: Problem) -> Score:
        components: dict[str, float] = {}
        info: dict[str, float] = {}
        for name in self.weights:
            result = REWARDS[name](text, problem)
            if isinstance(result, Verdict):
                info.update(result.info)
                result = result.value
            components[name] = float(result)
        return Score(sum(self.weights[n] * v for n, v in components.items()), components, info)

    def failed(self, reason: str) -> Score:
        """The score of a completion whose scoring crashed or timed out: zero everywhere, with the reason."""
        return Score(0.0, dict.fromkeys(self.weights, 0.0), error=reason)


class Environment(ABC):
    rubric: Rubric
    system_prompt: str = DEFAULT_SYSTEM_PROMPT

    @abstractmethod
    def train_problems(self, start: int, count: int) -> list[Problem]:
        """Training problems number start .. start+count-1 of an endless, seeded stream."""

    @abstractmethod
    def eval_problems(self) -> list[Problem]:
        """The fixed held-out split."""

    def subsets(self) -> set[str]:
        """The data subsets this environment draws from (those of its held-out split, by default)."""
        return {problem.subset for problem in self.eval_problems()}

    def messages(self, problem: Problem) -> list[dict[str, str]]:
        system = problem.system_prompt or self.system_prompt
        return [{"role": "system", "content": system}, {"role": "user", "content": problem.question}]

    def prompt_ids(self, tokenizer: PreTrainedTokenizerBase, problems: Sequence[Problem]) -> list[list[int]]:
        """Each problem rendered with the model's own chat template, ready for the assistant's turn."""
        return [
            list(tokenizer.apply_chat_template(self.messages(p), add_generation_prompt=True, tokenize=True, return_dict=False))
            for p in problems
        ]
