"""Shared fixtures: a tiny random Llama for fast tests, the packaged model for end-to-end ones."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from rlvr.rollout.base import RolloutEngine
from rlvr.types import Episode


def tiny_llama(seed: int = 0, vocab_size: int = 64, **shape) -> LlamaForCausalLM:
    """A tiny random Llama; `shape` overrides its config (a head size vLLM takes, a longer context, other ids)."""
    torch.manual_seed(seed)
    settings = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
        "tie_word_embeddings": True,
        "eos_token_id": 1,
        "pad_token_id": 1,
        "bos_token_id": 0,
    }
    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab_size, **{**settings, **shape})).float()


def save_tiny_model(path, tokenizer, **shape):
    """A local model folder: a tiny random Llama with the real tokenizer's vocabulary and special ids (set after
    initialisation: the padding id's embedding row is the one initialised to zero)."""
    model = tiny_llama(vocab_size=len(tokenizer), **shape)
    model.config.eos_token_id = tokenizer.eos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def tiny_model() -> LlamaForCausalLM:
    return tiny_llama()


@pytest.fixture(scope="session")
def tokenizer():
    """The packaged model's real tokenizer and chat template (converted once per machine)."""
    from rlvr.models import load_tokenizer

    return load_tokenizer("smollm2-135m")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer):
    """A local model folder: a tiny random Llama with the real tokenizer's vocabulary."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny-model"), tokenizer)


class Replies(RolloutEngine):
    """A rollout engine that answers each prompt with `reply(prompt text)`, ended with the end-of-turn token: a
    scripted model for tests of what is done with its text."""

    def __init__(self, tokenizer, reply) -> None:
        self.tokenizer, self.reply = tokenizer, reply

    def generate(self, prompts, sampling):
        episodes = []
        for prompt in prompts:
            ids = self.tokenizer.encode(self.reply(self.tokenizer.decode(prompt)), add_special_tokens=False)
            ids.append(self.tokenizer.eos_token_id)
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            episodes.append(Episode(list(prompt), ids, [0.0] * len(ids), [1] * len(ids), text=text))
        return episodes

    def update_weights(self, weights) -> None:
        pass
