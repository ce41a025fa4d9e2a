"""Environments by name (`env.name` in a recipe)."""

from __future__ import annotations

from collections.abc import Callable

from rlvr.config import EnvConfig
from rlvr.envs.base import Environment, Problem, Rubric
from rlvr.envs.gym import GymEnvironment
from rlvr.registry import Registry

ENVIRONMENTS: Registry[Callable[[EnvConfig], Environment]] = Registry("environment")
ENVIRONMENTS["gym"] = GymEnvironment


def make_env(config: EnvConfig) -> Environment:
    return ENVIRONMENTS[config.name](config)


__all__ = ["ENVIRONMENTS", "Environment", "Problem", "Rubric", "make_env"]
