"""The environment every task runs in: a weighted mixture of sources, each split into training and held-out problems.

A source is a user's file or folder (JSONL, CSV, Parquet, `datasets`), a reasoning-gym task (`gym:<task>`), a
packaged benchmark (`humaneval`) or the generated instruction-following problems (`instructions`). Each problem
names its verifier and its subset, so one rubric scores them all and every metric can be broken down per subset.
The `gym` and `humaneval` environments are one-source mixtures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

from rlvr.curriculum import DIFFICULTY
from rlvr.data import Mixture, Row, Source, Stream, load_source, split_held_out
from rlvr.data.source import JUDGE_PROMPT_META
from rlvr.env_config import EnvCommon
from rlvr.envs.base import DEFAULT_SYSTEM_PROMPT, Environment, load_demos, standard_rubric
from rlvr.envs.gym import gym_split
from rlvr.envs.humaneval import humaneval_problems
from rlvr.envs.instructions import instructions_split
from rlvr.errors import ConfigError
from rlvr.rewards.gym import gym_meta
from rlvr.types import Problem


def eval_sizes(sources: Sequence[Source], total: int) -> list[int | None]:
    """Held-out problems per source: its own `eval_size` when set; none for `use: train`; every row (None) for an
    evaluation-only file or benchmark; the rest, generated sources (gym, instructions) included whatever their
    `use`, share `total` in proportion to their weights (largest remainder, so the shares add up to `total` exactly)."""
    sizes: list[int | None] = []
    sharing: list[int] = []
    for index, source in enumerate(sources):
        if source.eval_size is not None:
            sizes.append(source.eval_size)
        elif source.use == "train":
            sizes.append(0)
        elif source.use == "eval" and source.kind not in ("gym", "instructions"):
            sizes.append(None)
        else:
            sizes.append(0)
            sharing.append(index)
    weight = sum(sources[i].weight for i in sharing)
    exact = {i: total * sources[i].weight / weight for i in sharing}
    for i in sharing:
        sizes[i] = math.floor(exact[i])
    left = total - sum(math.floor(value) for value in exact.values())
    for i in sorted(sharing, key=lambda i: exact[i] - math.floor(exact[i]), reverse=True)[:left]:
        sizes[i] = (sizes[i] or 0) + 1
    return sizes


def row_problem(row: Row, source: Source) -> Problem:
    """A loaded row as a problem for its source's verifier; the row's other columns stay in `meta`
    (so `aliases` reach the QA verifiers), with `origin` = `file:line` for tracing a sample back."""
    meta = {**row.extra, "origin": f"{row.source}:{row.line}"}
    if row.tests is not None:
        meta["tests"] = row.tests
    difficulty = source.difficulty_in(row.extra, f"{row.source}:{row.line}")
    if difficulty is not None:
        meta[DIFFICULTY] = difficulty
    if source.judge_prompt is not None:  # the rubric the judge grades this source's answers by
        meta[JUDGE_PROMPT_META] = source.judge_prompt
    if source.verifier == "gym":
        # A row exported from reasoning-gym: its metadata names the task whose scorer checks it.
        metadata = row.extra.get("metadata")
        if not isinstance(metadata, dict) or not isinstance(metadata.get("source_dataset"), str):
            raise ConfigError(
                f"{row.source}:{row.line}: metadata: the gym verifier needs reasoning-gym's metadata with source_dataset"
            )
        meta.update(
            gym_meta(metadata["source_dataset"], {}, {"question": row.question, "answer": row.answer, "metadata": metadata})
        )
    return Problem(row.question, row.answer, source.verifier or "math", row.subset, source.system_prompt, meta)


def _finite_problems(source: Source) -> list[Problem]:
    if source.kind == "humaneval":
        return [
            replace(p, subset=source.subset or p.subset, system_prompt=source.system_prompt or p.system_prompt)
            for p in humaneval_problems()
        ]
    if source.verifier == "code" and not source.fields.tests:
        raise ConfigError(f"{source.path}: the code verifier needs unit tests: name their column in fields.tests")
    rows, _ = load_source(source)
    return [row_problem(row, source) for row in rows]


def _finite_split(source: Source, eval_size: int | None, seed: int) -> tuple[list[Problem], list[Problem]]:
    problems = _finite_problems(source)
    if source.use == "eval" and (eval_size is None or eval_size >= len(problems)):
        return [], problems
    if not eval_size:
        return problems, []
    try:
        return split_held_out(problems, eval_size, seed)
    except ConfigError as exc:
        raise ConfigError(f"{source.path}: {exc}") from None


class MixtureEnvironment(Environment):
    def __init__(self, config: EnvCommon, sources: Sequence[Source], keys: Sequence[tuple[str, str]] | None = None) -> None:
        """`keys`: per source, the config keys that name its gym task and task config, for error messages."""
        keys = keys or [(f"env.sources.{i}.path", f"env.sources.{i}.task_config") for i in range(len(sources))]
        self.system_prompt = config.system_prompt or DEFAULT_SYSTEM_PROMPT
        self.demos = load_demos(config.demos)
        self.rubric = standard_rubric(config)
        self.sources = list(sources)
        self._held_out: list[Problem] = []
        trainable: list[tuple[Source, list[Problem] | Stream[Problem]]] = []
        for source, size, source_keys in zip(self.sources, eval_sizes(self.sources, config.eval_size), keys):
            train: list[Problem] | Stream[Problem] | None
            if source.kind == "gym":
                train, held_out = gym_split(source, size or 0, config.train_seed, config.eval_seed, source_keys)
            elif source.kind == "instructions":
                train, held_out = instructions_split(source, size or 0)
            else:
                train, held_out = _finite_split(source, size, config.eval_seed)
            self._held_out += held_out
            if source.use != "eval" and train is not None:  # split_held_out already refused to hold out every row
                trainable.append((source, train))
        self._mixture = Mixture(trainable, seed=config.train_seed) if trainable else None
        finite = [train for _, train in trainable if isinstance(train, list)]
        self._pool = [p for rows in finite for p in rows] if trainable and len(finite) == len(trainable) else None

    def train_problems(self, start: int, count: int) -> list[Problem]:
        if self._mixture is None:
            raise ConfigError("env: every source is `use: eval`, there is nothing to train on")
        return self._mixture.rows(start, count)

    def eval_problems(self) -> list[Problem]:
        return list(self._held_out)

    def train_pool(self) -> list[Problem] | None:
        return list(self._pool) if self._pool is not None else None

    def subsets(self) -> set[str]:
        # A training-only source has no held-out rows, and a subset column can name more than the sources do.
        return {s.subset or s.path for s in self.sources} | super().subsets()
