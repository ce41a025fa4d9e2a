"""Rollout engines behind one interface, chosen by name in `rollout.engine`."""

from __future__ import annotations

from collections.abc import Callable

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlvr.rollout.base import RolloutEngine, SamplingParams
from rlvr.rollout.hf import TransformersEngine

# name -> factory(policy model, tokenizer, batch size) -> engine
EngineFactory = Callable[[PreTrainedModel, PreTrainedTokenizerBase, int], RolloutEngine]
ENGINES: dict[str, EngineFactory] = {
    "transformers": lambda model, tokenizer, batch_size: TransformersEngine(model, tokenizer, batch_size),
}

__all__ = ["ENGINES", "RolloutEngine", "SamplingParams", "TransformersEngine"]
