"""RL algorithms as small registered functions."""

from rlvr.algos.advantages import ADVANTAGES, register_advantage
from rlvr.algos.filters import drop_uniform_groups, mask_truncated
from rlvr.algos.importance import mismatch_stats, tis_weights
from rlvr.algos.losses import POLICY_LOSSES, LossInputs, LossSettings, aggregate, loss_normalizer, register_policy_loss

__all__ = [
    "ADVANTAGES",
    "POLICY_LOSSES",
    "LossInputs",
    "LossSettings",
    "aggregate",
    "drop_uniform_groups",
    "loss_normalizer",
    "mask_truncated",
    "mismatch_stats",
    "register_advantage",
    "register_policy_loss",
    "tis_weights",
]
