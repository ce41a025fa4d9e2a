"""One generation in progress, over any number of model turns: what the model wrote and what was put between.

Every multi-turn rollout (tool calls, budget forcing) builds its completion the same way. The ids the model
sampled are kept with the sampler's log-probs and a loss-mask of 1; ids inserted between its turns (a tool
result, a forced `</think>`, a "Wait,") carry a mask of 0 and a log-prob of 0, since the model did not choose
them. The next turn continues from exactly these ids, never from re-tokenised text, so the learner scores the
tokens the sampler saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from rlvr.types import Episode

StateT = TypeVar("StateT")


@dataclass
class Trajectory(Generic[StateT]):
    prompt: list[int]
    # What the turn policy tracks per trajectory (tool sessions and messages, thinking counts).
    state: StateT
    ids: list[int] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    turns: int = 0  # model turns taken, whether or not any of their tokens were kept
    stop: str | None = None  # why it ended; None while it goes on
    truncated: bool = False

    @property
    def done(self) -> bool:
        return self.stop is not None

    @property
    def model_tokens(self) -> int:
        return sum(self.mask)

    @property
    def context_tokens(self) -> int:
        return len(self.mask) - self.model_tokens

    def context(self) -> list[int]:
        """What the next turn continues from: the prompt and everything after it."""
        return self.prompt + self.ids

    def keep(self, ids: Sequence[int], logprobs: Sequence[float]) -> None:
        """A model turn: the tokens of it that stay, with their sampler log-probs."""
        self.ids += ids
        self.mask += [1] * len(ids)
        self.logprobs += logprobs
        self.turns += 1

    def append_context(self, ids: Sequence[int]) -> None:
        """Tokens the model did not choose: no log-prob, no loss."""
        self.ids += ids
        self.mask += [0] * len(ids)
        self.logprobs += [0.0] * len(ids)

    def finish(self, stop: str, truncated: bool = False) -> None:
        self.stop, self.truncated = stop, truncated

    def model_logprobs(self) -> list[float]:
        """The log-probs of the model's own tokens only, in order."""
        return [logprob for logprob, kept in zip(self.logprobs, self.mask) if kept]

    def to_episode(self, text: str, meta: dict[str, Any]) -> Episode:
        return Episode(
            prompt_ids=self.prompt,
            completion_ids=self.ids,
            logprobs=self.logprobs,
            loss_mask=self.mask,
            truncated=self.truncated,
            text=text,
            meta=meta,
        )
