"""Any reasoning-gym task as an environment, scored by the task's own scorer."""

from __future__ import annotations

from typing import Any

from rlvr.config import ConfigError, EnvConfig
from rlvr.envs.base import DEFAULT_SYSTEM_PROMPT, Environment, Problem, Rubric

# Procedural tasks are endless; this only bounds the index space of the training stream.
_STREAM_SIZE = 10_000_000


def _dataset(task: str, task_config: dict[str, Any], seed: int, size: int):
    import reasoning_gym
    from reasoning_gym.factory import DATASETS

    if task not in DATASETS:
        raise ConfigError(f"env.task: unknown reasoning-gym task {task!r} (e.g. {', '.join(sorted(DATASETS)[:12])}, ...)")
    try:
        return reasoning_gym.create_dataset(task, seed=seed, size=size, **task_config)
    except (TypeError, ValueError, AssertionError) as exc:
        raise ConfigError(f"env.task_config: invalid for {task}: {exc}") from None


class GymEnvironment(Environment):
    def __init__(self, config: EnvConfig) -> None:
        self.task = config.task
        self.system_prompt = config.system_prompt or DEFAULT_SYSTEM_PROMPT
        self.rubric = Rubric({"correct": 1.0, "format": config.format_reward})
        self._train = _dataset(config.task, config.task_config, config.train_seed, _STREAM_SIZE)
        self._eval = _dataset(config.task, config.task_config, config.eval_seed, config.eval_size)
        self._held_out = [self._problem(self._eval, i) for i in range(config.eval_size)]
        self._held_out_questions = {p.question for p in self._held_out}
        # Indices into the training dataset, skipping any question that is also held out.
        self._train_indices: list[int] = []
        self._scanned = 0

    def _problem(self, dataset, index: int) -> Problem:
        entry = dataset[index]
        return Problem(
            question=entry["question"],
            answer=str(entry["answer"]),
            score=lambda answer, entry=entry: dataset.score_answer(answer, entry),
            subset=self.task,
            meta={"index": index},
        )

    def train_problems(self, start: int, count: int) -> list[Problem]:
        while len(self._train_indices) < start + count:
            if self._train[self._scanned]["question"] not in self._held_out_questions:
                self._train_indices.append(self._scanned)
            self._scanned += 1
            if self._scanned - len(self._train_indices) > 100_000:
                raise ConfigError(f"env: the {self.task} task has too few distinct problems outside the held-out split")
        return [self._problem(self._train, i) for i in self._train_indices[start : start + count]]

    def eval_problems(self) -> list[Problem]:
        return list(self._held_out)
