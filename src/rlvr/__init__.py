"""rlvr: train language models into reasoning models with reinforcement learning from verifiable rewards.

The Python API (`rlvr.api`): `rlvr.load_config(recipe, overrides)`, `rlvr.train(config)`, `rlvr.evaluate(model, ...)`,
`rlvr.run_suite(model)` (the regression suite),
`rlvr.rejection_sample(model, out)` (verified answers as chat traces).
Each is imported on first use, so `import rlvr` loads nothing heavy (the sandbox's programs and the scoring
workers import parts of rlvr too).
"""

from __future__ import annotations

from importlib import import_module, metadata
from typing import Any

try:
    __version__ = metadata.version("rlvr")
except metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

_API = {
    "train": "rlvr.api",
    "evaluate": "rlvr.api",
    "run_suite": "rlvr.api",
    "rejection_sample": "rlvr.api",
    "load_config": "rlvr.config",
    "RunConfig": "rlvr.config",
}
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'rlvr' has no attribute {name!r}")
