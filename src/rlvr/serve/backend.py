"""The model side of the server: a validated request becomes a `Job` (rendered prompts, sampling, the generation mode),
and a group of jobs becomes one call of the training rollout's own machinery.

Three modes, each the code training and evaluation run, never a copy of it:

- `plain`: the rollout engine itself, one turn; the only mode a stream gets token by token (`generate_streaming`);
- `tools`: the tool loop (`rlvr.rollout.tool_loop`): the recipe's tools run here between the model's turns; a request
  that brings its own `tools` gets those instead, and a call to one ends the reply (`finish_reason: tool_calls`)
  for the client to run;
- `thinking`: budget forcing (`rlvr.eval.thinking`), as `rlvr eval --budgets` runs it: without tools, the thinking
  held to a budget of tokens and the answer asked for after it.

Tools and thinking stream nothing while they run: their text is cut and rearranged after generation (earlier turns
go to `tool_exchange`, forced cues are inserted), so a stream of theirs gets the finished reply's fields at the end.

Prompts are rendered by the same `ChatFormat` as in training, from the client's messages; a conversation without a
system message opens with the recipe's prompt (`Assistant.opening`), as `rlvr chat` does.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from rlvr.assistant import Assistant
from rlvr.errors import ConfigError, parser_limit
from rlvr.eval.thinking import EFFORT_BUDGETS, THINKING_SYSTEM_PROMPT, generate_with_budget, split_thinking
from rlvr.registry import Registry
from rlvr.rollout.base import RolloutEngine, SamplingParams, TokenCallback
from rlvr.rollout.sampler import tool_loop_settings
from rlvr.rollout.tool_loop import ToolLoop
from rlvr.seeds import derive_seed
from rlvr.serve.schema import ChatCompletionRequest, ChatMessage, CompletionRequest, EffortLevel, ToolSpec
from rlvr.serve.streaming import TextStream, stop_index
from rlvr.tools.base import Tool
from rlvr.tools.protocol import ChatFormat
from rlvr.types import Episode


class RequestError(Exception):
    """A request the server cannot serve as sent: answered with an OpenAI error body and a 4xx status."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.param, self.code, self.status = message, param, code, status


class ServeSettings(BaseModel):
    """How the server batches and what a request gets by default (`rlvr serve`'s options)."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(8, ge=1, description="sequences generated together, at most")
    batch_window_ms: float = Field(20.0, ge=0.0, description="how long the worker waits for more requests to batch")
    max_tokens: int = Field(256, ge=1, description="model tokens per reply when a request sets no max_tokens")
    # reasoning_effort -> thinking budget in tokens; the table `rlvr eval --effort` uses unless set.
    effort_budgets: dict[EffortLevel, Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: dict(EFFORT_BUDGETS))


def serve_settings(batch_size: int, batch_window_ms: float, max_tokens: int, effort_budgets: str | None) -> ServeSettings:
    """`rlvr serve`'s options as settings; `effort_budgets` as `low=64,high=2048` (levels left out keep their budget)."""
    budgets = dict(EFFORT_BUDGETS)
    for part in (effort_budgets or "").split(","):
        level, _, tokens = part.partition("=")
        if not part.strip():
            continue
        if level.strip() not in EFFORT_BUDGETS or not tokens.strip().isdigit() or int(tokens) < 1:
            raise ConfigError(f"--effort-budgets: expected level=tokens for {', '.join(EFFORT_BUDGETS)}, got {part!r}")
        budgets[level.strip()] = int(tokens)
    return ServeSettings(batch_size=batch_size, batch_window_ms=batch_window_ms, max_tokens=max_tokens, effort_budgets=budgets)


# A streamed request's text as it is decoded: (choice index, the new text).
DeltaSink = Callable[[int, str], None]


@dataclass
class Generated:
    """One choice as the rollout left it: the final turn's text, the turns before it, why it ended, its compute."""

    text: str
    exchange: list[dict[str, Any]]  # the assistant turns that made calls and the tool results, in chat format
    stop: str  # end_of_turn, length, max_turns or tool_calls
    completion_tokens: int  # tokens the model wrote (not tool results, not forced cues)
    thinking_tokens: int = 0


