"""Scale-out: rollout workers as Ray actors beside the learner, and the asynchronous trainer that feeds on them."""

from rlvr.cluster.async_trainer import AsyncTrainer
from rlvr.cluster.pool import RolloutPool
from rlvr.cluster.records import Published, RolloutRequest, RolloutResult
from rlvr.cluster.worker import ContinuingEngine, RolloutWorker

__all__ = ["AsyncTrainer", "ContinuingEngine", "Published", "RolloutPool", "RolloutRequest", "RolloutResult", "RolloutWorker"]
