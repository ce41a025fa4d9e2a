"""Rewards for the shape of a completion rather than its correctness."""

from __future__ import annotations

import re

from rlvr.rewards.answers import ANSWER_LINE
from rlvr.rewards.base import register_reward
from rlvr.types import Problem

_THINK_ANSWER = re.compile(r"\s*<think>(?P<think>.*?)</think>\s*<answer>(?P<answer>.*?)</answer>\s*", re.DOTALL)


@register_reward("format")
def format_reward(text: str, problem: Problem) -> float:
    """1 when the completion ends with a non-empty `Answer: ...` line, else 0."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return float(bool(lines) and ANSWER_LINE.fullmatch(lines[-1]) is not None)


@register_reward("think_format")
def think_format_reward(text: str, problem: Problem) -> float:
    """1 for R1's structure, `<think>...</think><answer>...</answer>` and nothing else, both parts non-empty
    and neither tag repeated; else 0. Pair it with a system prompt that asks for these tags."""
    match = _THINK_ANSWER.fullmatch(text)
    if match is None or not match["think"].strip() or not match["answer"].strip():
        return 0.0
    return float(all(text.count(tag) == 1 for tag in ("<think>", "</think>", "<answer>", "</answer>")))
