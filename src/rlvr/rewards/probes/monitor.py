"""The reward-hacking alarm: a probe whose flag rate stays high for several steps in a row.

One flagged episode is noise (a probe can be wrong, a model can stumble into `exit()`); a rate that stays above
`threshold` for `patience` steps is a policy learning the exploit, which the reward curve shows as progress. Like
the tool-use collapse warning, it reads the step's metrics (`rlvr.step_metrics.hack_rates`) and warns once per
run of high steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rlvr.step_metrics import hack_rates


class HackMonitor:
    """Flags a probe whose rate has stayed above `threshold` for `patience` consecutive steps that ran it."""

    def __init__(self, threshold: float, patience: int) -> None:
        self.threshold = threshold
        self.patience = patience
        self.high_steps: dict[str, int] = {}

    def update(self, metrics: Mapping[str, Any]) -> list[str]:
        """The warnings raised by this step's metrics; a probe that did not run this step keeps its count."""
        warnings = []
        for probe, rate in hack_rates(metrics).items():
            self.high_steps[probe] = self.high_steps.get(probe, 0) + 1 if rate > self.threshold else 0
            if self.high_steps[probe] == self.patience:
                warnings.append(
                    f"reward hacking: probe {probe} flagged {rate:.1%} of episodes "
                    f"(above {self.threshold:.0%} for {self.patience} steps)"
                )
        return warnings

    def alarmed(self) -> list[str]:
        return sorted(probe for probe, steps in self.high_steps.items() if steps >= self.patience)

    def state_dict(self) -> dict[str, int]:
        """The counts, for a checkpoint: a resumed run warns at the steps an uninterrupted one would."""
        return dict(self.high_steps)

    def load_state_dict(self, state: Mapping[str, int] | None) -> None:
        self.high_steps = dict(state or {})
