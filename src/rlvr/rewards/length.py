"""Length terms of the reward.

- `length`: DAPO's soft overlong punishment (Yu et al. 2025, "DAPO", eq. 13). Truncated completions are noisy to
  learn from: the answer may have been right but was cut off. Rather than a cliff at the length limit, the penalty
  ramps from 0 to -1 over the last `buffer` tokens before `max_tokens`.
- `thinking_length`: L1's length term (Aggarwal & Welleck 2025, LCPO-exact, relative to the target): the thinking
  against the budget the prompt stated (`rlvr.length_control`).
"""

from __future__ import annotations

from rlvr.length_control import TARGET
from rlvr.reasoning_diagnostics import split_thinking
from rlvr.rewards.base import register_reward
from rlvr.types import Problem

# DAPO used a 4096-token buffer under a 20480-token limit; without an explicit buffer, keep that ratio.
DEFAULT_BUFFER_FRACTION = 0.2


def overlong_penalty(num_tokens: int, max_tokens: int, buffer: int) -> float:
    """0 up to `max_tokens - buffer` tokens, then linearly down to -1 at `max_tokens`, and -1 beyond.

    `buffer` must be positive: with no ramp "0 up to max" and "-1 at max" would contradict each other at
    exactly `max_tokens`, which is where every truncated completion ends.
    """
    if max_tokens <= 0 or not 0 < buffer <= max_tokens:
        raise ValueError(f"need 0 < buffer <= max_tokens, got buffer={buffer}, max_tokens={max_tokens}")
    free = max_tokens - buffer
    if num_tokens <= free:
        return 0.0
    if num_tokens >= max_tokens:
        return -1.0
    return (free - num_tokens) / buffer


@register_reward("length")
def length_reward(text: str, problem: Problem) -> float:
    """`overlong_penalty` of the completion, from what the trainer writes into `problem.meta`:

    - `max_tokens` (required): the generation limit; a missing one is a configuration error and raises;
    - `overlong_buffer` (optional): the ramp length, by default `DEFAULT_BUFFER_FRACTION` of `max_tokens`;
    - `completion_tokens`: the completion's length in tokens. The reward only sees text, so when the trainer
      has not set it the length is approximated by the number of whitespace-separated words, which undercounts
      tokens (roughly 1.3 tokens per English word) and so punishes late: a stopgap, not a measurement.
    """
    if "max_tokens" not in problem.meta:
        raise ValueError("the 'length' reward needs problem.meta['max_tokens'] (the generation limit)")
    max_tokens = int(problem.meta["max_tokens"])
    buffer = problem.meta.get("overlong_buffer")
    buffer = int(buffer) if buffer is not None else max(1, round(DEFAULT_BUFFER_FRACTION * max_tokens))
    num_tokens = problem.meta.get("completion_tokens")
    if num_tokens is None:
        num_tokens = len(text.split())
    return overlong_penalty(int(num_tokens), max_tokens, buffer)


def thinking_penalty(thinking_tokens: int, target: int) -> float:
    """-|thinking - target| / target, at least -1: 0 on the budget, -0.5 at half or one and a half times it. With a
    target of 0 (reasoning off) any thinking at all costs -1."""
    if target < 0 or thinking_tokens < 0:
        raise ValueError(f"need non-negative counts, got thinking={thinking_tokens}, target={target}")
    if target == 0:
        return -1.0 if thinking_tokens else 0.0
    return -min(1.0, abs(thinking_tokens - target) / target)


@register_reward("thinking_length")
def thinking_length_reward(text: str, problem: Problem) -> float:
    """`thinking_penalty` of the completion's thinking against the budget its prompt stated (`problem.meta`'s
    `thinking_target`, written by length control; 0.0 for a prompt that stated none). The thinking's length is
    `meta["thinking_tokens"]`, which the trainer and the evaluation write (the tokenizer's count of the text inside
    the tags); without it, its whitespace-separated words, a stopgap that undercounts."""
    target = problem.meta.get(TARGET)
    if target is None:
        return 0.0
    tokens = problem.meta.get("thinking_tokens")
    if tokens is None:
        tokens = len(split_thinking(text)[0].split())
    return thinking_penalty(int(tokens), int(target))
