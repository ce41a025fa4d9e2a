"""Streamed answers: token ids into text as the engine samples them, text into OpenAI chunks as it arrives.

Two halves, on two threads. The worker, which owns the tokenizer, decodes each streamed choice's ids as the engine
tells them (`TextStream`) and hands on only text the finished answer will start with. The server turns each
choice's text into deltas of the fields its answer will have (`ChatStream`, `CompletionStream`) and, once the reply
is finished, sends what is left of each field (all of it for a mode that streams nothing: tools and thinking), the
tool calls and the finish reason. So the deltas add up to exactly what the same request answers without `stream`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel
from transformers import PreTrainedTokenizerBase

from rlvr.rollout.budget_forcing import THINK_CLOSE, THINK_OPEN
from rlvr.serve.schema import (
    ChatCompletion,
    ChatCompletionChunk,
    ChunkChoice,
    Completion,
    CompletionChoice,
    Delta,
    ToolCallDelta,
    Usage,
    completion_id,
    now,
)
from rlvr.tools.protocol import CALL_OPEN


class TextStream:
    """One choice's text as its ids arrive, cut to what the finished answer will start with.

    Each push decodes all the ids so far (as the engines decode a finished completion: special tokens, such as the
    end of the turn, left out) and hands on the new end of the text, holding back
    - a trailing U+FFFD: a character whose UTF-8 bytes are split over tokens decodes as one until its last byte;
    - the last `len(longest stop string) - 1` characters: they may be the start of a client's stop string, which the
      answer is cut before; once one appears, the text up to it is the last handed on;
    - any text that does not extend what was handed on (a tokenizer whose clean-up rewrites earlier spaces), until
      it does again.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stop: Sequence[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop = tuple(s for s in stop if s)
        self.hold = max((len(s) for s in self.stop), default=1) - 1
        self.ids: list[int] = []
        self.sent = ""
        self.stopped = False

    def push(self, ids: Sequence[int]) -> str:
        """The text these ids add that is safe to show now ("" when there is none yet)."""
        if self.stopped:
            return ""
        self.ids.extend(ids)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        end = stop_index(text, self.stop)
        if end is not None:
            self.stopped = True
            safe = text[:end]
        else:
            safe = text.rstrip("\ufffd")
            safe = safe[: max(0, len(safe) - self.hold)]
        if len(safe) <= len(self.sent) or not safe.startswith(self.sent):
            return ""
        new, self.sent = safe[len(self.sent) :], safe
        return new


def stop_index(text: str, stop: Sequence[str]) -> int | None:
    """Where the first of a client's stop strings begins in `text` (OpenAI's answers end before it), or None."""
    hits = [text.find(s) for s in stop if s in text]
    return min(hits) if hits else None


def _settled(text: str, markers: Sequence[str], cut: Sequence[str] = ()) -> str:
    """`text` without what may still change: from the first of `cut` on, a trailing start of one of `markers`, and
    trailing whitespace (the finished answer is stripped)."""
    for marker in cut:
        text = text.partition(marker)[0]
    for marker in markers:
        for length in range(len(marker) - 1, 0, -1):
            if text.endswith(marker[:length]):
                text = text[:-length]
                break
    return text.rstrip()


def visible_message(text: str) -> tuple[str, str]:
    """(reasoning, content) of an unfinished reply's text, each what the finished message's will start with.

    Mirrors `split_thinking` and the tool-call split of `answers.assistant_message`: thinking opened by `<think>`
    is reasoning up to `</think>`; text that may still open a thinking block shows nothing yet; content is held
    back from a `<tool_call>` on (the finished answer has the text before a well-formed call, all of it around a
    malformed one). One case cannot be foreseen: a reply that closes a thinking block it never opened has
    streamed the text before `</think>` as content, where the finished message calls it reasoning.
    """
    head, close, tail = text.partition(THINK_CLOSE)
    lead = head.lstrip()
    if close:
        return lead.removeprefix(THINK_OPEN).strip(), _settled(tail.lstrip(), (CALL_OPEN,), (CALL_OPEN,))
    if THINK_OPEN.startswith(lead):  # nothing yet, or the start of `<think>`
        return "", ""
    if lead.startswith(THINK_OPEN):
        return _settled(lead[len(THINK_OPEN) :].lstrip(), (THINK_CLOSE,)), ""
    return "", _settled(lead, (CALL_OPEN, THINK_CLOSE), (CALL_OPEN,))


def pieces(text: str | None) -> list[str]:
    """A text cut before each word that follows whitespace: the pieces add up to the text exactly."""
    return [piece for piece in re.split(r"(?<=\s)(?=\S)", text or "") if piece]


@dataclass
class ChoiceText:
    """One streamed choice: the text it has received, and how much of each answer field was sent."""

    text: str = ""
    sent: dict[str, str] = field(default_factory=dict)

    def grown(self, visible: dict[str, str]) -> list[tuple[str, str]]:
        """(field, new text) of each field that now shows more than was sent."""
        grown = []
        for name, value in visible.items():
            before = self.sent.get(name, "")
            if len(value) > len(before) and value.startswith(before):
                grown.append((name, value[len(before) :]))
                self.sent[name] = value
        return grown

    def rest(self, final: dict[str, str | None]) -> list[tuple[str, str]]:
        """(field, piece) of what the finished answer has beyond what was sent."""
        return [(name, piece) for name, value in final.items() for piece in pieces((value or "")[len(self.sent.get(name, "")) :])]


class _Stream:
    """One streamed request's chunks, under one id: per choice, deltas as its text arrives, then the rest."""

    def __init__(self, model: str, include_usage: bool, prefix: str) -> None:
        self.id, self.created, self.model = completion_id(prefix), now(), model
        self.include_usage = include_usage
        self.choices: dict[int, ChoiceText] = {}

    def delta(self, index: int, text: str) -> list[BaseModel]:
        """The chunks of `text`, newly decoded for choice `index`."""
        state, chunks = self._state(index)
        state.text += text
        return chunks + [self._field(index, name, value) for name, value in state.grown(self._visible(state.text))]

    def _state(self, index: int) -> tuple[ChoiceText, list[BaseModel]]:
        if index in self.choices:
            return self.choices[index], []
        self.choices[index] = ChoiceText()
        return self.choices[index], self._opening(index)

    def _rest(self, index: int, final: dict[str, str | None]) -> Iterator[BaseModel]:
        state, chunks = self._state(index)
        yield from chunks
        for name, piece in state.rest(final):
            yield self._field(index, name, piece)

    def _visible(self, text: str) -> dict[str, str]:
        raise NotImplementedError

    def _opening(self, index: int) -> list[BaseModel]:
        return []

    def _field(self, index: int, name: str, text: str) -> BaseModel:
        raise NotImplementedError


class ChatStream(_Stream):
    def __init__(self, model: str, include_usage: bool) -> None:
        super().__init__(model, include_usage, "chatcmpl")

    def chunk(self, choices: list[ChunkChoice], usage: Usage | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk(id=self.id, created=self.created, model=self.model, choices=choices, usage=usage)

    def _visible(self, text: str) -> dict[str, str]:
        reasoning, content = visible_message(text)
        return {"reasoning_content": reasoning, "content": content}

    def _opening(self, index: int) -> list[BaseModel]:
        return [self.chunk([ChunkChoice(index=index, delta=Delta(role="assistant", content=""))])]

    def _field(self, index: int, name: str, text: str) -> BaseModel:
        return self.chunk([ChunkChoice(index=index, delta=Delta(**{name: text}))])

    def finish(self, completion: ChatCompletion) -> Iterator[BaseModel]:
        """Each choice's rest, tool calls and finish reason, then the usage when asked for (as OpenAI sends it: a
        last chunk without choices)."""
        for choice in completion.choices:
            message, index = choice.message, choice.index
            yield from self._rest(index, {"reasoning_content": message.reasoning_content, "content": message.content})
            for number, call in enumerate(message.tool_calls or []):
                calls = [ToolCallDelta(index=number, id=call.id, function=call.function)]
                yield self.chunk([ChunkChoice(index=index, delta=Delta(tool_calls=calls))])
            finish = ChunkChoice(
                index=index, delta=Delta(), finish_reason=choice.finish_reason, tool_exchange=choice.tool_exchange
            )
            yield self.chunk([finish])
        if self.include_usage:
            yield self.chunk([], completion.usage)


class CompletionStream(_Stream):
    def __init__(self, model: str, include_usage: bool) -> None:
        super().__init__(model, include_usage, "cmpl")

    def chunk(self, choices: list[CompletionChoice], usage: Usage | None = None) -> Completion:
        return Completion(id=self.id, created=self.created, model=self.model, choices=choices, usage=usage)

    def _visible(self, text: str) -> dict[str, str]:
        return {"text": text}  # a text completion is the text as written, unstripped

    def _field(self, index: int, name: str, text: str) -> BaseModel:
        return self.chunk([CompletionChoice(index=index, text=text)])

    def finish(self, completion: Completion) -> Iterator[BaseModel]:
        for choice in completion.choices:
            yield from self._rest(choice.index, {"text": choice.text})
            yield self.chunk([CompletionChoice(index=choice.index, text="", finish_reason=choice.finish_reason)])
        if self.include_usage:
            yield self.chunk([], completion.usage)
