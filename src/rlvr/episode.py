"""The data that flows through a training step.

An Episode holds exactly the tokens the sampler produced; the trainer scores
those ids and never re-tokenises text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Episode:
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
