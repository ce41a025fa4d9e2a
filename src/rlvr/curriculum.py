"""Which prompts a training step samples: a difficulty schedule promoted by measured accuracy, and the prompts the
model always or never solves filtered out *before* sampling, from the pass rate measured at their last visit.

Dynamic sampling (DAPO) pays for a group and then drops it when every answer scored alike; this module spends no
rollout on such a prompt in the first place:

- **Pass-rate filter** (`curriculum.filter`): a prompt whose last visit's pass rate was at or below `low` or at or
  above `high` (with at least `min_attempts` answers) is skipped, except with probability `revisit`, so that a
  prompt the model has since learned (or forgotten) can come back, as GRESO's selective rollouts do. It only acts
  on prompts seen before: the files of a finite pool, which training cycles through; a generated stream
  (reasoning-gym) rarely repeats a question, so there it does little.
- **Difficulty schedule** (`curriculum.schedule`): every problem has a difficulty (its source's `difficulty`, a
  number or the field holding one), and the schedule lists levels, easiest first. At level d a prompt is drawn only
  if its difficulty is at most d (and above the previous level, with `keep_easier: false`); after `patience` steps
  in a row whose training accuracy on the level's own prompts reached `promote_at`, the next level begins.

Both skip problems of the training stream in order; the position in the stream, the level and the pass rates are
the trainer's checkpoint state, so a resumed run draws what an uninterrupted one would, and a rollback (which keeps
them) never draws an abandoned window's prompts again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rlvr.errors import ConfigError
from rlvr.seeds import named_rng
from rlvr.types import Episode, Problem

DIFFICULTY = "difficulty"  # the `problem.meta` key of a problem's difficulty (a number)


class CurriculumConfig(BaseModel):
    """`curriculum:` in a recipe."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schedule: tuple[float, ...] = Field((), description="difficulty levels, easiest first; empty: every difficulty at once")
    promote_at: float = Field(0.7, gt=0.0, le=1.0, description="training accuracy on a level's prompts that promotes")
    patience: int = Field(2, ge=1, description="steps in a row at promote_at or above before the next level begins")
    keep_easier: bool = Field(True, description="a level draws easier prompts too; false: only those above the last level")
    filter: bool = Field(False, description="skip prompts whose pass rate at their last visit was <= low or >= high")
    low: float = Field(0.0, ge=0.0, lt=1.0, description="a pass rate at or below this is skipped: never solved")
    high: float = Field(1.0, gt=0.0, le=1.0, description="a pass rate at or above this is skipped: always solved")
    min_attempts: int = Field(4, ge=1, description="answers a visit needs before its pass rate counts")
    revisit: float = Field(0.1, ge=0.0, le=1.0, description="chance a filtered prompt is sampled all the same")
    max_scan: int = Field(1000, ge=1, description="stream problems scanned per prompt drawn before the run stops")

    @model_validator(mode="after")
    def _check(self) -> CurriculumConfig:
        if any(b <= a for a, b in zip(self.schedule, self.schedule[1:])):
            raise ValueError(f"schedule: levels must increase, got {list(self.schedule)}")
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.schedule) or self.filter


def prompt_key(problem: Problem) -> str:
    """A problem's identity across visits: its subset and question (the same in every process)."""
    return hashlib.blake2b(f"{problem.subset}\x00{problem.question}".encode(), digest_size=12).hexdigest()


def difficulty_of(problem: Problem) -> float | None:
    value = problem.meta.get(DIFFICULTY)
    return None if value is None else float(value)


def _scheduled_difficulty(problem: Problem) -> float:
    difficulty = difficulty_of(problem)
    if difficulty is None:
        raise ConfigError(
            f"curriculum.schedule: a {problem.subset!r} problem has no difficulty; give its source a `difficulty` "
            "(a number, or the field holding each problem's)"
        )
    return difficulty


@dataclass(frozen=True)
class Draw:
    """One step's prompts, and what was skipped to find them."""

    problems: list[Problem]
    filtered: int  # seen before, pass rate outside (low, high)
    passed_over: int  # outside the current level
    difficulty: float | None = None  # the level they were drawn at (None without a schedule)


