"""How tools meet the chat template: prompts that advertise the tools, parsing calls, tool results as token ids.

Two formats, one parser. When the model's chat template has native tool support (it reads a `tools` variable),
the tool schemas and the conversation's tool calls and results go through the template unchanged. Otherwise the
documented fallback (the Hermes format, which most open tool-calling models were trained on) is used:

- the system prompt gains a `Tools:` section with one signature line per tool, read from its JSON schema
  (`search(query: string) - Search the knowledge base.`), and how to call one;
- a call is `<tool_call>{"name": "<tool>", "arguments": {...}}</tool_call>` in the assistant's text;
- a result is a `tool` message (a `user` one if the template rejects the `tool` role) holding
  `<tool_response>\\n...\\n</tool_response>`.

Either way the model calls a tool by writing a `<tool_call>` block, so generation stops at `</tool_call>`.
One call per turn: the turn ends at the first closed call and its result comes back before the model goes on.

Token in, token out: a tool result reaches the sampler as the ids of the text the template puts between the end
of the model's turn and the start of its next one (`result_ids`), appended to the ids so far. The conversation
is never re-rendered and re-tokenised, so the ids the learner trains on are exactly the ids the sampler saw.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedTokenizerBase

from rlvr.errors import ConfigError, lone_surrogate, parser_limit
from rlvr.tools.base import Tool, ToolError

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
RESPONSE_OPEN, RESPONSE_CLOSE = "<tool_response>", "</tool_response>"
_CALL = re.compile(re.escape(CALL_OPEN) + r"(.*?)" + re.escape(CALL_CLOSE), re.DOTALL)
# Stands for the model's own text while the template renders what comes after it.
_SENTINEL = "\u2063RLVR-TURN-END\u2063"


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: Any


def find_call(text: str) -> str | None:
    """The body of the first closed `<tool_call>` block in a turn, or None."""
    match = _CALL.search(text)
    return match.group(1) if match else None


def has_open_call(text: str) -> bool:
    """A `<tool_call>` was opened but never closed (the turn ended mid-call)."""
    return CALL_OPEN in text and find_call(text) is None


def parse_call(body: str) -> ToolCall:
    """A call's JSON body as a ToolCall; a `ToolError` says what is malformed, for the model to fix."""
    try:
        payload = json.loads(body)
    except json.JSONDecodeError as error:
        raise ToolError(f"the tool call is not valid JSON ({error.msg} at character {error.pos})") from None
    except (ValueError, RecursionError) as error:  # valid syntax that Python does not read: a huge integer, deep nesting
        raise ToolError(f"the tool call is not valid JSON ({parser_limit(error)})") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("name"), str):
        raise ToolError('a tool call must be a JSON object {"name": <tool name>, "arguments": {...}}')
    arguments = payload.get("arguments", {})
    if isinstance(arguments, str):  # the OpenAI wire format sends arguments as a JSON string
        try:
            arguments = json.loads(arguments)
        except (ValueError, RecursionError):
            raise ToolError(f"the arguments of {payload['name']} are not a JSON object") from None
    try:
        text = json.dumps([payload["name"], arguments], ensure_ascii=False)
    except RecursionError as error:  # nested just below json.loads's limit, past json.dumps's
        raise ToolError(f"the tool call is not valid JSON ({parser_limit(error)})") from None
    if lone_surrogate(text) is not None:  # a tool echoing it would end the loop in the tokenizer
        raise ToolError("the tool call holds a \\u escape of half a surrogate pair, which is not text")
    return ToolCall(payload["name"], arguments)


def call_text(name: str, arguments: Any) -> str:
    """How the fallback format writes a call (also what demonstrations show the model)."""
    return f"{CALL_OPEN}{json.dumps({'name': name, 'arguments': arguments})}{CALL_CLOSE}"


def signature(tool: Tool) -> str:
    """A tool's schema as one line: `name(arg: type, ...) - description`, optional arguments marked `?`."""
    properties = tool.parameters.get("properties", {})
    required = set(tool.parameters.get("required", []))
    arguments = ", ".join(
        f"{name}{'' if name in required else '?'}: {spec.get('type', 'any')}" for name, spec in properties.items()
    )
    return f"{tool.name}({arguments}) - {tool.description}"


