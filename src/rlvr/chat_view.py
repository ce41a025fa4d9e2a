"""How `rlvr chat` shows a reply: thinking dimmed, each tool call and its result, then the answer."""

from __future__ import annotations

import json
import re

from rich.console import Console
from rich.markup import escape
from rich.padding import Padding

from rlvr.tools.protocol import CALL_CLOSE, CALL_OPEN, ToolError, find_call, parse_call
from rlvr.types import Episode

_THINK = re.compile(r"<think>(.*?)(?:</think>|$)", re.DOTALL)


def _call_summary(text: str) -> str:
    body = find_call(text)
    if body is None:
        return f"(unclosed tool call) {text[text.find(CALL_OPEN) :]}"
    try:
        call = parse_call(body)
    except ToolError as error:
        return f"(malformed) {body.strip()} - {error}"
    arguments = call.arguments if isinstance(call.arguments, dict) else {"arguments": call.arguments}
    return f"{call.name}({', '.join(f'{k}={json.dumps(v)}' for k, v in arguments.items())})"


def show_reply(console: Console, episode: Episode) -> None:
    for message in episode.meta.get("messages") or [{"role": "assistant", "content": episode.text}]:
        content = message["content"]
        if message["role"] == "tool":
            console.print(Padding(escape(content), (0, 0, 0, 4)), style="dim", highlight=False)
            continue
        for thought in _THINK.findall(content):
            console.print(f"[dim italic]thinking: {escape(thought.strip())}[/dim italic]", highlight=False)
        said = _THINK.sub("", content)
        if CALL_OPEN in said:
            before = said[: said.find(CALL_OPEN)].strip()
            if before:
                console.print(escape(before), highlight=False)
            console.print(f"[bold cyan]-> {escape(_call_summary(said))}[/bold cyan]", highlight=False)
            after = said.split(CALL_CLOSE, 1)[1].strip() if CALL_CLOSE in said else ""
            if after:
                console.print(escape(after), highlight=False)
        elif said.strip():
            console.print(f"[bold]assistant>[/bold] {escape(said.strip())}", highlight=False)
    stats = episode.meta.get("tools")
    if stats and stats["stop"] != "end_of_turn":
        console.print(f"[yellow](reply ended: {stats['stop']})[/yellow]")
