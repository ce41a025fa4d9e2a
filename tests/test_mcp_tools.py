"""MCP servers' tools as rlvr tools, against a tiny real MCP server (tests/scripts/mcp_server.py) over stdio: listing
and schemas, calls through the rlvr tool interface and the tool loop, errors at start and mid-call, closing, and a
training step whose episodes call an MCP tool."""

from __future__ import annotations

import base64
import json
import os
import re
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest
import torch

from rlvr.config import ConfigError, MCPServerConfig, ToolsConfig, load_config
from rlvr.rollout.base import RolloutEngine, SamplingParams
from rlvr.rollout.tool_loop import TRUNCATION_MARKER, ToolLoop, ToolLoopSettings
from rlvr.tools import ToolError, build_tools
from rlvr.tools.protocol import ChatFormat, call_text, signature
from rlvr.types import Episode

pytest.importorskip("mcp")

from rlvr.tools.mcp_client import close_mcp_servers, mcp_tools, result_text  # noqa: E402  (needs the optional SDK)

SERVER = str(Path(__file__).resolve().parent / "scripts" / "mcp_server.py")
CALC = MCPServerConfig(command=sys.executable, args=[SERVER], name="calc")
HASTY = CALC.model_copy(update={"timeout_seconds": 3.0})  # for calls that overrun their deadline (a call answers in ms)


@pytest.fixture(scope="module", autouse=True)
def _stop_servers():
    yield
    close_mcp_servers()


def _tools(config: MCPServerConfig = CALC) -> dict:
    return {tool.name: tool for tool in mcp_tools([config])}


def _call(tool, **arguments) -> str:
    return tool.session()(tool.validate(arguments))


# ---------------------------------------------------------------- listing


def test_server_tools_keep_the_servers_schema_and_show_like_builtin_ones(tokenizer):
    tools = _tools()
    assert list(tools) == ["calc_add", "calc_reverse", "calc_getenv", "calc_pid", "calc_sleep", "calc_refuse", "calc_die"]
    add = tools["calc_add"]
    assert add.description == "Add two integers."
    assert add.parameters == {  # exactly what the server declared, title keys included
        "properties": {"a": {"title": "A", "type": "integer"}, "b": {"title": "B", "type": "integer"}},
        "required": ["a", "b"],
        "title": "addArguments",
        "type": "object",
    }
    assert add.schema()["function"]["name"] == "calc_add"
    assert signature(add) == "calc_add(a: integer, b: integer) - Add two integers."
    prompt = tokenizer.decode(ChatFormat(tokenizer, list(tools.values())).prompt_ids([{"role": "user", "content": "?"}]))
    assert "- calc_add(a: integer, b: integer) - Add two integers." in prompt


def test_the_config_chooses_the_tools_their_names_and_the_environment(monkeypatch):
    monkeypatch.setenv("RLVR_TEST_SECRET", "s3cret")
    env = {"GREETING": "hello", "TOKEN": "${RLVR_TEST_SECRET}"}
    config = CALC.model_copy(update={"name": None, "tools": ["reverse", "add", "getenv"], "env": env})
    tools = _tools(config)
    assert list(tools) == ["reverse", "add", "getenv"]
    assert [_call(tools["getenv"], name=name) for name in ("GREETING", "TOKEN", "RLVR_TEST_SECRET")] == [
        "hello",
        "s3cret",  # read from rlvr's environment when the server starts
        "(unset)",  # only a few variables are inherited
    ]
    with pytest.raises(ConfigError, match=r"tools.mcp\[0\].tools: MCP server calc `.*` has no tool 'mul' \(it has: add, rev"):
        _tools(CALC.model_copy(update={"tools": ["add", "mul"]}))
    # Servers are started once per config: the same config again is the same process.
    assert _call(_tools()["calc_pid"]) == _call(_tools()["calc_pid"])
    with pytest.raises(ConfigError, match="tools.mcp: two servers have a tool 'add': give one of them a `name`"):
        mcp_tools([config, config.model_copy(update={"tools": ["add"]})])


def test_build_tools_adds_the_servers_tools_to_the_named_ones():
    settings = ToolsConfig(mcp=[CALC.model_copy(update={"tools": ["add"]})])
    assert [t.name for t in build_tools(["python"], settings)] == ["python", "calc_add"]
    assert [t.name for t in build_tools(["calc_add"], settings)] == ["calc_add"]  # naming one is allowed, not needed
    with pytest.raises(ConfigError, match="tools.enabled: unknown tool 'calc_mul' .*calc_add"):
        build_tools(["calc_mul"], settings)
    with pytest.raises(ConfigError, match="tools.mcp"):
        load_config(None, ["tools.mcp=[{command: python, name: 'no spaces'}]"])