def tools_block(tools: Sequence[Tool]) -> str:
    """The fallback's system-prompt section: one signature line per tool and the calling convention. Signatures,
    not the raw JSON schemas: a small model copies a JSON schema it is shown into its calls."""
    lines = "\n".join(f"- {signature(t)}" for t in tools)
    return (
        f"Tools:\n{lines}\n"
        f'To call a tool, write {CALL_OPEN}{{"name": <tool name>, "arguments": {{<argument>: <value>}}}}{CALL_CLOSE} '
        f"and stop; its result comes back inside {RESPONSE_OPEN}{RESPONSE_CLOSE}."
    )


def native_tool_support(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether the chat template reads a `tools` variable (Qwen, Llama 3.1+, Hermes, SmolLM3, ...)."""
    template = tokenizer.chat_template
    return isinstance(template, str) and re.search(r"\btools\b", template) is not None


class ChatFormat:
    """A tokenizer's chat template plus a set of tools: renders prompts, and tool results as ids to append."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, tools: Sequence[Tool] = ()) -> None:
        if not tokenizer.chat_template:
            raise ConfigError(f"{tokenizer.name_or_path}: the tokenizer has no chat template")
        self.tokenizer = tokenizer
        self.tools = list(tools)
        self.by_name = {t.name: t for t in self.tools}
        self.native = bool(self.tools) and native_tool_support(tokenizer)
        # Only the fallback format with tools needs to know whether the template renders the `tool` role.
        self.tool_role = "tool" if self.native or not self.tools or self._renders_role("tool") else "user"

    # ---- prompts ---------------------------------------------------------
    def prepare(self, messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Messages in the form the template takes: unchanged when it supports tools, else the fallback format."""
        if self.native or not self.tools:
            return [dict(m) for m in messages]
        prepared = [self._fallback(m) for m in messages]
        if prepared and prepared[0]["role"] == "system":
            prepared[0]["content"] = f"{prepared[0]['content']}\n\n{tools_block(self.tools)}"
        else:
            prepared.insert(0, {"role": "system", "content": tools_block(self.tools)})
        return prepared

    def _fallback(self, message: dict[str, Any]) -> dict[str, Any]:
        if message["role"] == "tool":
            return {"role": self.tool_role, "content": f"{RESPONSE_OPEN}\n{message['content']}\n{RESPONSE_CLOSE}"}
        calls = message.get("tool_calls")
        if message["role"] == "assistant" and calls:
            text = "\n".join(call_text(c["function"]["name"], c["function"]["arguments"]) for c in calls)
            content = message.get("content") or ""
            return {"role": "assistant", "content": f"{content}\n{text}" if content else text}
        return {"role": message["role"], "content": message["content"]}

    def render_text(self, messages: Sequence[dict[str, Any]], generation_prompt: bool = False) -> str:
        extra = {"tools": [t.schema() for t in self.tools]} if self.native else {}
        return self.tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=generation_prompt, **extra
        )

    def prompt_ids(self, messages: Sequence[dict[str, Any]]) -> list[int]:
        """The conversation so far, rendered for the assistant's next turn."""
        text = self.render_text(self.prepare(messages), generation_prompt=True)
        return self.tokenizer.encode(text, add_special_tokens=False)

    def _renders_role(self, role: str) -> bool:
        try:
            text = self.render_text([{"role": "user", "content": "?"}, {"role": role, "content": _SENTINEL}])
        except Exception:  # templates reject unknown roles by raising from Jinja
            return False
        return _SENTINEL in text

    # ---- tool results ------------------------------------------------------
    def result_message(self, name: str, content: str) -> dict[str, Any]:
        return {"role": "tool", "name": name, "content": content}

    def result_ids(self, name: str, content: str, ended_with: str = "") -> list[int]:
        """The ids that follow a model turn which ended in a call (see `next_turn_ids`)."""
        return self.next_turn_ids(self.result_message(name, content), ended_with)

    def next_turn_ids(self, message: dict[str, Any], ended_with: str = "") -> list[int]:
        """The ids that follow a model turn when `message` comes next: the end of the turn, the message, and the
        start of the model's next turn. `ended_with` is the text of the stop token the model itself wrote (if it
        ended its turn), which the template's end of turn then does not repeat."""
        messages = [{"role": "user", "content": "?"}, {"role": "assistant", "content": _SENTINEL}, message]
        text = self.render_text(self.prepare(messages), generation_prompt=True).split(_SENTINEL, 1)[1]
        if ended_with and text.startswith(ended_with):
            text = text[len(ended_with) :]
        return self.tokenizer.encode(text, add_special_tokens=False)
