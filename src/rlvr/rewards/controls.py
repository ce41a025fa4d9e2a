"""Control rewards: what a real reward's gain must beat.

A model can "improve" under RL for reasons that have nothing to do with the reward's signal: the update itself
sharpens what the model already prefers, and format alone can lift accuracy (several papers report gains on
Qwen models under random rewards). `rlvr controls` trains a recipe three ways, with its real reward, with
`random` and with the format term alone (`format_only`), so a gain is called real only when it beats both.
"""

from __future__ import annotations

import hashlib

from rlvr.rewards.base import register_reward
from rlvr.types import Problem


@register_reward("random")
def random_reward(text: str, problem: Problem) -> float:
    """1 or 0 with probability 1/2 each, independent of whether the completion is right: a coin flipped by the
    SHA-256 of the question and the completion, so the same completion always draws the same reward (in every
    scoring worker, every resume and every machine) while different completions draw independently."""
    digest = hashlib.sha256(f"{problem.question}\x00{text}".encode()).digest()
    return float(digest[0] < 128)
