"""`rlvr serve` on the packaged model, spoken to with the official `openai` client: plain and streamed answers, a tool
the server runs (the python-math recipe's), a client's tool round trip, thinking budgets and OpenAI error bodies.

The server runs in this process (uvicorn on a thread, a socket bound to a free port) on the transformers engine,
greedy, so every answer is deterministic.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace

import httpx
import pytest
import torch
from typer.testing import CliRunner

from rlvr.rollout.base import RolloutEngine, SamplingParams
from rlvr.types import Episode

openai = pytest.importorskip("openai", reason="the serve extra: pip install 'rlvr[serve]'")
uvicorn = pytest.importorskip("uvicorn", reason="the serve extra: pip install 'rlvr[serve]'")

MODEL = "smollm2-135m"
BUDGETS = {"low": 4, "medium": 12, "high": 24}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city."}},
            "required": ["city"],
        },
    },
}
# One worked exchange: SmolLM2-135M calls a tool it has seen called, not one it was only told about.
WEATHER_DEMO = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the weather in Rome?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}
        ],
    },
    {"role": "tool", "tool_call_id": "call_0", "content": "18 C, sunny"},
    {"role": "assistant", "content": "It is 18 C and sunny in Rome."},
    {"role": "user", "content": "What is the weather in Paris?"},
]
PLAIN = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]


@contextmanager
def _serving(app) -> Iterator[str]:
    """`app` on uvicorn in a thread, on a free port: its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(600):  # startup only waits for the app (the model is already loaded)
        if server.started or not thread.is_alive():
            break
        time.sleep(0.05)
    assert server.started, "the server did not start"
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    finally:
        server.should_exit = True
        thread.join()


@pytest.fixture(scope="module")
def base_url():
    from rlvr.assistant import Assistant
    from rlvr.config import load_config
    from rlvr.serve.app import create_app
    from rlvr.serve.backend import ServedModel, ServeSettings

    torch.manual_seed(0)
    config = load_config("python-math", ["rollout.engine=transformers", f"model.path={MODEL}"])
    settings = ServeSettings(max_tokens=48, effort_budgets=BUDGETS)
    with _serving(create_app(ServedModel(Assistant(MODEL, config), MODEL, settings))) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url):
    return openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)


def test_models_lists_the_served_model(client):
    assert [m.id for m in client.models.list().data] == [MODEL]


def test_a_plain_answer_and_its_stream_agree(client, base_url):
    request = {"model": MODEL, "messages": PLAIN, "temperature": 0, "max_tokens": 8, "tool_choice": "none"}
    answer = client.chat.completions.create(**request)
    choice = answer.choices[0]
    assert choice.message.content and choice.finish_reason in ("stop", "length")
    assert answer.usage.completion_tokens > 0 and answer.usage.prompt_tokens > 0
    chunks = list(client.chat.completions.create(**request, stream=True, stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == choice.message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == choice.finish_reason
    assert chunks[-1].usage.completion_tokens == answer.usage.completion_tokens
    # On the wire: server-sent events in OpenAI's chunk format, the last one `[DONE]`.
    with httpx.stream("POST", f"{base_url}/chat/completions", json={**request, "stream": True}, timeout=120) as response:
        events = [line for line in response.iter_lines() if line]
    assert response.headers["content-type"].startswith("text/event-stream")
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[0].removeprefix("data: "))["object"] == "chat.completion.chunk"


def test_a_text_completion(client):
    answer = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=4, temperature=0)
    assert answer.choices[0].text and answer.choices[0].finish_reason == "length"
    assert answer.usage.completion_tokens == 4


def test_a_streamed_text_completion_stops_where_the_answer_does(client):
    request = {"model": MODEL, "prompt": "One, two, three,", "max_tokens": 12, "temperature": 0, "stop": [" five"], "n": 2}
    answer = client.completions.create(**request)
    assert answer.choices[0].finish_reason == "stop" and "five" not in answer.choices[0].text
    chunks = list(client.completions.create(**request, stream=True))
    for choice in answer.choices:  # each choice's own deltas
        assert "".join(c.choices[0].text for c in chunks if c.choices[0].index == choice.index) == choice.text


