"""Environments by name (`env.name` in a recipe): each builds the mixture of sources it stands for."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rlvr.data import GYM_PREFIX, HUMANEVAL, Source
from rlvr.env_config import (
    EnvCommon,
    GymEnvConfig,
    HumanEvalEnvConfig,
    MixtureEnvConfig,
    SearchQAEnvConfig,
    VerifiersEnvConfig,
)
from rlvr.envs.base import Environment, standard_rubric
from rlvr.envs.mixture import MixtureEnvironment
from rlvr.envs.searchqa import SearchQAEnvironment
from rlvr.envs.verifiers_env import VerifiersEnvironment
from rlvr.errors import ConfigError
from rlvr.registry import Registry

# name -> factory(the environment's config, one of rlvr.env_config's types; a plugin's gets PluginEnvConfig)
ENVIRONMENTS: Registry[Callable[[Any], Environment]] = Registry("environment")


@ENVIRONMENTS.register("mixture")
def mixture(config: MixtureEnvConfig) -> Environment:
    """`env.sources`: files, `gym:<task>` tasks and benchmarks, drawn by weight."""
    return MixtureEnvironment(config, config.sources)


@ENVIRONMENTS.register("gym")
def gym(config: GymEnvConfig) -> Environment:
    """One reasoning-gym task (`env.task`, `env.task_config`), scored by the task's own scorer."""
    source = Source(path=f"{GYM_PREFIX}{config.task}", task_config=config.task_config, difficulty=config.difficulty)
    return MixtureEnvironment(config, [source], keys=[("env.task", "env.task_config")])


@ENVIRONMENTS.register("humaneval")
def humaneval(config: HumanEvalEnvConfig) -> Environment:
    """The 164 HumanEval problems, for evaluation only: to train on code, mix `humaneval` or a file with tests
    into `env.sources` with `use: both`."""
    return MixtureEnvironment(config, [Source(path=HUMANEVAL, use="eval")])


@ENVIRONMENTS.register("searchqa")
def searchqa(config: SearchQAEnvConfig) -> Environment:
    """Questions about a generated fictional world, answered with the `search` tool (env.task_config: countries,
    cities, people, organisations, two_hop_fraction, kb_seed)."""
    return SearchQAEnvironment(config)


@ENVIRONMENTS.register("verifiers")
def verifiers(config: VerifiersEnvConfig) -> Environment:
    """An environment written for the `verifiers` package (env.id, env.args; rlvr[verifiers]): its dataset,
    eval_dataset, prompts and rubric."""
    return VerifiersEnvironment(config)


def make_env(config: EnvCommon) -> Environment:
    env = ENVIRONMENTS[config.name](config)
    if config.confidence and not env.rubric.confidence:
        raise ConfigError(f"env.confidence: the {config.name} environment's rubric does not read a stated confidence")
    return env


__all__ = ["ENVIRONMENTS", "Environment", "MixtureEnvironment", "make_env", "standard_rubric"]
