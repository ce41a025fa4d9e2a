"""Verifiable reward functions, registered by name so any rubric can use them (see `rewards.base`).

Importing the package registers every built-in reward: the format rewards, the `correct` dispatcher and the
verifiers (math, gym, code, exact_match, f1, instructions; judge, a soft one) with their vote keys, and the
reward-hacking probes (`probes`).
"""

from rlvr.rewards import code, controls, format, gym, instructions, judge, length, math, qa  # noqa: F401  (they register themselves)
from rlvr.rewards.answers import answer_tag, extract_answer
from rlvr.rewards.base import (
    REWARDS,
    VERIFIERS,
    VOTE_KEYS,
    RewardFn,
    Verdict,
    VoteKey,
    correct_reward,
    register_reward,
    register_verifier,
)
from rlvr.rewards.format import format_reward, think_format_reward
from rlvr.rewards.probes import PROBES, Finding, register_probe
from rlvr.rewards.rubric import Rubric, Score

__all__ = [
    "PROBES",
    "REWARDS",
    "VERIFIERS",
    "VOTE_KEYS",
    "Finding",
    "RewardFn",
    "Rubric",
    "Score",
    "Verdict",
    "VoteKey",
    "answer_tag",
    "correct_reward",
    "extract_answer",
    "format_reward",
    "register_probe",
    "register_reward",
    "register_verifier",
    "think_format_reward",
]
