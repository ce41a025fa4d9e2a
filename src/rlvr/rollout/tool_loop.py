"""Multi-turn rollouts with tools, token in and token out: the tool policy of the turn loop.

Per turn: every unfinished episode continues from its own ids; generation stops at `</tool_call>` (or the end
of the turn); a closed call is parsed, validated against the tool's schema and run; the ids of the template's
tool message are appended (as context: mask 0, log-prob 0); the next turn follows.

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
- A well-formed call to an `external` tool (one the caller runs, as an API server's client does) is not run: the
  episode ends there (stop reason `tool_calls`), its last turn holding the call.

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
from rlvr.rollout.stop_tokens import stop_token_ids
from rlvr.rollout.trajectory import Trajectory
from rlvr.rollout.turn_loop import Request, Response, Turn, run_turns
from rlvr.seeds import derive_seed
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
class ToolState:
    """An episode's tools: its open sessions, the exchange in chat format, and what it called."""

    sessions: dict[str, Session] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    last_text: str = ""


class ToolPolicy:
    """Runs the call a turn ends with and inserts its result; ends the episode when the model answers or a limit is
    reached. One per `generate` call: it runs the calls of a turn in `pool`."""

    def __init__(
        self,
        chat: ChatFormat,
        settings: ToolLoopSettings,
        stop_ids: set[int],
        pool: ThreadPoolExecutor,
        external: frozenset[str] = frozenset(),
    ) -> None:
        self.chat = chat
        self.tokenizer = chat.tokenizer
        self.settings = settings
        self.stop_ids = stop_ids
        self.pool = pool
        self.external = external

    def start(self, prompt: Sequence[int]) -> Trajectory[ToolState]:
        return Trajectory(list(prompt), ToolState())

    def requests(self, live: list[Trajectory[ToolState]], sampling: SamplingParams, turn: int) -> list[Request[ToolState]]:
        budget = [sampling.max_new_tokens - trajectory.model_tokens for trajectory in live]
        # One engine call for all episodes at the largest budget; cutting a sample at its own budget afterwards
        # draws from the same distribution as generating with that limit.
        turn_sampling = replace(
            sampling, max_new_tokens=max(budget), stop=(*sampling.stop, CALL_CLOSE), seed=derive_seed(sampling.seed, turn)
        )
        return [Request(trajectory, turn_sampling, cut_at=left) for trajectory, left in zip(live, budget)]

    def respond(self, turns: list[Turn[ToolState]], turn: int) -> list[Response]:
        responses: list[Response | None] = [None] * len(turns)
        calls: list[tuple[int, ToolState, str | None, str]] = []
        for index, model_turn in enumerate(turns):
            ids, state = model_turn.ids, model_turn.trajectory.state
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            state.last_text = text
            state.messages.append({"role": "assistant", "content": text})
            ended = bool(ids) and ids[-1] in self.stop_ids
            body = find_call(text)
            if body is None and not has_open_call(text):
                responses[index] = Response(stop="end_of_turn" if ended else "length", truncated=not ended)
            elif body is not None and self._calls_external(body):  # written in full, even at a limit: the caller runs it
                responses[index] = Response(stop="tool_calls")
            elif len(ids) >= model_turn.limit:  # the turn's limit is what was left of the episode's model tokens
                responses[index] = Response(stop="length", truncated=True)
            elif turn == self.settings.max_turns - 1:
                responses[index] = Response(stop="max_turns")
            else:
                calls.append((index, state, body, self.tokenizer.decode(ids[-1:]) if ended else ""))
        outcomes = self.pool.map(lambda call: self._run(call[1], call[2]), calls)
        for (index, state, _, ended_with), outcome in zip(calls, outcomes):
            state.calls[outcome.name] += 1
            state.errors += outcome.error is not None
            content = self._cut(outcome.content)  # here, not in the pool: one thread uses the tokenizer
            state.messages.append(self.chat.result_message(outcome.name, content))
            responses[index] = Response(insert=self.chat.result_ids(outcome.name, content, ended_with))
        return responses  # type: ignore[return-value]

    def _calls_external(self, body: str) -> bool:
        try:
            return parse_call(body).name in self.external
        except ToolError:  # malformed: answered with an error message like any other call
            return False

    def _run(self, state: ToolState, body: str | None) -> ToolOutcome:
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
            session = state.sessions.get(name) or state.sessions.setdefault(name, tool.session())
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

    def episode(self, trajectory: Trajectory[ToolState]) -> Episode:
        state = trajectory.state
        stats = {
            "calls": dict(state.calls),
            "errors": state.errors,
            "turns": trajectory.turns,
            "tool_tokens": trajectory.context_tokens,
            "model_tokens": trajectory.model_tokens,
            "stop": trajectory.stop,
        }
        return trajectory.to_episode(state.last_text, {"tools": stats, "messages": state.messages})


class ToolLoop:
    """Wraps a rollout engine: the same `generate(prompts, sampling)`, with tool calls run between turns."""

    def __init__(
        self,
        engine: RolloutEngine,
        chat: ChatFormat,
        settings: ToolLoopSettings = ToolLoopSettings(),
        external: frozenset[str] = frozenset(),
    ) -> None:
        if settings.max_turns < 1:
            raise ValueError(f"max_turns must be at least 1, got {settings.max_turns}")
        unknown = external - set(chat.by_name)
        if unknown:
            raise ValueError(f"external tools {sorted(unknown)} are not among the chat format's tools")
        self.engine = engine
        self.chat = chat
        self.tokenizer = chat.tokenizer
        self.settings = settings
        self.external = external  # tools the caller runs: a call to one ends the episode
        model = getattr(engine, "model", None)
        self.stop_ids = stop_token_ids(model, self.tokenizer) if model is not None else {self.tokenizer.eos_token_id}

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingParams) -> list[Episode]:
        with ThreadPoolExecutor(max_workers=self.settings.workers) as pool:
            policy = ToolPolicy(self.chat, self.settings, self.stop_ids, pool, self.external)
            trajectories = run_turns(self.engine, policy, prompts, sampling)
        return [policy.episode(trajectory) for trajectory in trajectories]
