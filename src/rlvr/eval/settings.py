"""How an evaluation samples: the sampler's knobs are training's own `SamplingConfig`, declared once."""

from __future__ import annotations

from dataclasses import dataclass, field

from rlvr.config import SamplingConfig
from rlvr.reasoning_diagnostics import DiagnosticsConfig
from rlvr.rollout import SamplingParams


@dataclass(frozen=True)
class EvalSettings:
    n: int = 1
    ks: tuple[int, ...] = (1,)
    limit: int | None = None
    greedy: bool | None = None  # None: greedy when n == 1 (one deterministic answer), else sampled
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(max_new_tokens=256))
    seed: int = 0
    budgets: tuple[int, ...] = ()  # thinking budgets in tokens; empty: plain generation, no thinking control
    answer_tokens: int = 32  # after the thinking part, under a budget
    min_thinking: int = 0  # a thinking part that closes sooner is extended with "Wait," (budget forcing's other half)
    reasoning: bool = True  # False: an empty thinking block, the model answers at once
    # Efforts the prompt states, (level, thinking tokens) each, for a model trained with length control: the model
    # keeps to them itself (no budget forcing); one evaluation per effort, as per budget.
    efforts: tuple[tuple[str, int], ...] = ()
    resamples: int = 10_000
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)  # what the reasoning section looks for

    @property
    def sampled(self) -> bool:
        return not (self.greedy if self.greedy is not None else self.n == 1)

    @property
    def max_new_tokens(self) -> int:
        return self.sampling.max_new_tokens

    def sampling_params(self, max_new_tokens: int, seed: int) -> SamplingParams:
        if not self.sampled:
            return SamplingParams(greedy=True, max_new_tokens=max_new_tokens, seed=seed)
        return SamplingParams.from_config(self.sampling, seed, max_new_tokens)

    def decoding(self) -> dict:
        """How the answers were drawn, for the summary."""
        return {
            "n": self.n,
            "greedy": not self.sampled,
            **self.sampling.model_dump(),
            "seed": self.seed,
            "budgets": list(self.budgets),
            "answer_tokens": self.answer_tokens,
            "min_thinking": self.min_thinking,
            "reasoning": self.reasoning,
            **({"efforts": [list(effort) for effort in self.efforts]} if self.efforts else {}),
        }
