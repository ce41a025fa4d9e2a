"""Peak memory per phase of a step (rollout, train, weight sync), for the metrics.

On a GPU it is the peak of allocated CUDA memory within each phase, the number that decides whether a colocated
engine and the learner fit together. A CPU process cannot reset its peak RSS, so there each phase reports the
process's peak so far, which still shows which phase first reached it.
"""

from __future__ import annotations

import ctypes
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


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8


def release_freed_memory(threshold_bytes: int = 1 << 16) -> bool:
    """Have glibc give freed memory back to the system at once: blocks above `threshold_bytes` get their own
    mapping (unmapped when freed) and the heap is trimmed past it, with two arenas instead of one per thread.

    By default glibc keeps what a step's temporaries freed (gradients, logits chunks) for reuse, so the process's
    resident memory only grows, and the peak is what a phase needs plus what the phases before it left behind.
    The cost is a page fault for each new large block: a little slower. False where this is not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        settings = ((_M_MMAP_THRESHOLD, threshold_bytes), (_M_TRIM_THRESHOLD, threshold_bytes), (_M_ARENA_MAX, 2))
        return all(libc.mallopt(option, value) == 1 for option, value in settings)
    except (OSError, AttributeError):
        return False
