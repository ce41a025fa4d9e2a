"""reasoning-gym tasks, scored by each task's own `score_answer`.

A gym problem carries its task name, the task config and the generated entry (`question`, `answer`,
`metadata`) in `problem.meta`; the verifier rebuilds the task's dataset object from name and config (cached
per process) and asks it to score the extracted answer. Only plain data travels, so problems can be scored
in worker processes, and rows exported from reasoning-gym into a user's JSONL file score the same way.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from rlvr.errors import ConfigError
from rlvr.rewards.answers import extract_answer, squash
from rlvr.rewards.base import register_verifier
from rlvr.types import Problem


def gym_dataset(task: str, task_config: dict[str, Any], seed: int, size: int, keys: tuple[str, str] = ("task", "task_config")):
    """`reasoning_gym.create_dataset`; an unknown task or a bad config is a one-line ConfigError naming the
    config key that holds it (`keys`: where the task name and where its config were written)."""
    import reasoning_gym
    from reasoning_gym.factory import DATASETS

    task_key, config_key = keys
    if task not in DATASETS:
        raise ConfigError(f"{task_key}: unknown reasoning-gym task {task!r} (e.g. {', '.join(sorted(DATASETS)[:12])}, ...)")
    try:
        return reasoning_gym.create_dataset(task, seed=seed, size=size, **task_config)
    except (TypeError, ValueError, AssertionError) as exc:
        raise ConfigError(f"{config_key}: invalid for {task}: {exc}") from None


@lru_cache(maxsize=64)
def _scorer(task: str, config_json: str):
    # score_answer depends on the task's config, never on the seed or size of the dataset that made the entry.
    return gym_dataset(task, json.loads(config_json), seed=0, size=1).score_answer


def gym_meta(task: str, task_config: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """What `problem.meta` holds for the `gym` verifier."""
    return {"task": task, "task_config": task_config, "entry": entry}


def score_gym_answer(answer: str, meta: dict[str, Any]) -> float:
    config_json = json.dumps(meta.get("task_config") or {}, sort_keys=True)
    return float(_scorer(meta["task"], config_json)(answer, meta["entry"]))


@register_verifier("gym", vote=lambda text: squash(extract_answer(text)))
def gym_reward(text: str, problem: Problem) -> float:
    """The task's own scorer on the extracted final answer (`extract_answer`: the `<answer>` tag, which may span
    lines for grid answers, else the `Answer:` line, else the last number); 1.0 is correct, and some tasks give
    partial credit below it."""
    answer = extract_answer(text)
    if answer is None:
        return 0.0
    return score_gym_answer(answer, problem.meta)