@dataclass(eq=False)
class Job:
    """One request's generation: its prompt rendered once per choice (n copies), and how to generate it."""

    mode: str
    prompts: list[list[int]]
    sampling: SamplingParams
    seeded: bool  # the client chose the seed; else the batch's seed is used, so unseeded requests batch together
    n: int = 1  # choices per prompt: `prompts` holds each prompt n times in a row
    stop: tuple[str, ...] = ()  # the client's stop strings, cut off the answer as OpenAI does
    budget: int | None = None
    sampler: RolloutEngine | ToolLoop | None = None  # what generates a tools job: the tool loop of its tool set
    client_tools: tuple[str, ...] = ()  # the schemas (JSON) of the client's tools: a loop serves equal ones only
    # A streamed request's sink for its text as it is decoded, (choice index, new text); called on the worker thread.
    deltas: DeltaSink | None = None

    @property
    def key(self) -> tuple[Any, ...]:
        """Jobs with equal keys run in one engine call. A sampled request with the client's own seed runs alone: one
        call draws from one generator, so its answer would otherwise depend on the requests it shared a call with."""
        alone = id(self) if self.seeded and not self.sampling.greedy else None
        return (self.mode, self.sampling, self.seeded, self.budget, self.client_tools, alone)

    @property
    def size(self) -> int:
        return len(self.prompts)


# mode -> generate(model, the group's prompts, sampling, the group's first job, the streamed rows' listener or None)
# -> one Generated per prompt
ModeRunner = Callable[["ServedModel", list[list[int]], SamplingParams, Job, TokenCallback | None], list[Generated]]
MODES: Registry[ModeRunner] = Registry("generation mode")


def _client_tool(spec: ToolSpec) -> Tool:
    def session() -> Any:  # never opened: the tool loop ends the reply at a call to a client's tool
        raise RuntimeError(f"{spec.function.name} is the client's tool; the server does not run it")

    function = spec.function
    return Tool(function.name, function.description, function.parameters, session)


def chat_messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """The client's messages in the form `ChatFormat` renders (training's): call arguments as objects, each tool
    result named after its call, `developer` as `system`. Earlier reasoning is not rendered again."""
    names: dict[str, str] = {}  # tool_call_id -> the function it called
    converted: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        if message.tool_calls:
            calls = []
            for number, call in enumerate(message.tool_calls):
                names[call.id] = call.function.name
                where = f"messages[{index}].tool_calls[{number}].function.arguments"
                calls.append(
                    {
                        "type": "function",
                        "function": {"name": call.function.name, "arguments": _arguments(call.function.arguments, where)},
                    }
                )
            converted.append({"role": "assistant", "content": message.text, "tool_calls": calls})
        elif message.role == "tool":
            name = message.name or names.get(message.tool_call_id or "", "")
            converted.append({"role": "tool", "name": name, "content": message.text})
        else:
            converted.append({"role": "system" if message.role == "developer" else message.role, "content": message.text})
    return converted


def _arguments(text: str, param: str) -> Any:
    try:
        return json.loads(text) if text.strip() else {}  # some clients send "" for a call without arguments
    except json.JSONDecodeError as error:
        raise RequestError(f"not valid JSON: {error.msg} at character {error.pos}", param) from None
    except (ValueError, RecursionError) as error:  # valid syntax that Python does not read: a huge integer, deep nesting
        raise RequestError(f"not valid JSON: {parser_limit(error)}", param) from None