def test_concurrent_requests_are_all_answered(client):
    from concurrent.futures import ThreadPoolExecutor

    prompts = ["The capital of France is", "One, two, three,", "Hello"]
    with ThreadPoolExecutor(len(prompts)) as pool:
        answers = list(pool.map(lambda p: client.completions.create(model=MODEL, prompt=p, max_tokens=2, temperature=0), prompts))
    assert all(1 <= a.usage.completion_tokens <= 2 and a.choices[0].text for a in answers)


def test_the_recipes_tool_runs_on_the_server(client):
    # No system message: the recipe's prompt opens the conversation (its python demonstrations), as in training.
    question = [{"role": "user", "content": "What is 4821 * 37 + 1290?"}]
    answer = client.chat.completions.create(model=MODEL, messages=question, temperature=0, max_tokens=64)
    choice = answer.choices[0]
    call, result = choice.tool_exchange[:2]
    (made,) = call["tool_calls"]
    assert made["function"]["name"] == "python" and "4821" in json.loads(made["function"]["arguments"])["code"]
    assert result["role"] == "tool" and result["tool_call_id"] == made["id"]
    assert result["content"] == str(4821 * 37 + 1290)  # the sandbox ran the model's code
    assert str(4821 * 37 + 1290) in choice.message.content and choice.finish_reason == "stop"


def test_a_client_tool_is_returned_and_the_conversation_goes_on(client):
    request = {"model": MODEL, "tools": [WEATHER], "temperature": 0, "max_tokens": 40}
    first = client.chat.completions.create(messages=WEATHER_DEMO, **request).choices[0]
    assert first.finish_reason == "tool_calls" and "tool_exchange" not in first.model_extra  # not run on the server
    (call,) = first.message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    history = [*WEATHER_DEMO, first.message.model_dump(exclude_none=True)]
    history.append({"role": "tool", "tool_call_id": call.id, "content": "12 C, rain"})
    second = client.chat.completions.create(messages=history, **request).choices[0]
    assert second.finish_reason == "stop" and not second.message.tool_calls
    assert "12 C" in second.message.content


def test_reasoning_effort_sets_the_thinking_budget(client):
    request = {"model": MODEL, "messages": PLAIN[1:], "temperature": 0, "max_tokens": 4}
    low = client.chat.completions.create(**request, reasoning_effort="low")
    high = list(
        client.chat.completions.create(**request, reasoning_effort="high", stream=True, stream_options={"include_usage": True})
    )
    spent = [answer.usage.completion_tokens_details.reasoning_tokens for answer in (low, high[-1])]
    assert spent[0] == BUDGETS["low"] < spent[1] <= BUDGETS["high"]
    message = low.choices[0].message
    assert message.reasoning_content and "</think>" not in message.reasoning_content + message.content
    streamed = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in high if c.choices)
    assert len(streamed) > len(message.reasoning_content) and "</think>" not in streamed
    budget = client.chat.completions.create(**{**request, "max_tokens": 1}, extra_body={"thinking_budget": 2})
    assert budget.usage.completion_tokens_details.reasoning_tokens == 2


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        (b"{not json", 400, None),
        (b"[1, 2]", 400, None),
        ({"model": MODEL}, 400, "messages"),
        ({"model": MODEL, "messages": []}, 400, "messages"),
        ({"model": MODEL, "messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages[0].role"),
        ({"model": MODEL, "messages": [{"role": "user", "content": 3}]}, 400, "messages[0].content"),
        ({"model": MODEL, "messages": PLAIN, "temperature": "hot"}, 400, "temperature"),
        ({"model": MODEL, "messages": PLAIN, "max_tokens": 0}, 400, "max_tokens"),
        ({"model": MODEL, "messages": PLAIN, "reasoning_effort": "extreme"}, 400, "reasoning_effort"),
        ({"model": MODEL, "messages": PLAIN, "reasoning_effort": "low", "thinking_budget": 8}, 400, "reasoning_effort"),
        ({"model": MODEL, "messages": PLAIN, "reasoning_effort": "low", "tools": [WEATHER]}, 400, "tools"),
        ({"model": MODEL, "messages": PLAIN, "tools": [WEATHER, WEATHER]}, 400, "tools[1].function.name"),
        ({"model": MODEL, "messages": PLAIN, "frequency_penalty": 1.0}, 400, "frequency_penalty"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "word " * 9000}]}, 400, "messages"),
        ({"model": MODEL, "messages": PLAIN, "max_tokens": 10**6}, 400, "messages"),
        ({"model": "gpt-5", "messages": PLAIN}, 404, "model"),
        ({"model": MODEL, "messages": [{"role": "tool", "content": "x"}]}, 400, "messages[0]"),
    ],
)
def test_a_malformed_request_gets_an_openai_error(base_url, body, status, param):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = httpx.post(
        f"{base_url}/chat/completions", content=content, headers={"content-type": "application/json"}, timeout=120
    )
    assert response.status_code == status
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["message"]
    assert set(error) == {"message", "type", "param", "code"}


