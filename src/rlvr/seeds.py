"""Every seed rlvr draws with, derived in one place so that runs are reproducible and streams never collide.

Two kinds of randomness: torch/numpy samplers take an integer seed (`derive_seed`: the seed of the i-th call of a
stream, e.g. one per training step or per evaluation chunk), and data pipelines draw from named Python streams
(`named_rng("mixture", seed, block)`). A string seed is hashed with SHA-512 by `random.Random`, so a named stream is the
same in every process and on every machine, unlike `hash()`.
"""

from __future__ import annotations

import random

# A prime larger than any index a stream reaches (steps, chunks, turns): pairs of a non-negative seed and an index
# map one to one, as long as the result stays below 2**63 (past it, it wraps around).
_STRIDE = 1_000_003


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (what model initialisation and dropout draw from)."""
    import numpy as np
    import torch  # here, not at the top: the config layer imports this module, and `rlvr --help` must not load torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derive_seed(seed: int, index: int) -> int:
    """The seed of call `index` of the stream seeded with `seed`: one seed for every call would replay the same
    random draws in each. Nested streams (a tool turn within a training step) derive again; the result stays below
    2**63, what torch's and vLLM's generators accept."""
    if not 0 <= index < _STRIDE:
        raise ValueError(f"stream index {index} outside [0, {_STRIDE})")
    return (seed * _STRIDE + index) % 2**63


def named_rng(*keys: object) -> random.Random:
    """The Python random stream named by `keys` (e.g. `named_rng("held-out", seed)`), the same in every process."""
    return random.Random(":".join(str(key) for key in keys))
