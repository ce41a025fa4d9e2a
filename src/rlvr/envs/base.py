"""An Environment is a dataset, a prompt format and a rubric; the trainer knows nothing of the task."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rlvr.rewards import REWARDS, Verdict

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from rlvr.tools.protocol import ChatFormat
    from rlvr.tools.search import Document

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


DEMO_ROLES = ("user", "assistant", "tool")


def load_demos(path: str | None) -> list[dict[str, Any]]:
    """Demonstration messages from a JSON file (a list of chat messages), checked so that a bad file fails at load
    time with the message that is wrong rather than as a template error mid-run."""
    if path is None:
        return []
    from rlvr.errors import ConfigError

    try:
        demos = json.loads(open(path, encoding="utf-8").read())
    except (OSError, json.JSONDecodeError) as error:
        raise ConfigError(f"env.demos: {path}: {error}") from None
    if not isinstance(demos, list):
        raise ConfigError(f"env.demos: {path}: expected a JSON list of chat messages")
    for index, message in enumerate(demos):
        where = f"env.demos: {path}: message {index}"
        if not isinstance(message, dict) or message.get("role") not in DEMO_ROLES:
            raise ConfigError(f"{where}: role: expected one of {', '.join(DEMO_ROLES)}")
        if not isinstance(message.get("content", ""), str):
            raise ConfigError(f"{where}: content: expected a string")
        for call in message.get("tool_calls", []):
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                raise ConfigError(f'{where}: tool_calls: expected {{"type": "function", "function": {{"name", "arguments"}}}}')
    return demos


class Environment(ABC):
    rubric: Rubric
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    # Few-shot demonstrations shown between the system prompt and each question.
    demos: list[dict[str, Any]] = []
    # The tools its problems need (used when a recipe does not list tools itself).
    default_tools: tuple[str, ...] = ()

    @abstractmethod
    def train_problems(self, start: int, count: int) -> list[Problem]:
        """Training problems number start .. start+count-1 of an endless, seeded stream."""

    @abstractmethod
    def eval_problems(self) -> list[Problem]:
        """The fixed held-out split."""

    def subsets(self) -> set[str]:
        """The data subsets this environment draws from (those of its held-out split, by default)."""
        return {problem.subset for problem in self.eval_problems()}

    def documents(self) -> list[Document] | None:
        """The environment's own search corpus (the `env` corpus of the search tool), if it has one."""
        return None

    def messages(self, problem: Problem) -> list[dict[str, Any]]:
        """The prompt in chat format (OpenAI messages; demonstrations may hold tool calls and results)."""
        system = problem.system_prompt or self.system_prompt
        return [{"role": "system", "content": system}, *self.demos, {"role": "user", "content": problem.question}]

    def prompt_ids(
        self, tokenizer: PreTrainedTokenizerBase, problems: Sequence[Problem], chat: ChatFormat | None = None
    ) -> list[list[int]]:
        """Each problem rendered with the model's own chat template (and the tools of `chat`, if any), ready for
        the assistant's turn."""
        from rlvr.tools.protocol import ChatFormat

        chat = chat or ChatFormat(tokenizer)
        return [chat.prompt_ids(self.messages(p)) for p in problems]
