"""The tool-use collapse warning.

RL can teach a model to stop calling a tool as easily as to call it (a tool that errors or costs turns gets
its calls trained away), and the average reward can hide it for a while. So each step logs, overall and per
subset, how often each tool is called, how often calls fail, turns per episode and tool-result tokens
(`rlvr.step_metrics.tool_metrics`); a tool whose call rate stays under a threshold for several steps in a row is
flagged in the log and progress bar.
"""

from __future__ import annotations

from collections.abc import Sequence

from rlvr.step_metrics import call_rates


class CollapseMonitor:
    """Flags a tool whose call rate has stayed below `threshold` for `patience` consecutive steps."""

    def __init__(self, tools: Sequence[str], threshold: float, patience: int) -> None:
        self.tools = list(tools)
        self.threshold = threshold
        self.patience = patience
        self.low_steps = dict.fromkeys(self.tools, 0)

    def update(self, metrics: dict[str, float]) -> list[str]:
        """The warnings raised by this step's metrics (each tool warns once per run of low steps)."""
        warnings = []
        rates = call_rates(metrics)
        for name in self.tools:
            rate = rates.get(name)
            if rate is None:
                continue
            self.low_steps[name] = self.low_steps[name] + 1 if rate < self.threshold else 0
            if self.low_steps[name] == self.patience:
                warnings.append(
                    f"tool-use collapse: {name} call rate below {self.threshold:.0%} for {self.patience} steps (now {rate:.1%})"
                )
        return warnings

    def collapsed(self) -> list[str]:
        return [name for name in self.tools if self.low_steps[name] >= self.patience]

    def state_dict(self) -> dict[str, int]:
        """The counts, for a checkpoint: a resumed run warns at the steps an uninterrupted one would."""
        return dict(self.low_steps)

    def load_state_dict(self, state: dict[str, int] | None) -> None:
        self.low_steps = dict.fromkeys(self.tools, 0) | {k: v for k, v in (state or {}).items() if k in self.low_steps}
