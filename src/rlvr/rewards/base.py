"""The reward registries: what a reward function is, and how one registers as a verifier.

A reward function takes the completion text and the problem it answers and returns a float, or a `Verdict`
when it has diagnostics worth logging; it never raises on malformed model output. A *verifier* is a reward
whose 1.0 means "correct" (math, gym, code, exact_match, f1): each problem names its own, and the `correct`
reward calls it, so one rubric serves a mixture of tasks. A verifier may declare its *vote key*, what counts as
"the same answer" in a majority vote (maj@k); one without (code: two passing programs are not one answer) gets
no maj@k.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from rlvr.registry import Registry
from rlvr.types import Problem


@dataclass(frozen=True)
class Verdict:
    """A reward value with diagnostics, e.g. the share of unit tests passed next to the all-pass reward."""

    value: float
    info: dict[str, float] = field(default_factory=dict)


RewardFn = Callable[[str, Problem], "float | Verdict"]
# The completion text -> the answer it votes for, or None when it states none.
VoteKey = Callable[[str], "str | None"]

REWARDS: Registry[RewardFn] = Registry("reward function")
register_reward = REWARDS.register
# The rewards that decide correctness, the ones a problem or a source may name as its verifier.
VERIFIERS: Registry[RewardFn] = Registry("verifier")
VOTE_KEYS: Registry[VoteKey] = Registry("vote key")


def register_verifier(name: str, vote: VoteKey | None = None) -> Callable[[RewardFn], RewardFn]:
    """Register a reward that is also a verifier (1.0 means correct), with the vote key of its answers if any."""

    def add(fn: RewardFn) -> RewardFn:
        if name in REWARDS or name in VERIFIERS or name in VOTE_KEYS:  # checked first: all three tables or none
            raise ValueError(f"reward function {name!r} is already registered")
        if vote is not None:
            VOTE_KEYS.register(name)(vote)
        return VERIFIERS.register(name)(REWARDS.register(name)(fn))

    return add


@register_reward("correct")
def correct_reward(text: str, problem: Problem) -> float | Verdict:
    """The problem's own verifier (`problem.verifier`): 1.0 = correct, which is what accuracy counts."""
    if problem.verifier not in VERIFIERS:
        raise ValueError(
            f"problem verifier {problem.verifier!r} is not a registered verifier (choices: {', '.join(sorted(VERIFIERS))})"
        )
    return VERIFIERS[problem.verifier](text, problem)
