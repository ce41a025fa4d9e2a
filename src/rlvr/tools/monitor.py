"""Tool-use metrics per step and per data subset, and the tool-use collapse warning.

RL can teach a model to stop calling a tool as easily as to call it (a tool that errors or costs turns gets
its calls trained away), and the average reward can hide it for a while. So each step logs, overall and per
subset: how often each tool is called, how often calls fail, turns per episode and tool-result tokens; and a
tool whose call rate stays under a threshold for several steps in a row is flagged in the log and progress bar.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from rlvr.types import Episode


def tool_rates(stats: Sequence[dict], tools: Sequence[str], prefix: str = "") -> dict[str, float]:
    """The metrics of episodes' tool statistics (`episode.meta["tools"]`, from the tool loop)."""
    calls = sum(sum(s["calls"].values()) for s in stats)
    metrics = {
        f"{prefix}tools/calls_per_episode": calls / len(stats),
        f"{prefix}tools/error_rate": sum(s["errors"] for s in stats) / calls if calls else 0.0,
        f"{prefix}tools/turns": float(np.mean([s["turns"] for s in stats])),
        f"{prefix}tools/result_tokens": float(np.mean([s["tool_tokens"] for s in stats])),
    }
    for name in tools:  # the share of episodes that called the tool at least once
        metrics[f"{prefix}tools/{name}/call_rate"] = float(np.mean([s["calls"].get(name, 0) > 0 for s in stats]))
    return metrics


def tool_metrics(episodes: Sequence[Episode], tools: Sequence[str], per_subset: bool = False) -> dict[str, float]:
    """`tools/...` over the batch and, with `per_subset`, `<subset>/tools/...` for each data subset."""
    episodes = [e for e in episodes if "tools" in e.meta]
    if not episodes:
        return {}
    metrics = tool_rates([e.meta["tools"] for e in episodes], tools)
    if per_subset:
        subsets: dict[str, list[Episode]] = defaultdict(list)
        for episode in episodes:
            subsets[episode.meta.get("subset", "default")].append(episode)
        for name, members in sorted(subsets.items()):
            metrics.update(tool_rates([e.meta["tools"] for e in members], tools, f"{name}/"))
    return metrics


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
        for name in self.tools:
            rate = metrics.get(f"tools/{name}/call_rate")
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
