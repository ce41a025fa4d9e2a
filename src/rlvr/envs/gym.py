"""reasoning-gym tasks as mixture sources: a fixed held-out split and an endless training stream that avoids it."""

from __future__ import annotations

from typing import Any

from rlvr.curriculum import DIFFICULTY
from rlvr.data import Source
from rlvr.errors import ConfigError
from rlvr.rewards.gym import gym_dataset, gym_meta
from rlvr.types import Problem

# Procedural tasks are endless; this only bounds the index space of the training stream.
_STREAM_SIZE = 10_000_000
# A task whose generator keeps producing held-out questions has too small a problem space to train on.
_MAX_SKIPPED = 100_000


def gym_problem(source: Source, dataset: Any, index: int) -> Problem:
    entry = dataset[index]
    difficulty = source.difficulty_in(entry.get("metadata") or {}, f"{source.path} problem {index}: metadata")
    return Problem(
        question=entry["question"],
        answer=str(entry["answer"]),
        verifier=source.verifier or "gym",
        subset=source.subset or source.gym_task,
        system_prompt=source.system_prompt,
        meta={
            **gym_meta(source.gym_task, source.task_config, entry),
            "index": index,
            **({DIFFICULTY: difficulty} if difficulty is not None else {}),
        },
    )


class GymStream:
    """Training problems of one task: item k is the k-th problem of the seeded stream whose question is not held out."""

    def __init__(self, source: Source, seed: int, held_out: set[str], keys: tuple[str, str]) -> None:
        self.source = source
        self._dataset = gym_dataset(source.gym_task, source.task_config, seed, _STREAM_SIZE, keys)
        self._held_out = held_out
        self._indices: list[int] = []
        self._scanned = 0

    def __getitem__(self, k: int) -> Problem:
        while len(self._indices) <= k:
            if self._dataset[self._scanned]["question"] not in self._held_out:
                self._indices.append(self._scanned)
            self._scanned += 1
            if self._scanned - len(self._indices) > _MAX_SKIPPED:
                raise ConfigError(f"{self.source.path}: too few distinct problems outside the held-out split")
        return gym_problem(self.source, self._dataset, self._indices[k])


def gym_split(
    source: Source, eval_size: int, train_seed: int, eval_seed: int, keys: tuple[str, str]
) -> tuple[GymStream | None, list[Problem]]:
    """(training stream, held-out problems): the held-out split is the first `eval_size` problems of the task
    generated with `eval_seed`; training draws from `train_seed` and skips every held-out question."""
    held_out: list[Problem] = []
    if eval_size:
        dataset = gym_dataset(source.gym_task, source.task_config, eval_seed, eval_size, keys)
        held_out = [gym_problem(source, dataset, i) for i in range(eval_size)]
    if source.use == "eval":
        return None, held_out
    return GymStream(source, train_seed, {p.question for p in held_out}, keys), held_out
