"""A linter for chat templates: is rendering a conversation append-only?

The tool loop appends ids turn by turn and never re-renders. That is only the same context the model sees when
it is served (where a conversation is rendered whole, each time) if rendering one more message leaves the text
and the token ids of the conversation so far unchanged. Templates break this in known ways: dropping the
reasoning of earlier assistant turns (Qwen3), stamping a date or a default system prompt that depends on what
follows, or ending a turn differently once another message comes after it. `check_append_only` renders a
conversation with tool calls one message at a time and reports every place where that happens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transformers import PreTrainedTokenizerBase

from rlvr.tools.base import Tool
from rlvr.tools.protocol import ChatFormat

_EXAMPLE_TOOL = Tool(
    name="lookup",
    description="Look a word up.",
    parameters={"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]},
    session=lambda: lambda arguments: "",
)

CONVERSATION: list[dict[str, Any]] = [
    {"role": "system", "content": "You are a careful assistant."},
    {"role": "user", "content": "What does 'ossify' mean?"},
    {
        "role": "assistant",
        "content": "<think>\nI should look it up.\n</think>",
        "tool_calls": [{"type": "function", "function": {"name": "lookup", "arguments": {"word": "ossify"}}}],
    },
    {"role": "tool", "name": "lookup", "content": "ossify: to turn into bone; to become rigid."},
    {"role": "assistant", "content": "<think>\nThe entry answers it.\n</think>\nTo turn into bone, or to become rigid."},
    {"role": "user", "content": "And 'calcify'?"},
    {"role": "assistant", "content": "To harden by depositing calcium."},
]


def _excerpt(text: str, at: int, width: int = 40) -> str:
    return repr(text[max(0, at - width) : at + width])


def check_append_only(tokenizer: PreTrainedTokenizerBase, tools: Sequence[Tool] = ()) -> list[str]:
    """Every way rendering `CONVERSATION` one message at a time is not append-only; empty when it is."""
    chat = ChatFormat(tokenizer, list(tools) or [_EXAMPLE_TOOL])
    messages = chat.prepare(CONVERSATION)
    problems = []
    for k in range(1, len(messages)):
        role = messages[k]["role"]
        # Before an assistant message the model saw the generation prompt; it must survive as the turn's start.
        before = chat.render_text(messages[:k], generation_prompt=role == "assistant")
        after = chat.render_text(messages[: k + 1])
        if not after.startswith(before):
            at = next((i for i, (a, b) in enumerate(zip(before, after)) if a != b), min(len(before), len(after)))
            problems.append(
                f"adding message {k} ({role}) changes the text before it at character {at}: "
                f"{_excerpt(before, at)} became {_excerpt(after, at)}"
            )
            continue
        before_ids = tokenizer.encode(before, add_special_tokens=False)
        after_ids = tokenizer.encode(after, add_special_tokens=False)
        if after_ids[: len(before_ids)] != before_ids:
            at = next((i for i, (a, b) in enumerate(zip(before_ids, after_ids)) if a != b), len(before_ids))
            problems.append(
                f"adding message {k} ({role}) re-tokenises the end of the conversation before it at token {at}: "
                f"{tokenizer.decode(before_ids[at : at + 3])!r} became {tokenizer.decode(after_ids[at : at + 3])!r}"
            )
    return problems
