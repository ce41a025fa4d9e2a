"""Verifiable reward functions, registered by name so any rubric can use them.

A reward function takes the completion text and the problem it answers and returns a float, or a `Verdict`
when it has diagnostics worth logging; it never raises on malformed model output. A *verifier* is a reward
whose 1.0 means "correct" (math, gym, code, exact_match, f1): each problem names its own, and the `correct`
reward calls it, so one rubric serves a mixture of tasks.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rlvr.registry import Registry

if TYPE_CHECKING:
    from rlvr.envs.base import Problem


@dataclass(frozen=True)
class Verdict:
    """A reward value with diagnostics, e.g. the share of unit tests passed next to the all-pass reward."""

    value: float
    info: dict[str, float] = field(default_factory=dict)


RewardFn = Callable[[str, "Problem"], "float | Verdict"]
REWARDS: Registry[RewardFn] = Registry("reward function")
register_reward = REWARDS.register
# The rewards that decide correctness, the ones a problem or a source may name as its verifier.
VERIFIERS: Registry[RewardFn] = Registry("verifier")


def register_verifier(name: str) -> Callable[[RewardFn], RewardFn]:
    """Register a reward that is also a verifier: 1.0 means correct."""

    def add(fn: RewardFn) -> RewardFn:
        return VERIFIERS.register(name)(REWARDS.register(name)(fn))

    return add


_ANSWER_LINE = re.compile(r"^\s*\**answer\**\s*[:：]\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)


def answer_tag(text: str) -> str | None:
    """The content of the last non-empty `<answer>...</answer>` (R1-style prompts; may span lines, e.g. a grid)."""
    tags = [tag.strip() for tag in _ANSWER_TAG.findall(text) if tag.strip()]
    return tags[-1] if tags else None


def extract_answer(text: str) -> str | None:
    """The final answer in a completion.

    1. The last `<answer>...</answer>` tag, for prompts that ask for R1's format.
    2. Else the last line of the form `Answer: <answer>` (the marked place this project's prompt asks for).
    3. Otherwise, as a documented fallback, the last number in the text: a weak base
       model often states the right number in prose, and RL cannot start from a
       reward of zero.
    Returns None when none is present.
    """
    tagged = answer_tag(text)
    if tagged:
        return tagged
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


_THINK_ANSWER = re.compile(r"\s*<think>(?P<think>.*?)</think>\s*<answer>(?P<answer>.*?)</answer>\s*", re.DOTALL)


@register_reward("think_format")
def think_format_reward(text: str, problem: Problem) -> float:
    """1 for R1's structure, `<think>...</think><answer>...</answer>` and nothing else, both parts non-empty
    and neither tag repeated; else 0. Pair it with a system prompt that asks for these tags."""
    match = _THINK_ANSWER.fullmatch(text)
    if match is None or not match["think"].strip() or not match["answer"].strip():
        return 0.0
    return float(all(text.count(tag) == 1 for tag in ("<think>", "</think>", "<answer>", "</answer>")))


@register_reward("correct")
def correct_reward(text: str, problem: Problem) -> float | Verdict:
    """The problem's own verifier (`problem.verifier`): 1.0 = correct, which is what accuracy counts."""
    if problem.verifier not in VERIFIERS:
        raise ValueError(
            f"problem verifier {problem.verifier!r} is not a registered verifier (choices: {', '.join(sorted(VERIFIERS))})"
        )
    return VERIFIERS[problem.verifier](text, problem)


# Verifier modules register themselves; imported last because they use the helpers above.
from rlvr.rewards import code, gym, length, math, qa  # noqa: E402,F401