class Curriculum:
    """The training stream as the curriculum lets it through. `stream(start, count)` is the environment's
    `train_problems`; every rank holds an identical copy, fed the same (gathered) episodes."""

    def __init__(self, config: CurriculumConfig, seed: int, stream: Callable[[int, int], list[Problem]]) -> None:
        self.config = config
        self.seed = seed
        self.stream = stream
        self.cursor = 0  # the next stream index to look at
        self.level = 0  # index into config.schedule
        self.streak = 0  # steps in a row at promote_at or above, on the current level
        self.pass_rates: dict[str, float] = {}  # prompt key -> pass rate at its last visit

    # ---- what to draw --------------------------------------------------
    @property
    def bounds(self) -> tuple[float, float] | None:
        """(above, up to) the difficulties the current level draws; None without a schedule."""
        schedule = self.config.schedule
        if not schedule:
            return None
        above = schedule[self.level - 1] if self.level and not self.config.keep_easier else float("-inf")
        return above, schedule[self.level]

    def _at_level(self, problem: Problem) -> bool:
        bounds = self.bounds
        if bounds is None:
            return True
        return bounds[0] < _scheduled_difficulty(problem) <= bounds[1]

    def _filtered(self, problem: Problem, index: int) -> bool:
        if not self.config.filter:
            return False
        key = prompt_key(problem)
        rate = self.pass_rates.get(key)
        if rate is None or self.config.low < rate < self.config.high:
            return False
        return named_rng("curriculum-revisit", self.seed, key, index).random() >= self.config.revisit

    def draw(self, count: int) -> Draw:
        """The next `count` prompts the curriculum admits, in stream order; the cursor moves past the last one."""
        chosen: list[Problem] = []
        filtered = passed_over = 0
        limit = self.cursor + self.config.max_scan * count
        while len(chosen) < count:
            if self.cursor >= limit:
                level = "" if self.bounds is None else f" at difficulty <= {self.bounds[1]:g}"
                raise ConfigError(
                    f"curriculum: {len(chosen)} of {count} prompts{level} in {self.config.max_scan * count} problems of "
                    f"the training stream ({filtered} filtered by pass rate, {passed_over} of other levels)"
                )
            chunk = self.stream(self.cursor, count - len(chosen))
            for problem in chunk:
                index, self.cursor = self.cursor, self.cursor + 1
                if not self._at_level(problem):
                    passed_over += 1
                elif self._filtered(problem, index):
                    filtered += 1
                else:
                    chosen.append(problem)
                    if len(chosen) == count:
                        break
        level = self.config.schedule[self.level] if self.config.schedule else None
        return Draw(chosen, filtered, passed_over, level)

    # ---- what was measured ----------------------------------------------
    def observe(self, problems: Sequence[Problem], episodes: Sequence[Episode]) -> str | None:
        """Record the step's pass rates (episode.group indexes `problems`) and promote when the level is learned;
        returns a line announcing a promotion, else None."""
        correct: dict[int, list[bool]] = {}
        for episode in episodes:
            correct.setdefault(episode.group, []).append(episode.rewards.get("correct", 0.0) == 1.0)
        if self.config.filter:
            for group, answers in correct.items():
                if len(answers) >= self.config.min_attempts:
                    self.pass_rates[prompt_key(problems[group])] = sum(answers) / len(answers)
        bounds = self.bounds
        if bounds is None or self.level + 1 >= len(self.config.schedule):
            return None
        floor = self.config.schedule[self.level - 1] if self.level else float("-inf")
        own = [a for group, answers in correct.items() if floor < _scheduled_difficulty(problems[group]) for a in answers]
        if not own:
            return None  # no prompt of this level in the step: no evidence either way
        accuracy = sum(own) / len(own)
        self.streak = self.streak + 1 if accuracy >= self.config.promote_at else 0
        if self.streak < self.config.patience:
            return None
        self.level, self.streak = self.level + 1, 0
        return (
            f"curriculum: difficulty {self.config.schedule[self.level - 1]:g} -> {self.config.schedule[self.level]:g} "
            f"(accuracy {accuracy:.0%} on its prompts, {self.config.patience} steps at >= {self.config.promote_at:.0%})"
        )

    def metrics(self, draw: Draw) -> dict[str, float]:
        rows: dict[str, float] = {"curriculum/filtered": draw.filtered, "curriculum/passed_over": draw.passed_over}
        if self.config.filter:
            rows["curriculum/tracked_prompts"] = len(self.pass_rates)
        if draw.difficulty is not None:  # the step's level, even when the step promoted
            rows["curriculum/difficulty"] = draw.difficulty
        return rows

    # ---- checkpoint state ----------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"cursor": self.cursor, "level": self.level, "streak": self.streak, "pass_rates": dict(self.pass_rates)}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if state is None:  # a checkpoint from before the curriculum was turned on: from the start
            return
        self.cursor, self.level, self.streak = state["cursor"], state["level"], state["streak"]
        self.pass_rates = dict(state["pass_rates"])
