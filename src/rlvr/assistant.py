"""A trained model with its tools, for people: `rlvr chat` (interactive) and `rlvr sample` (JSONL in, JSONL out).

It is the training rollout, reused: the same tool definitions, the same `ToolLoop`, the same prompt (the recipe's
environment renders the first question, demonstrations included), so what a user sees is what was trained.
A conversation goes on token in, token out: the next question's ids are appended after the model's reply,
never re-rendered. Tool sessions (the python tool's variables) last for one reply.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from rlvr.config import ConfigError, RunConfig
from rlvr.envs import Environment, make_env
from rlvr.models import load_policy, load_tokenizer
from rlvr.rollout import RolloutEngine, SamplingParams, make_engine
from rlvr.rollout.sampler import make_sampler
from rlvr.rollout.stop_tokens import stop_token_ids
from rlvr.types import Episode, Problem


@dataclass
class Conversation:
    """The ids so far and the exchange in chat format."""

    ids: list[int]
    messages: list[dict[str, Any]] = field(default_factory=list)
    ended_with: str = ""  # the stop token text that ended the model's last turn, if it wrote one


class Assistant:
    def __init__(self, model: str, config: RunConfig) -> None:
        self.config = config
        self.tokenizer: PreTrainedTokenizerBase = load_tokenizer(model)
        policy = load_policy(model).eval()
        # The longest conversation the model takes (its positions), prompt and reply together; vLLM's max_model_len
        # may set it lower.
        self.context_length: int = config.rollout.vllm.max_model_len or policy.config.max_position_embeddings
        self.engine: RolloutEngine = make_engine(config.rollout, policy, self.tokenizer)
        self.env: Environment = make_env(config.env)
        self.sampler, self.chat, self.tool_names = make_sampler(self.engine, self.tokenizer, config, self.env)
        # The texts of the tokens that end a turn: after one, the next question's ids start without another.
        self.stop_texts = {self.tokenizer.decode([i]) for i in stop_token_ids(policy, self.tokenizer)}

    def start(self, question: str | None = None, messages: Sequence[dict[str, Any]] | None = None) -> Conversation:
        """A conversation opened by a question (rendered like a training prompt) or by explicit messages."""
        if messages is None:
            messages = self.opening([{"role": "user", "content": question or ""}])
        return Conversation(self.chat.prompt_ids(messages), [dict(m) for m in messages])

    def opening(self, messages: Sequence[dict[str, Any]], system_prompt: str | None = None) -> list[dict[str, Any]]:
        """A conversation without a system message opens like a training prompt: the environment renders its first
        question (the recipe's system prompt, or `system_prompt`, and its demonstrations), the rest follows. One with
        a system message is the caller's own and stays as it is (`rlvr sample`'s `messages`, an API client's)."""
        if not messages or messages[0]["role"] != "user":
            return [dict(m) for m in messages]
        first = Problem(messages[0]["content"], "", system_prompt=system_prompt)
        return [*self.env.messages(first), *(dict(m) for m in messages[1:])]

    def follow_up(self, conversation: Conversation, question: str) -> Conversation:
        message = {"role": "user", "content": question}
        ids = conversation.ids + self.chat.next_turn_ids(message, conversation.ended_with)
        return Conversation(ids, [*conversation.messages, message])

    def reply(self, conversations: Sequence[Conversation], sampling: SamplingParams) -> list[tuple[Conversation, Episode]]:
        """The model's replies (tool calls and results included), each with the conversation it extends."""
        episodes = self.sampler.generate([c.ids for c in conversations], sampling)
        replies = []
        for conversation, episode in zip(conversations, episodes):
            new = episode.meta.get("messages") or [{"role": "assistant", "content": episode.text}]
            last = self.tokenizer.decode(episode.completion_ids[-1:]) if episode.completion_ids else ""
            ended_with = last if last in self.stop_texts else ""
            extended = Conversation(conversation.ids + episode.completion_ids, [*conversation.messages, *new], ended_with)
            replies.append((extended, episode))
        return replies

    def sampling(self, temperature: float, max_new_tokens: int, seed: int = 0) -> SamplingParams:
        if temperature <= 0:
            return SamplingParams(greedy=True, max_new_tokens=max_new_tokens, seed=seed)
        return SamplingParams(temperature=temperature, max_new_tokens=max_new_tokens, seed=seed)


def read_requests(path: Path) -> list[dict[str, Any]]:
    """`rlvr sample`'s input: JSONL lines with a `question` (rendered like a training prompt) or `messages`."""
    requests = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise ConfigError(f"{path}: {error}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            request = json.loads(line)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path}:{number}: invalid JSON: {error.msg}") from None
        if not isinstance(request, dict):
            raise ConfigError(f"{path}:{number}: expected a JSON object")
        if isinstance(request.get("question"), str):
            requests.append(request)
        elif isinstance(request.get("messages"), list) and request["messages"]:
            requests.append(request)
        else:
            raise ConfigError(f"{path}:{number}: question: expected a string (or a non-empty `messages` list)")
    if not requests:
        raise ConfigError(f"{path}: no requests")
    return requests
