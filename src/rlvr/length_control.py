"""Length and effort control learned in training: the prompt states how long to think, and the reward pays for
doing so (L1's length-controlled policy optimisation, Aggarwal & Welleck 2025, with named effort levels and the
hybrid models' reasoning switch).

`length_control.efforts` maps effort levels to thinking budgets in tokens ({low: 16, medium: 48, high: 96}); each
training prompt draws one level, seeded by the run's seed, the step and its place in the step, and its system
prompt says so. With `no_reasoning: p`, a share p of the prompts say "reasoning: off" instead, with a target of no
thinking at all. The `thinking_length` reward (`env.rewards`) measures the thinking against the target. At
inference, `rlvr eval --effort LEVEL` and `--no-reasoning` on a model trained this way state the same lines and let
the model keep to them (no budget forcing), so the thinking tokens measured are the model's own.

Leaf module (pydantic and the standard library): the config, the environments and the trainer import it.
"""

from __future__ import annotations

from dataclasses import replace

from pydantic import BaseModel, ConfigDict, Field, field_validator

from rlvr.seeds import named_rng
from rlvr.types import Problem

OFF = "off"  # the level of a prompt with reasoning off
EFFORT, TARGET = "effort", "thinking_target"  # the `problem.meta` keys of a stated effort and its thinking budget


class LengthControlConfig(BaseModel):
    """`length_control:` in a recipe."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    efforts: dict[str, int] = Field({}, description="effort level -> thinking budget in tokens; each prompt draws one")
    no_reasoning: float = Field(0.0, ge=0.0, le=1.0, description="share of training prompts with reasoning off")

    @field_validator("efforts")
    @classmethod
    def _levels(cls, efforts: dict[str, int]) -> dict[str, int]:
        for level, tokens in efforts.items():
            if level == OFF or not level.isidentifier():
                raise ValueError(f"{level!r}: an effort level is a name (low, medium, high), and not {OFF!r}")
            if tokens < 1:
                raise ValueError(f"{level}: a thinking budget is at least 1 token, got {tokens}")
        return efforts

    @property
    def enabled(self) -> bool:
        return bool(self.efforts) or self.no_reasoning > 0

    def check_paid(self, rewards: dict[str, float]) -> None:
        """Stated budgets teach nothing unless the reward pays for keeping to them."""
        if self.enabled and not rewards.get("thinking_length"):
            raise ValueError("it states budgets that a reward must teach: add env.rewards: {thinking_length: 1.0}")

    def draw(self, problem: Problem, seed: int, step: int, index: int) -> Problem:
        """The problem with the effort its prompt states: reasoning off with probability `no_reasoning`, else a
        level drawn uniformly (the same in every rank, resume and machine)."""
        rng = named_rng("effort", seed, step, index)
        if not self.efforts or rng.random() < self.no_reasoning:
            return stated(problem, OFF, 0)
        level = rng.choice(sorted(self.efforts))
        return stated(problem, level, self.efforts[level])


def stated(problem: Problem, level: str, tokens: int) -> Problem:
    """A copy of the problem whose prompt states `level` (a budget of `tokens` thinking tokens; `OFF`: none)."""
    return replace(problem, meta={**problem.meta, EFFORT: level, TARGET: tokens})


def effort_line(problem: Problem) -> str | None:
    """What the prompt says about the thinking: None when the problem states no effort."""
    level = problem.meta.get(EFFORT)
    if level is None:
        return None
    if level == OFF:
        return "Reasoning: off. Write no thinking: give the answer line at once."
    return f"Reasoning effort: {level}. Think for about {problem.meta[TARGET]} tokens."
