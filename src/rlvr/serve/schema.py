"""The OpenAI wire format as typed records: what a client may send, and what the server answers.

Requests are strict (`extra="forbid"`, no coercion of "1" into 1): an unknown or mistyped field is refused with an
error that names it, never silently ignored. Fields OpenAI defines that this server does not implement are left
out, so a client that relies on one hears about it. The extensions are `top_k`, `thinking_budget` (also inside a
literal `extra_body` object, for clients that send it as written) and, in answers, `reasoning_content` and
`tool_exchange`.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

EffortLevel = Literal["low", "medium", "high"]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _Answer(BaseModel):
    # Answers are built by the server (no validation needed) and may carry fields added by later OpenAI versions.
    model_config = ConfigDict(extra="allow")


# ---- requests ------------------------------------------------------------------------------------------------


class TextPart(_Request):
    type: Literal["text"]
    text: str


class FunctionCall(_Request):
    name: str
    arguments: str = Field(description="a JSON object, as a string (the OpenAI wire format)")


class ToolCallRecord(_Request):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Request):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallRecord] | None = None
    tool_call_id: str | None = None
    # A client may send an earlier answer back whole; earlier reasoning is not rendered again (see `serve.prompts`).
    reasoning_content: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> ChatMessage:
        if self.role == "tool" and (self.tool_call_id is None or self.content is None):
            raise ValueError("a tool message needs `tool_call_id` and `content`")
        if self.role != "assistant" and self.content is None:
            raise ValueError(f"a {self.role} message needs `content`")
        if self.role == "assistant" and self.content is None and not self.tool_calls:
            raise ValueError("an assistant message needs `content` or `tool_calls`")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages have `tool_calls`")
        return self

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class FunctionSpec(_Request):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None


class ToolSpec(_Request):
    type: Literal["function"]
    function: FunctionSpec


class StreamOptions(_Request):
    include_usage: bool = False


class ThinkingExtension(_Request):
    thinking_budget: int | None = Field(None, ge=1)


def _only(default: Any) -> AfterValidator:
    """An OpenAI field this server does not implement, accepted at the value that changes nothing (SDK wrappers send
    defaults explicitly); any other value is refused with the field named, so a client relying on it hears so."""

    def check(value: Any) -> Any:
        if value is not None and value != default:
            raise ValueError(f"not supported by this server (accepted only as {default!r}, its default)")
        return value

    return AfterValidator(check)


class _Sampling(_Request):
    """What chat and text completions share."""

    frequency_penalty: Annotated[float | None, _only(0.0)] = None
    presence_penalty: Annotated[float | None, _only(0.0)] = None
    logit_bias: Annotated[dict[str, float] | None, _only({})] = None
    store: bool | None = None  # a hosted API's option: nothing is stored here either way
    metadata: dict[str, str] | None = None

    model: str
    temperature: float | None = Field(None, ge=0.0, le=2.0, description="0: greedy; default: the recipe's")
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0, description="extension; 0 = off")
    n: int = Field(1, ge=1, le=16)
    # int64, as OpenAI's: the engines' generators take no larger seed, and a client's mistake is a 400, not a 500.
    seed: int | None = Field(None, ge=-(2**63), lt=2**63)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None

    @property
    def stop_strings(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    tools: list[ToolSpec] | None = None
    tool_choice: Literal["auto", "none"] | None = None
    parallel_tool_calls: bool | None = None  # accepted; the trained format makes one call per turn
    logprobs: Annotated[bool | None, _only(False)] = None
    response_format: Annotated[dict[str, Any] | None, _only({"type": "text"})] = None
    reasoning_effort: EffortLevel | None = None
    thinking_budget: int | None = Field(None, ge=1, description="extension: thinking tokens")
    extra_body: ThinkingExtension | None = None

    @property
    def budget_tokens(self) -> int | None:
        return (
            self.thinking_budget if self.thinking_budget is not None else (self.extra_body or ThinkingExtension()).thinking_budget
        )


class CompletionRequest(_Sampling):
    prompt: str | list[str]
    max_tokens: int = Field(16, ge=1)  # OpenAI's default for text completions

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


# ---- answers -------------------------------------------------------------------------------------------------


def completion_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


class ReasoningDetails(_Answer):
    reasoning_tokens: int = 0


class Usage(_Answer):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    completion_tokens_details: ReasoningDetails | None = None


class AnswerMessage(_Answer):
    """The final assistant message of a choice, or one step of its `tool_exchange`."""

    role: Literal["assistant", "tool"] = "assistant"
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallRecord] | None = None
    tool_call_id: str | None = None
    name: str | None = None


FinishReason = Literal["stop", "length", "tool_calls"]


class ChatChoice(_Answer):
    index: int
    message: AnswerMessage
    finish_reason: FinishReason
    logprobs: None = None
    # Extension: the assistant turns with calls and the tool results the server ran before `message`, in order.
    tool_exchange: list[AnswerMessage] | None = None


class ChatCompletion(_Answer):
    id: str = Field(default_factory=lambda: completion_id("chatcmpl"))
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=now)
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ToolCallDelta(_Answer):
    index: int
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class Delta(_Answer):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChunkChoice(_Answer):
    index: int
    delta: Delta
    finish_reason: FinishReason | None = None
    tool_exchange: list[AnswerMessage] | None = None  # on the choice's last chunk, as in `ChatChoice`


class ChatCompletionChunk(_Answer):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class CompletionChoice(_Answer):
    index: int
    text: str
    finish_reason: FinishReason | None = None
    logprobs: None = None


class Completion(_Answer):
    id: str = Field(default_factory=lambda: completion_id("cmpl"))
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=now)
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ModelCard(_Answer):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=now)
    owned_by: str = "rlvr"


class ModelList(_Answer):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(_Answer):
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None


class ErrorBody(_Answer):
    error: ErrorDetail