class ServedModel:
    """The loaded model with the recipe's environment and tools (an `Assistant`, as `rlvr chat` has it)."""

    def __init__(self, assistant: Assistant, name: str, settings: ServeSettings) -> None:
        self.assistant = assistant
        self.name = name
        self.settings = settings
        self.tokenizer = assistant.tokenizer
        self.engine = assistant.engine
        self.config = assistant.config
        self.recipe_tools: list[Tool] = list(assistant.chat.tools)
        self.plain = ChatFormat(self.tokenizer)

    # ---- requests -> jobs ----------------------------------------------------------------------------------------
    def check_model(self, model: str) -> None:
        if model != self.name:
            raise RequestError(
                f"the model {model!r} does not exist; this server serves {self.name!r}", "model", "model_not_found", 404
            )

    def chat_job(self, request: ChatCompletionRequest) -> Job:
        budget = self._budget(request)
        client = (request.tools or []) if request.tool_choice != "none" else []
        if budget is not None and client:
            raise RequestError(
                "thinking control runs without tools (as in evaluation): send tools or a thinking budget, not both", "tools"
            )
        messages = chat_messages(request.messages)
        max_tokens = request.max_completion_tokens or request.max_tokens or self.settings.max_tokens
        sampling = self._sampling(request, max_tokens)
        if budget is not None:
            prompt = self._render(self.plain, self.assistant.opening(messages, THINKING_SYSTEM_PROMPT))
            return self._job("thinking", prompt, request, sampling, budget=budget)
        if request.tool_choice == "none" or not (client or self.recipe_tools):
            return self._job("plain", self._render(self.plain, self.assistant.opening(messages)), request, sampling)
        if not client:  # the recipe's tools, run here: the very loop `rlvr chat` runs
            prompt = self._render(self.assistant.chat, self.assistant.opening(messages))
            return self._job("tools", prompt, request, sampling, sampler=self.assistant.sampler)
        # The client's tools, in place of the recipe's: the model sees exactly those, and the client runs them.
        tools = self._client_tools(client)
        chat = ChatFormat(self.tokenizer, tools)
        loop = ToolLoop(self.engine, chat, tool_loop_settings(self.config), frozenset(t.name for t in tools))
        schemas = tuple(json.dumps(spec.model_dump(), sort_keys=True) for spec in client)
        prompt = self._render(chat, self.assistant.opening(messages))
        return self._job("tools", prompt, request, sampling, sampler=loop, client_tools=schemas)

    def completion_job(self, request: CompletionRequest) -> Job:
        """A text completion: the prompt as it is (no chat template, no tools), one turn of the engine."""
        prompts = request.prompts
        if not prompts or not all(prompts):
            raise RequestError("expected a non-empty prompt (or a list of non-empty prompts)", "prompt")
        ids = [self.tokenizer.encode(prompt) for prompt in prompts]
        job = self._job("plain", ids[0], request, self._sampling(request, request.max_tokens))
        job.prompts = [prompt for prompt in ids for _ in range(request.n)]
        return job

    def _budget(self, request: ChatCompletionRequest) -> int | None:
        tokens = request.budget_tokens
        if request.reasoning_effort is not None and tokens is not None:
            raise RequestError("give reasoning_effort or thinking_budget, not both", "reasoning_effort")
        if request.reasoning_effort is not None:
            return self.settings.effort_budgets[request.reasoning_effort]
        return tokens

    def _client_tools(self, specs: list[ToolSpec]) -> list[Tool]:
        names: set[str] = set()
        for index, spec in enumerate(specs):
            if spec.function.name in names:
                raise RequestError(f"two tools are named {spec.function.name!r}", f"tools[{index}].function.name")
            names.add(spec.function.name)
        return [_client_tool(spec) for spec in specs]

    def _sampling(self, request: ChatCompletionRequest | CompletionRequest, max_tokens: int) -> SamplingParams:
        recipe = self.config.sampling
        temperature = recipe.temperature if request.temperature is None else request.temperature
        if temperature == 0:  # greedy draws nothing: no seed, top-p or top-k, so any greedy requests batch together
            return SamplingParams(greedy=True, max_new_tokens=max_tokens, stop=request.stop_strings)
        top_p = recipe.top_p if request.top_p is None else request.top_p
        top_k = recipe.top_k if request.top_k is None else request.top_k
        seed = request.seed or 0
        return SamplingParams(temperature, top_p, top_k, max_tokens, seed=seed, stop=request.stop_strings)

    def _render(self, chat: ChatFormat, messages: list[dict[str, Any]]) -> list[int]:
        try:
            return chat.prompt_ids(messages)
        except Exception as error:  # a chat template refuses a conversation (role order, ...) by raising from Jinja
            raise RequestError(f"the chat template cannot render these messages: {error}", "messages") from None

    def _job(self, mode: str, prompt: list[int], request: Any, sampling: SamplingParams, **extra: Any) -> Job:
        room = self.assistant.context_length - len(prompt)
        if room < sampling.max_new_tokens:  # refused here, as a client error, not as the engine's failure mid-batch
            param = "messages" if isinstance(request, ChatCompletionRequest) else "prompt"
            raise RequestError(
                f"the prompt is {len(prompt)} tokens and max_tokens {sampling.max_new_tokens}: together over the model's "
                f"context of {self.assistant.context_length} tokens (ask for at most {max(room, 0)} tokens, or send less)",
                param,
                "context_length_exceeded",
            )
        seeded = request.seed is not None or sampling.greedy  # greedy draws nothing: any seed batches with any
        return Job(mode, [prompt] * request.n, sampling, seeded, request.n, request.stop_strings, **extra)

    # ---- jobs -> generations --------------------------------------------------------------------------------------
    def generate(self, jobs: list[Job], batch: int) -> list[list[Generated]]:
        """One engine call (or tool loop, or budget forcing) for jobs of one key; each job's choices, in order."""
        first = jobs[0]
        sampling = first.sampling if first.seeded else replace(first.sampling, seed=derive_seed(self.config.seed, batch))
        prompts = [prompt for job in jobs for prompt in job.prompts]
        generated = MODES[first.mode](self, prompts, sampling, first, self._listener(jobs))
        results, start = [], 0
        for job in jobs:
            results.append([_cut_at_stop(g, job.stop) for g in generated[start : start + job.size]])
            start += job.size
        return results

    def _listener(self, jobs: list[Job]) -> TokenCallback | None:
        """What decodes the streamed jobs' rows of one engine call as they grow and hands each its new text; None when
        no job streams, so the call runs exactly as it would without a server."""
        rows: list[tuple[DeltaSink, int, TextStream] | None] = [
            (job.deltas, choice, TextStream(self.tokenizer, job.stop)) if job.deltas else None
            for job in jobs
            for choice in range(job.size)
        ]
        if not any(rows):
            return None

        def on_tokens(row: int, ids: list[int]) -> None:
            if (target := rows[row]) is not None and (text := target[2].push(ids)):
                target[0](target[1], text)

        return on_tokens

    def thinking_tokens(self, text: str) -> int:
        thinking, _ = split_thinking(text)
        return len(self.tokenizer.encode(thinking, add_special_tokens=False)) if thinking else 0

    def from_episode(self, episode: Episode) -> Generated:
        messages = episode.meta.get("messages") or []
        stop = episode.meta["tools"]["stop"] if "tools" in episode.meta else ("length" if episode.truncated else "end_of_turn")
        return Generated(episode.text, messages[:-1], stop, episode.generated_tokens, self.thinking_tokens(episode.text))