def test_unimplemented_fields_are_accepted_at_their_defaults(client):
    defaults = {"frequency_penalty": 0, "presence_penalty": 0.0, "logprobs": False, "response_format": {"type": "text"}}
    answer = client.chat.completions.create(model=MODEL, messages=PLAIN, temperature=0, max_tokens=2, **defaults)
    assert answer.choices[0].message.content


def test_the_openai_client_raises_the_error(client):
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model=MODEL, messages=PLAIN, reasoning_effort="extreme")
    assert raised.value.status_code == 400 and raised.value.body["param"] == "reasoning_effort"
    with pytest.raises(openai.NotFoundError):
        client.post("/nowhere", body={}, cast_to=httpx.Response)


def test_queued_requests_are_batched_by_their_settings():
    from rlvr.serve.backend import Generated, Job
    from rlvr.serve.batcher import Batcher

    calls = []

    def run(jobs, batch):
        calls.append((batch, [job.prompts for job in jobs]))
        return [[Generated(str(prompt), [], "end_of_turn", 1) for prompt in job.prompts] for job in jobs]

    def job(prompt, temperature=0.5):
        return lambda: Job("plain", [[prompt]], SamplingParams(temperature=temperature), seeded=False)

    def broken():
        raise ValueError("cannot render")

    batcher = Batcher(run, window_s=0.0, max_sequences=3)
    # Queued before the worker starts: the first batch takes what fits, grouped by settings, a broken request alone.
    futures = [batcher.submit(job(1), 1), batcher.submit(broken, 1), batcher.submit(job(2, 1.0), 1), batcher.submit(job(3), 1)]
    batcher.start()
    results = [future.exception() or future.result()[1][0].text for future in futures]
    batcher.stop()
    assert calls == [(0, [[[1]]]), (0, [[[2]]]), (1, [[[3]]])]
    assert [str(r) for r in results] == ["[1]", "cannot render", "[2]", "[3]"]


def test_serve_command_rejects_a_bad_effort_table():
    from rlvr.cli import app

    result = CliRunner().invoke(app, ["serve", MODEL, "--effort-budgets", "low=many"])
    assert result.exit_code == 2 and "--effort-budgets" in result.output


class _Scripted(RolloutEngine):
    """Writes the next scripted turn for every row."""

    def __init__(self, tokenizer, turns: list[str]) -> None:
        self.tokenizer, self.turns = tokenizer, list(turns)

    def generate(self, prompts, sampling):
        ids = self.tokenizer.encode(self.turns.pop(0), add_special_tokens=False)
        return [Episode(list(p), ids, [0.0] * len(ids), [1] * len(ids), text=self.tokenizer.decode(ids)) for p in prompts]

    def update_weights(self, weights):
        pass


def test_the_tool_loop_runs_its_own_tools_and_returns_external_calls(tokenizer):
    from rlvr.rollout.tool_loop import ToolLoop, ToolLoopSettings
    from rlvr.serve.backend import _client_tool
    from rlvr.serve.schema import ToolSpec
    from rlvr.tools.base import Tool
    from rlvr.tools.protocol import ChatFormat, call_text

    ran = []
    counter = Tool("count", "Count calls.", {"type": "object", "properties": {}}, lambda: lambda arguments: ran.append(1) or "1")
    weather = _client_tool(ToolSpec.model_validate(WEATHER))
    chat = ChatFormat(tokenizer, [counter, weather])
    turns = ['<tool_call>{"name": "get_weather"', call_text("count", {}), call_text("get_weather", {"city": "Paris"}), "unused"]
    loop = ToolLoop(_Scripted(tokenizer, turns), chat, ToolLoopSettings(max_turns=5), frozenset({"get_weather"}))
    (episode,) = loop.generate([chat.prompt_ids(PLAIN)], SamplingParams(greedy=True, max_new_tokens=200))
    # The unclosed call is answered with an error, the server's own tool runs, the client's call ends the episode.
    assert episode.meta["tools"]["stop"] == "tool_calls" and episode.meta["tools"]["errors"] == 1 and ran == [1]
    assert episode.text == turns[2] and [m["role"] for m in episode.meta["messages"]] == ["assistant", "tool"] * 2 + ["assistant"]
    with pytest.raises(ValueError, match="not among"):
        ToolLoop(loop.engine, chat, external=frozenset({"search"}))


