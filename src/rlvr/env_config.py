"""`env:` in a recipe: one config type per environment, told apart by `name` (a discriminated union).

Each environment reads only its own keys (`task` for gym, `sources` for mixture, the world's options for searchqa),
so a key another environment reads is an unknown key here, with the valid ones listed. What every environment
shares (prompt, rewards, held-out split, seeds) is `EnvCommon`. An environment registered by a plugin gets
`PluginEnvConfig`: the shared keys, plus an `options` mapping for it to validate itself.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationInfo, field_validator, model_validator

from rlvr.data import Source
from rlvr.registry import name_tag, registered


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class EnvCommon(_Strict):
    name: str  # each environment's config narrows it to its own name: the union's tag
    system_prompt: str | None = None
    demos: str | None = Field(
        None, description="a JSON file of chat messages shown before every question: demonstrations, tool calls included"
    )
    format_reward: float = Field(0.1, ge=0.0, description="reward for a well-formed final answer line")
    correct_weight: float = Field(
        1.0, ge=0.0, description="weight of correctness in the reward; 0 in a control run (accuracy is measured all the same)"
    )
    rewards: dict[Annotated[str, registered("rlvr.rewards", "REWARDS")], float] = Field(
        {}, description="more weighted reward terms next to correct and format, e.g. {length: 1.0}"
    )
    confidence: bool = Field(False, description="ask for a stated confidence after the answer: calibration is measured")
    brier_weight: float = Field(0.0, ge=0.0, description="weight of the Brier-score reward on the stated confidence")
    eval_size: int = Field(200, ge=1, description="held-out problems, shared by weight among the sources")
    eval_seed: int = 1_000_003
    train_seed: int = 17

    @model_validator(mode="after")
    def _brier_needs_confidence(self) -> EnvCommon:
        if self.brier_weight and not self.confidence:
            raise ValueError("brier_weight scores a stated confidence: set confidence: true too")
        return self

    @property
    def label(self) -> str:
        """A short name for titles and summaries (`gym:chain_sum`, `mixture:<subset>+<subset>`, `humaneval`)."""
        return self.name


class GymEnvConfig(EnvCommon):
    """One reasoning-gym task, scored by the task's own scorer."""

    name: Literal["gym"] = "gym"
    task: str = Field("basic_arithmetic", description="the reasoning-gym task")
    task_config: dict[str, Any] = Field({}, description="the task's own options (reasoning-gym's dataset config)")
    difficulty: float | str | None = Field(
        None, description="every problem's difficulty (a number), or the key of each entry's metadata holding it (num_terms)"
    )

    @property
    def label(self) -> str:
        return f"gym:{self.task}"


class MixtureEnvConfig(EnvCommon):
    """Files, `gym:<task>` tasks and benchmarks, drawn by weight."""

    name: Literal["mixture"] = "mixture"
    sources: list[Source] = Field([], validate_default=True, description="the datasets, gym tasks and benchmarks")

    @field_validator("sources")
    @classmethod
    def _not_empty(cls, sources: list[Source]) -> list[Source]:
        if not sources:
            raise ValueError("the mixture environment needs at least one entry in env.sources")
        return sources

    @property
    def label(self) -> str:
        return f"mixture:{'+'.join(s.subset or s.path for s in self.sources)}"


class HumanEvalEnvConfig(EnvCommon):
    """The 164 HumanEval problems, for evaluation only."""

    name: Literal["humaneval"] = "humaneval"


class SearchQAOptions(BaseModel):
    """The searchqa world: its size and seed, and the question mix."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    countries: int = Field(12, ge=1, le=200)
    cities: int = Field(60, ge=1, le=2000)
    people: int = Field(400, ge=1, le=5000)
    organisations: int = Field(150, ge=1, le=2000)
    two_hop_fraction: float = Field(0.5, ge=0.0, le=1.0, description="share of two-hop questions, in training and held out")
    kb_seed: int = Field(0, description="seeds the world; the same options always build the same world")

    @field_validator("cities")
    @classmethod
    def _a_city_per_country(cls, cities: int, info: ValidationInfo) -> int:
        countries = info.data.get("countries", cities)
        if cities < countries:
            raise ValueError(f"every country needs a city, so at least countries ({countries})")
        return cities


class SearchQAEnvConfig(EnvCommon):
    """Questions about a generated fictional world, answered with the `search` tool."""

    name: Literal["searchqa"] = "searchqa"
    task_config: SearchQAOptions = SearchQAOptions()


class VerifiersEnvConfig(EnvCommon):
    """An environment written for the `verifiers` package: its datasets, prompts and rubric (rlvr[verifiers])."""

    name: Literal["verifiers"] = "verifiers"
    id: str = Field(min_length=1, description="what verifiers.load_environment() loads, by module (`vf-arith`, `owner/vf-arith`)")
    args: dict[str, Any] = Field({}, description="keyword arguments of the environment's load_environment()")
    path: str | None = Field(None, description="a folder to import the environment's module from (relative to the recipe)")
    correct: str | None = Field(
        None, description="the rubric's reward function whose 1.0 means correct; default: its first with a positive weight"
    )
    # The environment's rubric has its own format function, so rlvr's is off unless asked for.
    format_reward: float = Field(0.0, ge=0.0, description="rlvr's final-answer-line reward, added to the rubric's")

    @property
    def label(self) -> str:
        return f"verifiers:{self.id}"


class PluginEnvConfig(EnvCommon):
    """An environment a plugin registered: the shared keys, and options it validates itself."""

    name: Annotated[str, registered("rlvr.envs", "ENVIRONMENTS")]
    options: dict[str, Any] = {}


# The tag of each built-in config is the name it narrows `name` to.
BUILTIN_ENVS: dict[str, type[EnvCommon]] = {
    cls.model_fields["name"].default: cls
    for cls in (GymEnvConfig, MixtureEnvConfig, HumanEvalEnvConfig, SearchQAEnvConfig, VerifiersEnvConfig)
}


EnvConfig = Annotated[
    Annotated[GymEnvConfig, Tag("gym")]
    | Annotated[MixtureEnvConfig, Tag("mixture")]
    | Annotated[HumanEvalEnvConfig, Tag("humaneval")]
    | Annotated[SearchQAEnvConfig, Tag("searchqa")]
    | Annotated[VerifiersEnvConfig, Tag("verifiers")]
    | Annotated[PluginEnvConfig, Tag("plugin")],
    Discriminator(
        name_tag(BUILTIN_ENVS, default="gym"),
        custom_error_type="env_name",
        custom_error_message="an environment by name (built in: " + ", ".join(sorted(BUILTIN_ENVS)) + ")",
    ),
]


def env_config_type(name: str) -> type[EnvCommon]:
    """The config type of the environment called `name`."""
    return BUILTIN_ENVS.get(name, PluginEnvConfig)
