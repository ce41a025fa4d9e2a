"""RL algorithms as small registered functions: advantages, policy losses, corrections and KL estimators."""

from rlvr.algos.advantages import ADVANTAGES, register_advantage
from rlvr.algos.corrections import CORRECTIONS, Correction, mismatch_stats
from rlvr.algos.filters import drop_uniform_groups, mask_truncated
from rlvr.algos.kl import KL_ESTIMATORS
from rlvr.algos.losses import POLICY_LOSSES, LossInputs, LossOutputs, aggregate, loss_normalizer, register_policy_loss
from rlvr.algos.objective import Objective
from rlvr.algos.stats import Stat, StatSums

__all__ = [
    "ADVANTAGES",
    "CORRECTIONS",
    "KL_ESTIMATORS",
    "POLICY_LOSSES",
    "Correction",
    "LossInputs",
    "LossOutputs",
    "Objective",
    "Stat",
    "StatSums",
    "aggregate",
    "drop_uniform_groups",
    "loss_normalizer",
    "mask_truncated",
    "mismatch_stats",
    "register_advantage",
    "register_policy_loss",
]