def _cut_at_stop(generated: Generated, stop: tuple[str, ...]) -> Generated:
    """The answer up to the first of the client's stop strings (the engines keep the stop string; OpenAI does not)."""
    end = stop_index(generated.text, stop)
    if end is None:
        return generated
    return replace(generated, text=generated.text[:end], stop="end_of_turn")


@MODES.register("plain")
def _plain(
    model: ServedModel, prompts: list[list[int]], sampling: SamplingParams, job: Job, on_tokens: TokenCallback | None
) -> list[Generated]:
    if on_tokens is None:
        episodes = model.engine.generate(prompts, sampling)
    else:
        episodes = model.engine.generate_streaming(prompts, sampling, on_tokens)
    return [model.from_episode(episode) for episode in episodes]


@MODES.register("tools")
def _tools(
    model: ServedModel, prompts: list[list[int]], sampling: SamplingParams, job: Job, on_tokens: TokenCallback | None
) -> list[Generated]:
    assert job.sampler is not None  # set for every tools job
    return [model.from_episode(episode) for episode in job.sampler.generate(prompts, sampling)]


@MODES.register("thinking")
def _thinking(
    model: ServedModel, prompts: list[list[int]], sampling: SamplingParams, job: Job, on_tokens: TokenCallback | None
) -> list[Generated]:
    # The answer may take as many tokens as the request's max_tokens, after a thinking part of at most the budget.
    results = generate_with_budget(model.engine, model.tokenizer, prompts, sampling, job.budget, sampling.max_new_tokens)
    return [
        Generated(r.text, [], "length" if r.truncated else "end_of_turn", sum(r.generated_mask), r.thinking_tokens)
        for r in results
    ]
