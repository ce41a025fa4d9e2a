"""The data every layer shares, at the bottom of the import graph: it imports nothing from rlvr.

A `Problem` is what a reward checks an answer against, an `Episode` is what the sampler produced and the learner
trains on, and a `Document` is one passage of a search corpus (an environment's own corpus, or the search tool's).
Everything here is plain, picklable data: problems travel to scoring worker processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Problem:
    """One question and everything needed to check an answer to it (no callables, so it pickles)."""

    question: str
    answer: str
    # The registered reward that decides correctness (what `correct` calls): math, gym, code, exact_match, f1, ...
    verifier: str = "math"
    subset: str = "default"
    # Overrides the environment's system prompt (a mixture of math and code needs two instructions).
    system_prompt: str | None = None
    # What the verifier needs beyond the answer: a gym entry, unit tests, aliases, the generation limit, ...
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Document:
    """One passage of a search corpus."""

    title: str
    text: str


def format_hits(documents: Sequence[Document]) -> str:
    """Retrieved passages as the model reads them: numbered, each with its title (the search tool's results, and
    the demonstrations that show them)."""
    if not documents:
        return "No results."
    return "\n".join(f"[{rank}] {doc.title}: {doc.text}" for rank, doc in enumerate(documents, start=1))


# `episode.meta` key: policy versions between the weights that sampled the episode and the learner's when it trains
# on it (asynchronous training; absent: 0, on-policy).
STALENESS = "staleness"


@dataclass
class Episode:
    """Exactly the tokens the sampler produced; the trainer scores those ids and never re-tokenises text."""

    prompt_ids: list[int]
    completion_ids: list[int]
    # The sampler's log-prob of each completion token (under the sampling temperature).
    logprobs: list[float]
    # 1 where the model produced the token, 0 for context it did not choose (tool output).
    loss_mask: list[int]
    truncated: bool = False
    text: str = ""
    group: int = 0
    reward: float = 0.0
    rewards: dict[str, float] = field(default_factory=dict)
    advantage: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (len(self.completion_ids) == len(self.logprobs) == len(self.loss_mask)):
            raise ValueError(
                f"episode lengths disagree: {len(self.completion_ids)} completion ids, "
                f"{len(self.logprobs)} logprobs, {len(self.loss_mask)} mask entries"
            )

    @property
    def num_tokens(self) -> int:
        return len(self.completion_ids)

    @property
    def generated_tokens(self) -> int:
        """The tokens the model wrote, without the tool results a multi-turn episode also holds."""
        return self.meta["tools"]["model_tokens"] if "tools" in self.meta else self.num_tokens
