"""What travels between the learner and its rollout workers: plain, picklable records (Ray ships them by pickle)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rlvr.rollout.base import SamplingParams
from rlvr.types import Episode, Problem


@dataclass(frozen=True)
class Published:
    """One version of the learner's weights, as workers fetch it: `weights` is a handle (a Ray object reference) to
    the tensors, which a worker fetches only when it holds an older version; None when the version was broadcast
    into the workers' buffers (`cluster.weight_sync: collective`)."""

    version: int
    weights: Any


@dataclass
class RolloutRequest:
    """One training step's prompts: a worker samples `group_size` completions of each."""

    step: int  # 0-based, as the trainer counts
    problems: list[Problem]
    prompts: list[list[int]]
    group_size: int
    sampling: SamplingParams
    attempt: int = 0  # how often it was sent again (a dead or hung worker, stale samples)


@dataclass
class RolloutResult:
    """A request's unscored episodes, the policy version that sampled them, and where the worker's time went."""

    step: int
    episodes: list[Episode]
    worker: int
    version: int  # the policy version every episode started on (their oldest tokens')
    generate_seconds: float
    load_seconds: float  # fetching and loading new weights before (and, in_flight: continue, during) the call
    weight_loads: int = 0
    started_at: float = 0.0  # the worker's wall clock when the call began, and when it returned
    finished_at: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)