# ---------------------------------------------------------------- calls


def test_calls_through_the_rlvr_tool_interface():
    tools = _tools()
    assert _call(tools["calc_add"], a=2, b=40) == "42"
    assert _call(tools["calc_reverse"], text="stressed") == "desserts"
    with pytest.raises(ToolError, match="invalid arguments for calc_add: 'b' is a required property"):
        tools["calc_add"].validate({"a": 1})  # checked against the server's schema before anything is sent
    with pytest.raises(ToolError, match="^Error executing tool refuse: refused: no$"):
        _call(tools["calc_refuse"], reason="no")  # the server's own error result


def test_non_text_content_is_described_in_one_line():
    from mcp import types

    image = types.ImageContent(data=base64.b64encode(b"\x89PNG1234").decode(), mime_type="image/png")
    link = types.ResourceLink(uri="file:///notes.txt", name="notes", mime_type="text/plain")
    note = types.EmbeddedResource(resource=types.TextResourceContents(uri="file:///a.txt", text="inline text"))
    blob = types.EmbeddedResource(resource=types.BlobResourceContents(uri="file:///b.bin", blob="AAAA"))
    result = types.CallToolResult(content=[types.TextContent(text="seen:"), image, link, note, blob])
    assert result_text(result).splitlines() == [
        "seen:",
        "[image: image/png, 8 bytes]",
        "[resource link: file:///notes.txt (text/plain)]",
        "inline text",
        "[resource file:///b.bin: binary, 3 bytes]",
    ]
    assert result_text(types.CallToolResult(content=[], structured_content={"sum": 3})) == '{"sum": 3}'


def test_a_hung_call_is_a_deadline_error_and_the_server_goes_on():
    tools = _tools(HASTY)
    with pytest.raises(ToolError, match=r"MCP server calc `.*mcp_server.py`: sleep did not answer within 3 s"):
        _call(tools["calc_sleep"], seconds=60)
    assert _call(tools["calc_add"], a=1, b=2) == "3"


def test_a_server_that_dies_mid_call_is_named_in_the_error():
    doomed_config = CALC.model_copy(update={"name": "doomed"})
    doomed = _tools(doomed_config)
    pid = int(_call(doomed["doomed_pid"]))
    with pytest.raises(ToolError, match=r"MCP server doomed `.*mcp_server.py`: die failed: the connection closed .*dying on req"):
        _call(doomed["doomed_die"])
    _wait_gone(pid)
    assert _call(doomed["doomed_add"], a=1, b=2) == "3"  # the next call starts it again, through the same tools
    assert int(_call(doomed["doomed_pid"])) != pid


def test_servers_that_cannot_start_give_one_line_naming_the_command():
    missing = MCPServerConfig(command="no-such-mcp-server", args=["--x"])
    with pytest.raises(ConfigError, match=r"tools.mcp\[0\]: MCP server `no-such-mcp-server --x` did not start: FileNotFound"):
        mcp_tools([missing])
    crash = MCPServerConfig(command=sys.executable, args=[SERVER, "crash"])
    with pytest.raises(ConfigError, match="crash` did not start: .*stderr ends: mcp_server: cannot start on purpose"):
        mcp_tools([crash])
    hang = MCPServerConfig(command=sys.executable, args=[SERVER, "hang"], startup_timeout_seconds=0.5)
    key = r"\(tools.mcp\[0\].startup_timeout_seconds\)"
    with pytest.raises(ConfigError, match=rf"mcp_server.py hang` did not start within 0.5 s {key}"):
        mcp_tools([hang])


def test_closing_stops_every_server_process():
    pid = int(_call(_tools(CALC.model_copy(update={"name": "short"}))["short_pid"]))
    os.kill(pid, 0)  # running
    close_mcp_servers()
    _wait_gone(pid)
    assert _call(_tools()["calc_add"], a=2, b=2) == "4"  # a later build starts them again


def _wait_gone(pid: int) -> None:
    """Polls until the process is gone (the SDK reaps it), without making its timing part of the assertion."""
    for _ in range(200):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"MCP server process {pid} still runs")


# ---------------------------------------------------------------- episodes


