"""Greedy accuracy on an environment's held-out split, with a 95% Wilson interval."""

from __future__ import annotations

import math
import time

from transformers import PreTrainedTokenizerBase

from rlvr.envs import Environment
from rlvr.rollout import RolloutEngine, SamplingParams


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


def evaluate(engine: RolloutEngine, env: Environment, tokenizer: PreTrainedTokenizerBase, max_new_tokens: int) -> dict:
    """Greedy decoding on every held-out problem; accuracy = share scored exactly 1 by the task."""
    problems = env.eval_problems()
    started = time.perf_counter()
    episodes = engine.generate(prompt_ids(env, tokenizer, problems), SamplingParams(greedy=True, max_new_tokens=max_new_tokens))
    seconds = time.perf_counter() - started
    correct = 0
    formatted = 0
    samples = []
    for problem, episode in zip(problems, episodes):
        _, components = env.rubric.score(episode.text, problem)
        correct += components["correct"] == 1.0
        formatted += components.get("format", 0.0) == 1.0
        samples.append(
            {
                "question": problem.question,
                "answer": problem.answer,
                "completion": episode.text,
                "correct": components["correct"] == 1.0,
                "tokens": episode.num_tokens,
            }
        )
    n = len(problems)
    tokens = sum(e.num_tokens for e in episodes)
    low, high = wilson_interval(correct, n)
    return {
        "accuracy": correct / n,
        "n": n,
        "ci95": [low, high],
        "format_rate": formatted / n,
        "mean_tokens": tokens / n,
        "truncated_rate": sum(e.truncated for e in episodes) / n,
        "seconds": seconds,
        "tokens_per_second": tokens / seconds if seconds > 0 else 0.0,
        "samples": samples,
    }
