"""A rubric: weighted reward functions, and the score it gives one completion."""

from __future__ import annotations

from dataclasses import dataclass, field

from rlvr.rewards.base import REWARDS, Verdict
from rlvr.rewards.probes.base import Finding
from rlvr.types import Problem


@dataclass
class Score:
    """A rubric's verdict on one completion."""

    total: float
    components: dict[str, float]  # reward name -> value, before weighting
    info: dict[str, float] = field(default_factory=dict)  # diagnostics, e.g. code/pass_fraction
    error: str | None = None  # why the completion could not be scored (then every component is 0)
    flags: list[Finding] = field(default_factory=list)  # the reward-hacking probes' findings (`rlvr.rewards.probes`)


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
