"""Prompts for an environment's problems, and the Wilson interval for a single proportion."""

from __future__ import annotations

import math

from transformers import PreTrainedTokenizerBase

from rlvr.envs import Environment


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; unlike the normal
    approximation it stays inside [0, 1] and behaves at 0 and n successes."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def prompt_ids(env: Environment, tokenizer: PreTrainedTokenizerBase, problems) -> list[list[int]]:
    return [
        list(tokenizer.apply_chat_template(env.messages(p), add_generation_prompt=True, tokenize=True, return_dict=False))
        for p in problems
    ]
