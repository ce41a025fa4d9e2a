"""Greedy accuracy on an environment's held-out split, with a 95% Wilson interval."""

from __future__ import annotations

import math
import time
from collections import defaultdict

from transformers import PreTrainedTokenizerBase

from rlvr.envs import Environment
from rlvr.rollout import RolloutEngine, SamplingParams
from rlvr.scoring import Scorer


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


def _accuracy(correct: int, n: int) -> dict:
    low, high = wilson_interval(correct, n)
    return {"accuracy": correct / n if n else 0.0, "n": n, "ci95": [low, high]}


def evaluate(
    engine: RolloutEngine, env: Environment, tokenizer: PreTrainedTokenizerBase, max_new_tokens: int, scorer: Scorer
) -> dict:
    """Greedy decoding on every held-out problem; accuracy = share scored exactly 1 by the problem's verifier,
    overall and, when the split mixes several, per subset."""
    problems = env.eval_problems()
    started = time.perf_counter()
    episodes = engine.generate(prompt_ids(env, tokenizer, problems), SamplingParams(greedy=True, max_new_tokens=max_new_tokens))
    seconds = time.perf_counter() - started
    scores = scorer.score_episodes(episodes, problems, max_new_tokens)
    samples = [
        {
            "question": problem.question,
            "answer": problem.answer,
            "subset": problem.subset,
            "completion": episode.text,
            "correct": score.components["correct"] == 1.0,
            "tokens": episode.num_tokens,
            **({"score_error": score.error} if score.error else {}),
        }
        for problem, episode, score in zip(problems, episodes, scores)
    ]
    n = len(problems)
    tokens = sum(e.num_tokens for e in episodes)
    by_subset: dict[str, list[bool]] = defaultdict(list)
    for sample in samples:
        by_subset[sample["subset"]].append(sample["correct"])
    result = {
        **_accuracy(sum(s["correct"] for s in samples), n),
        "format_rate": sum(score.components.get("format", 0.0) == 1.0 for score in scores) / n,
        "mean_tokens": tokens / n,
        "truncated_rate": sum(e.truncated for e in episodes) / n,
        "score_errors": sum(score.error is not None for score in scores),
        "seconds": seconds,
        "tokens_per_second": tokens / seconds if seconds > 0 else 0.0,
    }
    if len(by_subset) > 1:
        result["subsets"] = {name: _accuracy(sum(c), len(c)) for name, c in sorted(by_subset.items())}
    result["samples"] = samples
    return result