class _Streaming(RolloutEngine):
    """Tells every row a reply's first tokens, then waits until the test has read them before it tells the rest:
    whether a chunk came before the reply was finished is then known, not timed."""

    def __init__(self, tokenizer, first: str, rest: str) -> None:
        self.tokenizer = tokenizer
        self.parts = [tokenizer.encode(part, add_special_tokens=False) for part in (first, rest)]
        self.read, self.finished = threading.Event(), threading.Event()

    def generate(self, prompts, sampling):
        return self.generate_streaming(prompts, sampling, lambda row, ids: None)

    def generate_streaming(self, prompts, sampling, on_tokens):
        for number, part in enumerate(self.parts):
            if number:
                self.read.wait(timeout=120)  # a bound against a broken test, not a timing it depends on
            for row in range(len(prompts)):
                for token in part:
                    on_tokens(row, [token])
        self.finished.set()
        ids = [*self.parts[0], *self.parts[1], self.tokenizer.eos_token_id]
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return [Episode(list(p), ids, [0.0] * len(ids), [1] * len(ids), text=text) for p in prompts]

    def update_weights(self, weights):
        pass


@pytest.fixture
def streaming(tokenizer):
    """A server on the scripted streaming engine: its URL and the engine."""
    from rlvr.config import load_config
    from rlvr.serve.app import create_app
    from rlvr.serve.backend import ServedModel, ServeSettings

    engine = _Streaming(tokenizer, "Hello there", ", world.")
    assistant = SimpleNamespace(
        config=load_config(None),
        tokenizer=tokenizer,
        engine=engine,
        sampler=engine,
        chat=SimpleNamespace(tools=[]),
        opening=lambda messages, system_prompt=None: [dict(m) for m in messages],
        context_length=8192,
    )
    with _serving(create_app(ServedModel(assistant, "scripted", ServeSettings(batch_window_ms=0)))) as url:
        try:
            yield url, engine
        finally:
            engine.read.set()  # a test that failed before reading leaves no worker waiting: the server can stop


def _events(lines: Iterator[str]) -> Iterator[dict]:
    for line in lines:
        if line.startswith("data: ") and line != "data: [DONE]":
            yield json.loads(line.removeprefix("data: "))


def test_a_stream_sends_text_before_the_reply_is_finished(streaming):
    url, engine = streaming
    request = {"model": "scripted", "messages": PLAIN, "temperature": 0, "n": 2, "stream": True}
    with httpx.stream("POST", f"{url}/chat/completions", json=request, timeout=120) as response:
        events = _events(response.iter_lines())
        received = []
        for event in events:
            received.append(event)
            if event["choices"] and event["choices"][0]["delta"].get("content"):
                break
        assert not engine.finished.is_set()  # the engine is still waiting for this test
        engine.read.set()
        received += list(events)
    for index in (0, 1):  # each choice its own deltas, which add up to the answer
        deltas = [e["choices"][0] for e in received if e["choices"] and e["choices"][0]["index"] == index]
        assert "".join(d["delta"].get("content") or "" for d in deltas) == "Hello there, world."
        assert deltas[0]["delta"]["role"] == "assistant" and deltas[-1]["finish_reason"] == "stop"
    answer = httpx.post(f"{url}/chat/completions", json={**request, "stream": False}, timeout=120).json()
    assert [c["message"]["content"] for c in answer["choices"]] == ["Hello there, world."] * 2


def test_a_client_that_leaves_mid_stream_does_not_stop_the_server(streaming):
    url, engine = streaming
    request = {"model": "scripted", "prompt": "Hi", "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{url}/completions", json=request, timeout=120) as response:
        first = next(_events(response.iter_lines()))
    assert first["choices"][0]["text"] == "Hello"  # the first token's text; then the client is gone, mid-reply
    engine.read.set()
    answer = httpx.post(f"{url}/completions", json={**request, "stream": False}, timeout=120).json()
    assert answer["choices"][0]["text"] == "Hello there, world."
