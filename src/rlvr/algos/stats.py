"""What a loss or a correction reports, each statistic with the way it is reduced over the batch.

Micro-batches add up (`StatSums`) so that a step reports one number per statistic whatever its micro-batch size:
a token mean over every loss token of the batch, a sequence mean over its sequences, or the extreme value.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch

Reduce = Literal["token_mean", "sequence_mean", "max", "min"]


@dataclass(frozen=True)
class Stat:
    value: torch.Tensor  # [sequences, tokens] for token_mean; [sequences] for sequence_mean; any shape for max/min
    reduce: Reduce = "token_mean"


@dataclass
class StatSums:
    """Sums (and extremes) of statistics over micro-batches and epochs."""

    sums: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    counts: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    extremes: dict[str, float] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)  # "max" or "min", per extreme

    def add(self, stats: Mapping[str, Stat], mask: torch.Tensor) -> None:
        for name, stat in stats.items():
            value = stat.value.detach().float()
            if stat.reduce == "token_mean":
                self.sums[name] += float((value * mask).sum())
                self.counts[name] += float(mask.sum())
            elif stat.reduce == "sequence_mean":
                self.sums[name] += float(value.sum())
                self.counts[name] += value.numel()
            else:
                masked = value if value.shape != mask.shape else value[mask.bool()]
                if masked.numel():
                    pick = max if stat.reduce == "max" else min
                    self.kinds[name] = stat.reduce
                    found = float(masked.max() if stat.reduce == "max" else masked.min())
                    self.extremes[name] = pick(self.extremes.get(name, found), found)

    @classmethod
    def merged(cls, parts: list[StatSums]) -> StatSums:
        """The sums of several ranks' batches as one batch's."""
        total = cls()
        for part in parts:
            for name, value in part.sums.items():
                total.sums[name] += value
                total.counts[name] += part.counts[name]
            for name, value in part.extremes.items():
                pick = max if part.kinds[name] == "max" else min
                total.extremes[name] = pick(total.extremes.get(name, value), value)
                total.kinds[name] = part.kinds[name]
        return total

    def result(self) -> dict[str, float]:
        means = {name: total / self.counts[name] if self.counts[name] else 0.0 for name, total in self.sums.items()}
        return {**means, **self.extremes}
