"""Multi-turn rollouts with tools, token in and token out.

The loop, per turn: every unfinished episode continues from its own ids; generation stops at `</tool_call>` (or
the end of the turn); a closed call is parsed, validated against the tool's schema and run; the ids of the
template's tool message are appended; the next turn follows. Model tokens carry their sampler log-probs and a
loss-mask of 1; tool-message tokens carry a mask of 0 (the model did not choose them) and a log-prob of 0.

Rules, exactly:
- `max_new_tokens` caps the *model* tokens of an episode over all its turns; a turn that hits it ends the
  episode as truncated. Tool-message tokens do not count against it.
- `max_turns` caps model turns. A call made in the last allowed turn is not run: the episode ends (stop reason
  `max_turns`) without an answer.
- A malformed call (bad JSON, unknown tool, arguments that fail the schema, a call left open when the turn
  ended), or a tool that raises, is answered with an error message in the tool's place and counted; the
  episode goes on. Nothing a model writes can crash the loop.
- A tool result longer than `max_result_tokens` is cut, with a visible marker.
- Each episode opens its own tool sessions, so the python tool's variables live exactly as long as one episode.

The episode's `text` is the model's last turn (what the verifier reads); `meta["messages"]` is the whole
exchange in chat format, and `meta["tools"]` counts calls, errors, turns and tool tokens for monitoring.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from rlvr.rollout.base import RolloutEngine, SamplingParams
from rlvr.rollout.hf import stop_token_ids
from rlvr.tools.base import Session, ToolError
from rlvr.tools.protocol import CALL_CLOSE, ChatFormat, find_call, has_open_call, parse_call
from rlvr.types import Episode

TRUNCATION_MARKER = "\n...[truncated]"


@dataclass(frozen=True)
class ToolLoopSettings:
    max_turns: int = 4
    max_result_tokens: int = 256
    workers: int = 4  # tool calls of one turn run in parallel threads (the sandbox runs in its own processes)


@dataclass
class ToolOutcome:
    name: str
    content: str
    error: str | None = None


@dataclass
class _Row:
    prompt: list[int]
    ids: list[int] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    sessions: dict[str, Session] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    tool_tokens: int = 0
    turns: int = 0
    model_tokens: int = 0
    last_text: str = ""
    done: bool = False
    truncated: bool = False
    stop: str = "end_of_turn"

    def context(self) -> list[int]:
        return self.prompt + self.ids

    def keep(self, ids: Sequence[int], logprobs: Sequence[float]) -> None:
        self.ids += ids
        self.mask += [1] * len(ids)
        self.logprobs += logprobs
        self.model_tokens += len(ids)

    def append_context(self, ids: Sequence[int]) -> None:
        self.ids += ids
        self.mask += [0] * len(ids)
        self.logprobs += [0.0] * len(ids)
        self.tool_tokens += len(ids)

    def finish(self, stop: str, truncated: bool = False) -> None:
        self.done, self.stop, self.truncated = True, stop, truncated


class ToolLoop:
    """Wraps a rollout engine: the same `generate(prompts, sampling)`, with tool calls run between turns."""

    def __init__(self, engine: RolloutEngine, chat: ChatFormat, settings: ToolLoopSettings = ToolLoopSettings()) -> None:
        if settings.max_turns < 1:
            raise ValueError(f"max_turns must be at least 1, got {settings.max_turns}")
        self.engine = engine
        self.chat = chat
        self.tokenizer = chat.tokenizer
        self.settings = settings
        model = getattr(engine, "model", None)
        self.stop_ids = stop_token_ids(model, self.tokenizer) if model is not None else {self.tokenizer.eos_token_id}

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingParams) -> list[Episode]:
        rows = [_Row(list(prompt)) for prompt in prompts]
        with ThreadPoolExecutor(max_workers=self.settings.workers) as pool:
            for turn in range(self.settings.max_turns):
                live = [row for row in rows if not row.done]
                if not live:
                    break
                self._turn(live, turn, sampling, pool)
        return [self._episode(row) for row in rows]

    def _turn(self, live: list[_Row], turn: int, sampling: SamplingParams, pool: ThreadPoolExecutor) -> None:
        budget = {id(row): sampling.max_new_tokens - row.model_tokens for row in live}
        # One engine call for all rows at the largest budget; cutting a row's sample at its own budget afterwards
        # draws from the same distribution as generating with that limit.
        turn_sampling = replace(
            sampling, max_new_tokens=max(budget.values()), stop=(*sampling.stop, CALL_CLOSE), seed=sampling.seed + 7919 * turn
        )
        produced = self.engine.generate([row.context() for row in live], turn_sampling)
        calls: list[tuple[_Row, str | None, str]] = []
        for row, episode in zip(live, produced):
            ids, logprobs = episode.completion_ids[: budget[id(row)]], episode.logprobs[: budget[id(row)]]
            row.keep(ids, logprobs)
            row.turns += 1
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            row.last_text = text
            row.messages.append({"role": "assistant", "content": text})
            ended = bool(ids) and ids[-1] in self.stop_ids
            body = find_call(text)
            if body is None and not has_open_call(text):
                row.finish("end_of_turn" if ended else "length", truncated=not ended)
            elif row.model_tokens >= sampling.max_new_tokens:
                row.finish("length", truncated=True)
            elif turn == self.settings.max_turns - 1:
                row.finish("max_turns")
            else:
                calls.append((row, body, self.tokenizer.decode(ids[-1:]) if ended else ""))
        outcomes = pool.map(lambda call: self._run(call[0], call[1]), calls)
        for (row, _, ended_with), outcome in zip(calls, outcomes):
            row.calls[outcome.name] += 1
            row.errors += outcome.error is not None
            content = self._cut(outcome.content)  # here, not in the pool: one thread uses the tokenizer
            row.messages.append(self.chat.result_message(outcome.name, content))
            row.append_context(self.chat.result_ids(outcome.name, content, ended_with))

    def _run(self, row: _Row, body: str | None) -> ToolOutcome:
        """One call, never raising: what went wrong becomes the message the model reads."""
        name = "invalid"
        try:
            if body is None:
                raise ToolError("the tool call was not closed with </tool_call>")
            call = parse_call(body)
            tool = self.chat.by_name.get(call.name)
            if tool is None:
                raise ToolError(f"unknown tool {call.name!r} (available: {', '.join(self.chat.by_name)})")
            name = call.name
            arguments = tool.validate(call.arguments)
            session = row.sessions.get(name) or row.sessions.setdefault(name, tool.session())
            return ToolOutcome(name, session(arguments))
        except ToolError as error:
            return ToolOutcome(name, f"Error: {error}", str(error))
        except Exception as error:  # a tool's own bug must not end the run; the model sees that the call failed
            message = f"{name} failed: {type(error).__name__}: {error}"
            return ToolOutcome(name, f"Error: {message}", message)

    def _cut(self, content: str) -> str:
        ids = self.tokenizer.encode(content, add_special_tokens=False)
        if len(ids) <= self.settings.max_result_tokens:
            return content
        return self.tokenizer.decode(ids[: self.settings.max_result_tokens]) + TRUNCATION_MARKER

    def _episode(self, row: _Row) -> Episode:
        stats = {
            "calls": dict(row.calls),
            "errors": row.errors,
            "turns": row.turns,
            "tool_tokens": row.tool_tokens,
            "model_tokens": row.model_tokens,
            "stop": row.stop,
        }
        return Episode(
            prompt_ids=row.prompt,
            completion_ids=row.ids,
            logprobs=row.logprobs,
            loss_mask=row.mask,
            truncated=row.truncated,
            text=row.last_text,
            meta={"tools": stats, "messages": row.messages},
        )