class AddingEngine(RolloutEngine):
    """Plays a policy that calls the MCP `add` tool on the question's two numbers, then answers with the result it
    got back: exactly in even rows, off by one in odd ones (so advantages are not all zero)."""

    shares_weights = True

    def __init__(self, tokenizer, tool: str = "calc_add", arguments=None) -> None:
        self.tokenizer = tokenizer
        self.tool = tool
        self.arguments = arguments

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingParams) -> list[Episode]:
        episodes = []
        for row, prompt in enumerate(prompts):
            context = self.tokenizer.decode(prompt)
            results = re.findall(r"<tool_response>\n(.*?)\n</tool_response>", context, re.DOTALL)
            if results:  # the tool answered this episode
                answer = int(results[-1]) + row % 2 if re.fullmatch(r"-?\d+", results[-1]) else results[-1]
                text = f"Answer: {answer}<|im_end|>"
            else:
                a, op, b = re.findall(r"(\d+) ([+-]) (\d+) =", context)[-1]
                arguments = self.arguments or {"a": int(a), "b": int(b) if op == "+" else -int(b)}
                text = call_text(self.tool, arguments)
            ids = self.tokenizer.encode(text, add_special_tokens=False)[: sampling.max_new_tokens]
            episodes.append(Episode(list(prompt), ids, [-1.0] * len(ids), [1] * len(ids), text=self.tokenizer.decode(ids)))
        return episodes

    def update_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        pass


def test_results_are_cut_at_max_result_tokens_and_failures_counted(tokenizer):
    tools = _tools(HASTY)
    chat = ChatFormat(tokenizer, [tools["calc_reverse"], tools["calc_sleep"]])
    prompt = chat.prompt_ids([{"role": "user", "content": "1 + 1 ="}])
    settings = ToolLoopSettings(max_turns=2, max_result_tokens=4)
    long = AddingEngine(tokenizer, "calc_reverse", {"text": "a fairly long sentence to reverse " * 4})
    (episode,) = ToolLoop(long, chat, settings).generate([prompt], SamplingParams(max_new_tokens=64))
    (result,) = [m["content"] for m in episode.meta["messages"] if m["role"] == "tool"]
    assert result.endswith(TRUNCATION_MARKER) and len(tokenizer.encode(result.removesuffix(TRUNCATION_MARKER))) <= 4
    hung = AddingEngine(tokenizer, "calc_sleep", {"seconds": 60})
    (episode,) = ToolLoop(hung, chat, ToolLoopSettings(max_turns=2)).generate([prompt], SamplingParams(max_new_tokens=64))
    assert episode.meta["tools"]["errors"] == 1 and episode.meta["tools"]["calls"] == {"calc_sleep": 1}
    (result,) = [m["content"] for m in episode.meta["messages"] if m["role"] == "tool"]
    assert re.fullmatch(r"Error: MCP server calc `.*`: sleep did not answer within 3 s", result)


def test_a_training_step_whose_episodes_call_an_mcp_tool(tiny_model_dir, tmp_path, tokenizer):
    from rlvr.trainer import Trainer

    server = {"command": sys.executable, "args": [SERVER], "name": "calc", "tools": ["add"]}
    settings = [
        f"model.path={tiny_model_dir}",
        "rollout.engine=transformers",
        f"output_dir={tmp_path}",
        "env.task_config={min_terms: 2, max_terms: 2}",
        "env.eval_size=4",
        f"tools.mcp=[{json.dumps(server)}]",  # JSON is YAML
        "train.prompts_per_step=2",
        "train.group_size=4",
        "train.micro_batch_size=4",
        "sampling.max_new_tokens=64",  # the call takes ~40 model tokens, the answer the rest
        "scoring.workers=0",
        "algo.overlong_filter=false",
    ]
    trainer = Trainer(load_config(None, settings))
    assert trainer.tool_names == ["calc_add"] and isinstance(trainer.sampler, ToolLoop)
    trainer.sampler.engine = AddingEngine(tokenizer)
    before = [p.detach().clone() for p in trainer.params]

    episodes = trainer.rollout(0)
    assert [e.rewards["correct"] for e in episodes] == [1.0, 0.0] * 4  # the even rows answered what the server added
    for episode in episodes:
        assert episode.meta["tools"]["calls"] == {"calc_add": 1} and episode.meta["tools"]["errors"] == 0
        (result,) = [m["content"] for m in episode.meta["messages"] if m["role"] == "tool"]
        assert re.fullmatch(r"-?\d+", result)
    metrics = trainer.train_step(1)
    assert metrics["tools/calc_add/call_rate"] == 1.0 and metrics["tools/calls_per_episode"] == 1.0
    assert metrics["tools/error_rate"] == 0.0 and metrics["tools/turns"] == 2.0
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.params))
