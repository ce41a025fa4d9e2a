"""Rollout engines behind one interface, chosen by name in `rollout.engine`."""

from __future__ import annotations

from collections.abc import Callable

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlvr.registry import Registry
from rlvr.rollout.base import RolloutEngine, SamplingParams
from rlvr.rollout.hf import TransformersEngine

# name -> factory(policy model, tokenizer, batch size) -> engine
EngineFactory = Callable[[PreTrainedModel, PreTrainedTokenizerBase, int], RolloutEngine]
ENGINES: Registry[EngineFactory] = Registry("rollout engine")
ENGINES["transformers"] = TransformersEngine

__all__ = ["ENGINES", "RolloutEngine", "SamplingParams", "TransformersEngine"]
