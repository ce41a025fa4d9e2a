"""A rubric: weighted reward functions, and the score it gives one completion."""

from __future__ import annotations

from dataclasses import dataclass, field

from rlvr.rewards.base import REWARDS, Verdict
from rlvr.rewards.calibration import CONFIDENCE, brier_reward, split_confidence
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
    """Weighted reward functions. `correct` is also the accuracy criterion (score == 1).

    With `confidence`, a completion's last `Confidence:` line is split off before the terms read it, recorded in
    `info`, and scored by the `brier` term when `brier_weight` is set (`rlvr.rewards.calibration`)."""

    weights: dict[str, float]
    confidence: bool = field(default=False, kw_only=True)
    brier_weight: float = field(default=0.0, kw_only=True)

    def __post_init__(self) -> None:
        unknown = set(self.weights) - set(REWARDS)
        if unknown:
            raise ValueError(f"unknown reward functions {sorted(unknown)} (registered: {sorted(REWARDS)})")

    @property
    def terms(self) -> dict[str, float]:
        """Every term's weight, the Brier term included."""
        return {**self.weights, "brier": self.brier_weight} if self.brier_weight else dict(self.weights)

    def score(self, text: str, problem: Problem) -> Score:
        components: dict[str, float] = {}
        info: dict[str, float] = {}
        stated = None
        if self.confidence:
            text, stated = split_confidence(text)
            if stated is not None:
                info[CONFIDENCE] = stated
        for name in self.weights:
            result = REWARDS[name](text, problem)
            if isinstance(result, Verdict):
                info.update(result.info)
                result = result.value
            components[name] = float(result)
        if self.brier_weight:
            components["brier"] = brier_reward(stated, components.get("correct") == 1.0)
        terms = self.terms
        return Score(sum(terms[n] * v for n, v in components.items()), components, info)

    def failed(self, reason: str) -> Score:
        """The score of a completion whose scoring crashed or timed out: zero everywhere, with the reason."""
        return Score(0.0, dict.fromkeys(self.terms, 0.0), error=reason)
