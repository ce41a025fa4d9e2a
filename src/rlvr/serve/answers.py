"""Generations as OpenAI answers: the thinking apart from the answer, tool calls as `tool_calls` (a stream's chunks
are `rlvr.serve.streaming`'s)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

from rlvr.eval.thinking import split_thinking
from rlvr.serve.backend import Generated, Job
from rlvr.serve.schema import (
    AnswerMessage,
    ChatChoice,
    ChatCompletion,
    Completion,
    CompletionChoice,
    FinishReason,
    FunctionCall,
    ReasoningDetails,
    ToolCallRecord,
    Usage,
)
from rlvr.tools.protocol import CALL_OPEN, ToolError, find_call, parse_call

# Why a rollout ended -> OpenAI's finish_reason. `max_turns`: the model called a tool in its last allowed turn (the
# call was not run), a limit like the token limit.
FINISH_REASONS: dict[str, FinishReason] = {
    "end_of_turn": "stop",
    "length": "length",
    "max_turns": "length",
    "tool_calls": "tool_calls",
}


def _call(text: str) -> tuple[str | None, ToolCallRecord | None]:
    """A turn's text before its tool call, and the call in OpenAI's form (None when it made no well-formed call)."""
    body = find_call(text)
    if body is None:
        return text, None
    try:
        call = parse_call(body)
    except ToolError:
        return text, None
    before = text[: text.find(CALL_OPEN)].strip()
    record = ToolCallRecord(
        id=f"call_{uuid.uuid4().hex[:24]}", function=FunctionCall(name=call.name, arguments=json.dumps(call.arguments))
    )
    return before or None, record


def assistant_message(text: str) -> AnswerMessage:
    reasoning, answer = split_thinking(text)
    content, call = _call(answer)
    return AnswerMessage(content=content, reasoning_content=reasoning or None, tool_calls=[call] if call else None)


def exchange_messages(exchange: Sequence[dict[str, Any]]) -> list[AnswerMessage]:
    """The turns the server ran tools for: each assistant turn with its call, then the tool message answering it."""
    messages: list[AnswerMessage] = []
    last_call: str | None = None
    for message in exchange:
        if message["role"] == "tool":
            messages.append(
                AnswerMessage(role="tool", content=message["content"], tool_call_id=last_call, name=message.get("name"))
            )
            continue
        turn = assistant_message(message["content"])
        last_call = turn.tool_calls[0].id if turn.tool_calls else None  # a malformed call is answered with an error
        messages.append(turn)
    return messages


def chat_choice(generated: Generated, index: int) -> ChatChoice:
    message = assistant_message(generated.text)
    reason = FINISH_REASONS[generated.stop]
    if reason == "tool_calls" and not message.tool_calls:
        reason = "stop"
    if message.content is None and not message.tool_calls:
        message.content = ""
    return ChatChoice(
        index=index, message=message, finish_reason=reason, tool_exchange=exchange_messages(generated.exchange) or None
    )


def usage(job: Job, generated: Sequence[Generated]) -> Usage:
    """Tokens of the request: its prompts (each once, not once per choice) and what the model wrote in every choice."""
    prompt_tokens = sum(len(prompt) for prompt in job.prompts[:: job.n])
    completion = sum(g.completion_tokens for g in generated)
    reasoning = ReasoningDetails(reasoning_tokens=sum(g.thinking_tokens for g in generated))
    return Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion,
        total_tokens=prompt_tokens + completion,
        completion_tokens_details=reasoning,
    )


def chat_completion(model: str, job: Job, generated: list[Generated]) -> ChatCompletion:
    choices = [chat_choice(g, index) for index, g in enumerate(generated)]
    return ChatCompletion(model=model, choices=choices, usage=usage(job, generated))


def text_completion(model: str, job: Job, generated: list[Generated]) -> Completion:
    choices = [CompletionChoice(index=i, text=g.text, finish_reason=FINISH_REASONS[g.stop]) for i, g in enumerate(generated)]
    return Completion(model=model, choices=choices, usage=usage(job, generated))
