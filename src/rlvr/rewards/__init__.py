"""Verifiable reward functions, registered by name so any rubric can use them.

A reward function takes the completion text and the problem it answers and
returns a float; it never raises on malformed model output.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from rlvr.registry import Registry

if TYPE_CHECKING:
    from rlvr.envs.base import Problem

RewardFn = Callable[[str, "Problem"], float]
REWARDS: Registry[RewardFn] = Registry("reward function")
register_reward = REWARDS.register


_ANSWER_LINE = re.compile(r"^\s*\**answer\**\s*[:：]\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def extract_answer(text: str) -> str | None:
    """The final answer in a completion.

    1. The last line of the form `Answer: <answer>` (the marked place the prompt asks for).
    2. Otherwise, as a documented fallback, the last number in the text: a weak base
       model often states the right number in prose, and RL cannot start from a
       reward of zero.
    Returns None when neither is present.
    """
    marked = _ANSWER_LINE.findall(text)
    if marked:
        answer = marked[-1].strip().strip("*").strip()
        return answer.rstrip(".") if answer else None
    numbers = _NUMBER.findall(text)
    return numbers[-1].replace(",", "") if numbers else None


@register_reward("format")
def format_reward(text: str, problem: Problem) -> float:
    """1 when the completion ends with a non-empty `Answer: ...` line, else 0."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return float(bool(lines) and _ANSWER_LINE.fullmatch(lines[-1]) is not None)


@register_reward("correct")
def correct_reward(text: str, problem: Problem) -> float:
    """The problem's own scorer on the extracted answer (1.0 = correct)."""
    answer = extract_answer(text)
    if answer is None:
        return 0.0
    return float(problem.score(answer))


# Verifier modules register themselves; imported last because they use the helpers above.
from rlvr.rewards import length, math, qa  # noqa: E402,F401
