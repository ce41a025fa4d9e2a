import random

import pytest
import torch

from rlvr.seeds import derive_seed, named_rng, seed_everything


def test_derived_seeds_are_the_documented_formula_and_never_collide():
    assert derive_seed(0, 0) == 0 and derive_seed(0, 5) == 5
    assert derive_seed(3, 7) == 3 * 1_000_003 + 7
    seeds = {derive_seed(seed, index) for seed in range(20) for index in range(500)}
    assert len(seeds) == 20 * 500
    assert derive_seed(derive_seed(10**15, 3), 2) < 2**63  # nested streams of a large seed stay in range
    with pytest.raises(ValueError, match="stream index"):
        derive_seed(1, 1_000_003)


def test_a_named_stream_is_the_string_seed_python_hashes():
    assert named_rng("held-out", 3).random() == random.Random("held-out:3").random()
    assert named_rng("epoch", 1, "a.jsonl", 2).random() != named_rng("epoch", 1, "a.jsonl", 3).random()


def test_seed_everything_replays_torch_draws():
    seed_everything(11)
    first = torch.rand(3)
    seed_everything(11)
    assert torch.equal(first, torch.rand(3))
