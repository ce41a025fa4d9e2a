"""The spike and divergence guard: what the trainer asks before it applies an update and after every step.

Spikes: a robust running estimate (median and MAD over the last `train.guard.window` optimiser steps) of the loss and
the pre-clip gradient norm. An update whose value is more than `spike_mads` MADs above the median is skipped (its
gradients are dropped; the scheduler and the data position advance as usual), so one bad batch cannot undo what the
run learnt. Median and MAD, not mean and standard deviation: the spikes the guard exists for would otherwise inflate
the very scale they are measured against.

Divergence: after each step a table of named checks reads its metrics row (`DIVERGENCE_CHECKS`). A failing check
says which weights first showed the problem, so the trainer rolls back to a checkpoint written before them, never to
one written once the divergence had begun.

Every input is the same on every rank (the gradient norm of the whole gradient, the loss summed over ranks, metrics
of the gathered batch), so every rank decides alike without talking.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from rlvr.config import GuardConfig

SPIKE_WATCHED = ("grad_norm", "loss")  # what a spike is measured on, before an update is applied
# The smallest spread a spike is measured in, per watched value. An on-policy policy-gradient loss sits near 0
# (group-relative advantages sum to zero), so its MAD can be 1e-5 and a harmless 0.002 would read as 150 MADs:
# its deviations count in units of at least 0.01. A grad norm has a real scale of its own.
SPIKE_MIN_SPREAD = {"grad_norm": 0.0, "loss": 0.01}


@dataclass
class RobustWindow:
    """The last `size` values, with their median and median absolute deviation (MAD, unscaled)."""

    size: int
    values: list[float] = field(default_factory=list)

    def push(self, value: float) -> None:
        self.values = [*self.values, value][-self.size :]

    def median(self) -> float:
        return float(np.median(self.values))

    def mad(self) -> float:
        return float(np.median(np.abs(np.asarray(self.values) - self.median())))

    def excess(self, value: float, min_history: int, min_spread: float = 0.0) -> float | None:
        """How many MADs (at least `min_spread`) `value` lies above the median; None while the history is too short
        or has no spread (a window of equal values gives no scale to measure against)."""
        if len(self.values) < min_history:
            return None
        mad = max(self.mad(), min_spread)
        return (value - self.median()) / mad if mad > 0 else None


@dataclass
class Verdict:
    """A failed divergence check."""

    check: str
    detail: str
    bad_weights: int  # the number of updates in the first weights that showed it: no checkpoint from there on is good


@dataclass
class GuardState:
    """What the checkpoint keeps of the guard. `rollbacks`, `lr_scale` and `data_skip` outlive a rollback (they are
    the run's memory of it); the rest is restored with the weights it describes."""

    windows: dict[str, RobustWindow]
    skipped: int = 0  # updates skipped as spikes
    armed: bool = False  # the reward has been above `armed_reward`: a collapse to zero now means something
    collapse_since: int | None = None  # the step whose row began the current run of collapsed rewards
    rollbacks: int = 0
    lr_scale: float = 1.0
    data_skip: int = 0  # steps' worth of prompts skipped past (the windows that diverged)

    PERSISTENT = ("rollbacks", "lr_scale", "data_skip")


Check = Callable[[Mapping[str, Any], int, GuardConfig, GuardState], Verdict | None]
DIVERGENCE_CHECKS: dict[str, Check] = {}


def divergence_check(name: str) -> Callable[[Check], Check]:
    def register(check: Check) -> Check:
        DIVERGENCE_CHECKS[name] = check
        return check

    return register


# A row of step m (1-based) was sampled, scored and differentiated with the weights of m - 1 updates; only the
# weights check looks at the weights the step's own update made.


@divergence_check("non_finite_weights")
def _non_finite_weights(row: Mapping[str, Any], step: int, cfg: GuardConfig, state: GuardState) -> Verdict | None:
    count = row.get("guard/nonfinite_weights", 0)
    return Verdict("non_finite_weights", f"{count} non-finite weights after the update", step) if count else None


@divergence_check("non_finite_loss")
def _non_finite_loss(row: Mapping[str, Any], step: int, cfg: GuardConfig, state: GuardState) -> Verdict | None:
    bad = [key for key in ("loss", "grad_norm") if not math.isfinite(row[key])]
    return Verdict("non_finite_loss", f"{bad[0]} is {row[bad[0]]}", step - 1) if bad else None


@divergence_check("reward_collapse")
def _reward_collapse(row: Mapping[str, Any], step: int, cfg: GuardConfig, state: GuardState) -> Verdict | None:
    if not cfg.collapse_steps or "reward" not in row:  # a run without rewards (fine-tuning) has none to collapse
        return None
    if row["reward"] > cfg.collapse_reward:
        state.collapse_since = None
    elif state.armed and state.collapse_since is None:
        state.collapse_since = step
    state.armed = state.armed or row["reward"] > cfg.armed_reward
    if state.collapse_since is None or step - state.collapse_since + 1 < cfg.collapse_steps:
        return None
    detail = f"reward <= train.guard.collapse_reward={cfg.collapse_reward:g} since step {state.collapse_since}"
    return Verdict("reward_collapse", detail, state.collapse_since - 1)


def _limit(metric: str, key: str) -> Check:
    """A metric that must stay at or below the config's `key` (off while it is null, or absent from the row)."""

    def check(row: Mapping[str, Any], step: int, cfg: GuardConfig, state: GuardState) -> Verdict | None:
        limit, value = getattr(cfg, key), row.get(metric)
        if limit is None or value is None or value <= limit:
            return None
        return Verdict(metric, f"{metric} {value:.4g} > train.guard.{key}={limit:g}", step - 1)

    return check


for _metric, _key in (("entropy", "max_entropy"), ("kl", "max_kl"), ("logprob_mismatch", "max_mismatch")):
    divergence_check(_metric)(_limit(_metric, _key))


class Guard:
    def __init__(self, cfg: GuardConfig) -> None:
        self.cfg = cfg
        self.state = self._fresh()

    def _fresh(self) -> GuardState:
        return GuardState({name: RobustWindow(self.cfg.window) for name in SPIKE_WATCHED})

    @property
    def rollbacks_enabled(self) -> bool:
        return self.cfg.max_rollbacks > 0

    def spike(self, values: Mapping[str, float]) -> str | None:
        """Before an update: the reason to skip it (a spike), or None. Every finite value joins its window either way:
        the median and MAD shrug off the odd spike, and a level that really moved is accepted after a while."""
        reason = None
        for name in SPIKE_WATCHED:
            value, window = values[name], self.state.windows[name]
            if not math.isfinite(value):
                continue  # not a spike: a divergence, which the checks after the step handle
            excess = None
            if self.cfg.spike_mads is not None:
                excess = window.excess(value, self.cfg.min_history, SPIKE_MIN_SPREAD[name])
            if reason is None and excess is not None and excess > self.cfg.spike_mads:
                reason = f"{name} {value:.4g} is {excess:.1f} MADs above its median {window.median():.4g}"
            window.push(value)
        if reason is not None:
            self.state.skipped += 1
        return reason

    def check(self, row: Mapping[str, Any]) -> Verdict | None:
        """After a step: the first failing divergence check on its metrics row. Every check runs, so the stateful ones
        (the reward collapse's run) see every row."""
        verdicts = [check(row, row["step"], self.cfg, self.state) for check in DIVERGENCE_CHECKS.values()]
        return next((verdict for verdict in verdicts if verdict is not None), None)

    def suspect_from(self) -> int | None:
        """Checkpoints from this step on may hold weights a divergence already began in (a collapse still counting)."""
        return None if self.state.collapse_since is None else self.state.collapse_since - 1

    def metrics(self) -> dict[str, float]:
        return {
            "guard/skipped": self.state.skipped,
            "guard/rollbacks": self.state.rollbacks,
            "guard/lr_scale": self.state.lr_scale,
        }

    def rolled_back(self) -> None:
        self.state.rollbacks += 1
        self.state.lr_scale *= self.cfg.lr_factor

    def state_dict(self) -> dict[str, Any]:
        return asdict(self.state)

    def load_state_dict(self, saved: Mapping[str, Any] | None, keep_persistent: bool = False) -> None:
        """Restore a checkpoint's guard (a checkpoint from before the guard: a fresh one). `keep_persistent` (a
        rollback): what outlives a rollback stays as it is now."""
        kept = {name: getattr(self.state, name) for name in GuardState.PERSISTENT}
        state = self._fresh()
        if saved:
            windows = {name: RobustWindow(self.cfg.window, list(w["values"])) for name, w in saved["windows"].items()}
            state = GuardState(**{**saved, "windows": {**state.windows, **windows}})
        if keep_persistent:
            for name, value in kept.items():
                setattr(state, name, value)
        self.state = state
