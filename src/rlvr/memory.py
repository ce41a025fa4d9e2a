"""Peak memory per phase of a step (rollout, train, weight sync), for the metrics.

On a GPU it is the peak of allocated CUDA memory within each phase, the number that decides whether a colocated
engine and the learner fit together. A CPU process cannot reset its peak RSS, so there each phase reports the
process's peak so far, which still shows which phase first reached it.
"""

from __future__ import annotations

import resource
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def peak_rss_gb() -> float:
    """This process's peak resident memory: Linux reports KiB, macOS bytes."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**30 if sys.platform == "darwin" else 2**20)


class PhaseMemory:
    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peaks: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        try:
            yield
        finally:
            if self.device.type == "cuda":
                self.peaks[name] = torch.cuda.max_memory_allocated(self.device) / 2**30
            else:
                self.peaks[name] = peak_rss_gb()

    def metrics(self) -> dict[str, float]:
        unit = "gpu_gb" if self.device.type == "cuda" else "peak_rss_gb"
        return {f"memory/{name}_{unit}": round(peak, 3) for name, peak in self.peaks.items()}
