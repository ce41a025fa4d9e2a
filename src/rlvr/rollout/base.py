"""The rollout engine interface: token ids in, episodes (token ids + log-probs) out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch

from rlvr.config import SamplingConfig
from rlvr.hardware import DtypeChoice
from rlvr.types import Episode

# Told, while a call generates, the ids each step added to one completion: (its prompt's index in the call, the ids).
TokenCallback = Callable[[int, list[int]], None]


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 96
    greedy: bool = False
    # Seeds the whole call, so a step's samples do not depend on what ran before it (exact resume).
    seed: int = 0
    # Texts that end a completion like an end-of-turn token (kept in it), e.g. "</tool_call>".
    stop: tuple[str, ...] = ()
    # End-of-turn tokens are suppressed until a completion has this many (benchmarks use it for equal lengths).
    min_new_tokens: int = 0

    @staticmethod
    def from_config(config: SamplingConfig, seed: int, max_new_tokens: int | None = None) -> SamplingParams:
        """A recipe's `sampling:` section as one call's parameters (training and evaluation alike)."""
        return SamplingParams(
            config.temperature,
            config.top_p,
            config.top_k,
            max_new_tokens or config.max_new_tokens,
            seed=seed,
            min_new_tokens=config.min_new_tokens,
        )


class RolloutEngine(ABC):
    """Generates completions for tokenised prompts.

    `generate` returns one Episode per prompt, in order, holding exactly the ids
    the engine sampled and each token's log-prob under the sampling temperature.
    An engine that samples from the learner's own model object needs no weight
    sync (`shares_weights`); one with its own copy (another dtype, another
    process, vLLM) receives the learner's weights through `update_weights`.
    """

    shares_weights: bool = False
    # The dtype it generates in and why (chosen from the hardware or set in the config): for the run log.
    precision: DtypeChoice = DtypeChoice("float32", "the learner's own fp32 weights")

    @abstractmethod
    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingParams) -> list[Episode]: ...

    def generate_streaming(
        self, prompts: Sequence[Sequence[int]], sampling: SamplingParams, on_tokens: TokenCallback
    ) -> list[Episode]:
        """`generate`, telling `on_tokens` each completion's ids as they are sampled (a server streams them).

        The ids told for a row add up to its episode's `completion_ids`. A separate method, not an argument of
        `generate`, so the training path and engines that cannot stream stay as they are: this default tells each
        row's ids at once when the call has finished; the transformers and vLLM engines tell them step by step."""
        episodes = self.generate(prompts, sampling)
        for row, episode in enumerate(episodes):
            on_tokens(row, list(episode.completion_ids))
        return episodes

    @abstractmethod
    def update_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None: ...

    def sleep(self) -> None:
        """Release the device memory generation holds (an engine colocated with the learner on one GPU) until
        `wake_up`; a no-op for engines that hold none of their own."""
        return

    def wake_up(self) -> None:
        """Take back what `sleep` released, before weights load and generation resumes."""
        return
