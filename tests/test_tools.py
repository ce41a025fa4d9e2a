"""The tool protocol, user tools, the multi-turn loop's rules, monitoring and the template linter."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pytest
import torch

from rlvr.config import ToolsConfig
from rlvr.errors import ConfigError
from rlvr.rollout.base import RolloutEngine, SamplingParams
from rlvr.rollout.tool_loop import TRUNCATION_MARKER, ToolLoop, ToolLoopSettings
from rlvr.step_metrics import call_rates, subsets_in, tool_metrics, tools_in
from rlvr.tools import TOOLS, Tool, ToolError, build_tools, function_tool, tool
from rlvr.tools.monitor import CollapseMonitor
from rlvr.tools.protocol import ChatFormat, call_text, find_call, has_open_call, parse_call
from rlvr.tools.template_check import check_append_only
from rlvr.types import Episode

# A Hermes/Qwen2.5-style template with native tool support, written for these tests.
NATIVE_TEMPLATE = (
    "{% if tools %}<|im_start|>system\n{{ messages[0]['content'] if messages[0]['role'] == 'system' else '' }}"
    "\n# Tools\n<tools>{% for t in tools %}\n{{ t | tojson }}{% endfor %}\n</tools><|im_end|>\n{% endif %}"
    "{% for m in messages %}"
    "{% if m.role == 'system' %}{% if not tools %}<|im_start|>system\n{{ m.content }}<|im_end|>\n{% endif %}"
    "{% elif m.role == 'tool' %}<|im_start|>user\n<tool_response>\n{{ m.content }}\n</tool_response><|im_end|>\n"
    "{% elif m.role == 'assistant' %}<|im_start|>assistant\n{{ m.content }}"
    "{% for c in m.tool_calls or [] %}<tool_call>\n{{ {'name': c.function.name, 'arguments': c.function.arguments} | tojson }}"
    "\n</tool_call>{% endfor %}<|im_end|>\n"
    "{% else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def lookup(word: str, limit: int = 3) -> str:
    """Look a word up in the dictionary.

    Args:
        word: The word to look up.
        limit: How many senses to return.
    """
    return f"{word}: {limit} senses"


def counter_tool() -> Tool:
    """A stateful tool: its count lives in the session, so it shows whether sessions are per episode."""

    def session():
        state = {"count": 0}

        def call(arguments):
            state["count"] += 1
            return f"count={state['count']}"

        return call

    parameters = {"type": "object", "properties": {}, "additionalProperties": False}
    return Tool("count", "Count calls.", parameters, session)


class ScriptedEngine(RolloutEngine):
    """Answers each call with the next scripted text per row, honouring the stop string and the token limit the way
    the transformers engine does, and records the contexts it was given."""

    shares_weights = True

    def __init__(self, tokenizer, scripts: list[list[str]]) -> None:
        self.tokenizer = tokenizer
        self.scripts = [list(s) for s in scripts]
        self.contexts: list[list[list[int]]] = []

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingParams) -> list[Episode]:
        self.contexts.append([list(p) for p in prompts])
        episodes = []
        for prompt in prompts:
            row = self._row(prompt)
            text = self.scripts[row].pop(0)
            ids = self.tokenizer.encode(text, add_special_tokens=False)[: sampling.max_new_tokens]
            lps = [-0.5] * len(ids)
            episodes.append(Episode(list(prompt), ids, lps, [1] * len(ids), text=self.tokenizer.decode(ids)))
        return episodes

    def _row(self, prompt: Sequence[int]) -> int:
        # Rows are told apart by their original prompts, the first context of each row.
        first = self.contexts[0]
        return next(i for i, p in enumerate(first) if list(prompt[: len(p)]) == p)

    def update_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        pass


def test_parse_calls_and_their_errors():
    assert find_call('I will look.\n<tool_call>{"name": "a"}</tool_call>') == '{"name": "a"}'
    assert has_open_call('<tool_call>{"name": "a"') and not has_open_call("no call")
    assert parse_call('{"name": "search", "arguments": {"query": "x"}}').arguments == {"query": "x"}
    assert parse_call('{"name": "search", "arguments": "{\\"query\\": \\"x\\"}"}').arguments == {"query": "x"}
    with pytest.raises(ToolError, match="not valid JSON"):
        parse_call('{"name": "search", ')
    with pytest.raises(ToolError, match="must be a JSON object"):
        parse_call('["search"]')
    assert call_text("search", {"query": "x"}) == '<tool_call>{"name": "search", "arguments": {"query": "x"}}</tool_call>'


def test_function_tool_schema_and_validation():
    built = function_tool(lookup)
    assert built.schema() == {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look a word up in the dictionary.",
            "parameters": {
                "type": "object",
                "properties": {
                    "word": {"type": "string", "description": "The word to look up."},
                    "limit": {"type": "integer", "description": "How many senses to return."},
                },
                "required": ["word"],
                "additionalProperties": False,
            },
        },
    }
    assert built.session()(built.validate({"word": "ossify"})) == "ossify: 3 senses"
    with pytest.raises(ToolError, match="'word' is a required property"):
        built.validate({})
    with pytest.raises(ToolError, match="limit: 'two' is not of type 'integer'"):
        built.validate({"word": "a", "limit": "two"})
    with pytest.raises(ToolError, match="Additional properties"):
        built.validate({"word": "a", "colour": "red"})
    with pytest.raises(ToolError, match="must be a JSON object"):
        built.validate(["a"])


def test_tool_decorator_registers_a_user_tool():
    @tool(name="test_lookup_registered")
    def registered(word: str) -> str:
        """Look up.

        Args:
            word: The word.
        """
        return word.upper()

    try:
        (built,) = build_tools(["test_lookup_registered"], ToolsConfig())
        assert built.session()({"word": "abc"}) == "ABC"
        with pytest.raises(ConfigError, match="tools.enabled: unknown tool 'nope'"):
            build_tools(["nope"], ToolsConfig())
    finally:
        del TOOLS["test_lookup_registered"]

    def undocumented(word: str) -> str:
        return word

    with pytest.raises(ConfigError, match="undocumented"):
        function_tool(undocumented)


def test_fallback_format_renders_tools_calls_and_results(tokenizer):
    chat = ChatFormat(tokenizer, [function_tool(lookup)])
    assert not chat.native and chat.tool_role == "tool"
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "ossify?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"type": "function", "function": {"name": "lookup", "arguments": {"word": "ossify"}}}],
        },
        {"role": "tool", "name": "lookup", "content": "to turn into bone"},
        {"role": "user", "content": "thanks"},
    ]
    text = tokenizer.decode(chat.prompt_ids(messages))
    assert text.startswith(
        "<|im_start|>system\nBe brief.\n\nTools:\n- lookup(word: string, limit?: integer) - Look a word up in the dictionary.\n"
    )
    assert '<|im_start|>assistant\n<tool_call>{"name": "lookup", "arguments": {"word": "ossify"}}</tool_call><|im_end|>' in text
    assert "<|im_start|>tool\n<tool_response>\nto turn into bone\n</tool_response><|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")
    # A tool result is the end of the turn, the tool message and the next turn's start; once, after an EOS.
    ids = chat.result_ids("lookup", "bone")
    assert (
        tokenizer.decode(ids)
        == "<|im_end|>\n<|im_start|>tool\n<tool_response>\nbone\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    )
    assert chat.result_ids("lookup", "bone", ended_with="<|im_end|>") == ids[1:]


def test_no_tools_renders_exactly_like_the_chat_template(tokenizer):
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]
    expected = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert ChatFormat(tokenizer).prompt_ids(messages) == list(expected)


def test_native_template_gets_the_schemas_and_structured_calls(tokenizer):
    native = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    native.chat_template = NATIVE_TEMPLATE
    chat = ChatFormat(native, [function_tool(lookup)])
    assert chat.native
    messages = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Q"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"type": "function", "function": {"name": "lookup", "arguments": {"word": "w"}}}],
        },
        {"role": "tool", "name": "lookup", "content": "R"},
    ]
    text = native.decode(chat.prompt_ids(messages))
    assert '<tools>{"type": "function", "function": {"name": "lookup"' in text
    assert '<tool_call>\n{"name": "lookup", "arguments": {"word": "w"}}\n</tool_call>' in text
    assert native.decode(chat.result_ids("lookup", "R")) == (
        "<|im_end|>\n<|im_start|>user\n<tool_response>\nR\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    )
    assert check_append_only(native) == []


def test_template_linter_flags_a_template_that_drops_earlier_reasoning(tokenizer):
    assert check_append_only(tokenizer) == []
    dropping = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    dropping.chat_template = tokenizer.chat_template.replace(
        "message['content']", "(message['content'].split('</think>')[-1] if not loop.last else message['content'])"
    )
    problems = check_append_only(dropping)
    assert len(problems) == 2 and all("changes the text before it" in p for p in problems)
    assert "I should look it up." in problems[0]


def _loop(tokenizer, scripts, tools, **settings) -> tuple[ToolLoop, ScriptedEngine]:
    engine = ScriptedEngine(tokenizer, scripts)
    chat = ChatFormat(tokenizer, tools)
    return ToolLoop(engine, chat, ToolLoopSettings(**settings)), engine


def _prompts(tokenizer, count: int) -> list[list[int]]:
    return [ChatFormat(tokenizer).prompt_ids([{"role": "user", "content": f"question {i}"}]) for i in range(count)]


def test_loop_appends_results_masks_them_and_keeps_sessions_per_episode(tokenizer):
    call = '<tool_call>{"name": "count", "arguments": {}}</tool_call>'
    scripts = [[f"First.{call}", call, "Done.\nAnswer: 2<|im_end|>"], ["Answer: 0<|im_end|>"]]
    loop, engine = _loop(tokenizer, scripts, [counter_tool()])
    prompts = _prompts(tokenizer, 2)
    first, second = loop.generate(prompts, SamplingParams(max_new_tokens=200))

    assert first.meta["tools"] == {
        "calls": {"count": 2},
        "errors": 0,
        "turns": 3,
        "tool_tokens": first.meta["tools"]["tool_tokens"],
        "model_tokens": first.meta["tools"]["model_tokens"],
        "stop": "end_of_turn",
    }
    assert [m["content"] for m in first.meta["messages"] if m["role"] == "tool"] == ["count=1", "count=2"]
    assert first.text == "Done.\nAnswer: 2"
    # The ids are the model's turns and the template's tool messages, appended in order, never re-tokenised.
    expected = []
    chat = loop.chat
    for text, result in [(f"First.{call}", "count=1"), (call, "count=2")]:
        expected += tokenizer.encode(text, add_special_tokens=False) + chat.result_ids("count", result)
    expected += tokenizer.encode("Done.\nAnswer: 2<|im_end|>", add_special_tokens=False)
    assert first.completion_ids == expected
    model_ids = [i for i, m in zip(first.completion_ids, first.loss_mask) if m]
    assert len(model_ids) == first.meta["tools"]["model_tokens"] == first.generated_tokens
    assert sum(1 - m for m in first.loss_mask) == first.meta["tools"]["tool_tokens"]
    assert all(lp == 0.0 for lp, m in zip(first.logprobs, first.loss_mask) if not m)
    assert all(lp == -0.5 for lp, m in zip(first.logprobs, first.loss_mask) if m)
    # Each turn continues from the row's own ids: the second call saw the first turn and its result.
    assert engine.contexts[1][0] == prompts[0] + first.completion_ids[: len(engine.contexts[1][0]) - len(prompts[0])]
    assert second.meta["tools"]["calls"] == {} and second.meta["tools"]["turns"] == 1
    # The stateful tool counted per episode: a fresh session for every generate call too.
    (again,) = _loop(tokenizer, [[call, "Answer: 1<|im_end|>"]], [counter_tool()])[0].generate(
        prompts[:1], SamplingParams(max_new_tokens=200)
    )
    assert again.meta["messages"][1]["content"] == "count=1"


def test_malformed_calls_become_error_messages_and_are_counted(tokenizer):
    scripts = [
        [
            "<tool_call>{not json}</tool_call>",
            '<tool_call>{"name": "nope", "arguments": {}}</tool_call>',
            '<tool_call>{"name": "lookup", "arguments": {"limit": 2}}</tool_call>',
            '<tool_call>{"name": "lookup", "arguments": {"word": "x"}}</tool_call>',
            "<tool_call>{unclosed<|im_end|>",
            "Answer: x<|im_end|>",
        ]
    ]
    loop, _ = _loop(tokenizer, scripts, [function_tool(lookup)], max_turns=6)
    (episode,) = loop.generate(_prompts(tokenizer, 1), SamplingParams(max_new_tokens=500))
    results = [m["content"] for m in episode.meta["messages"] if m["role"] == "tool"]
    assert results[0].startswith("Error: the tool call is not valid JSON")
    assert results[1] == "Error: unknown tool 'nope' (available: lookup)"
    assert results[2] == "Error: invalid arguments for lookup: 'word' is a required property"
    assert results[3] == "x: 3 senses"
    assert results[4] == "Error: the tool call was not closed with </tool_call>"
    assert episode.meta["tools"]["errors"] == 4
    # A call that names no known tool counts as "invalid"; one with bad arguments counts for its tool.
    assert episode.meta["tools"]["calls"] == {"invalid": 3, "lookup": 2}
    assert episode.text == "Answer: x"


def test_a_tool_that_raises_is_reported_not_fatal(tokenizer):
    def broken(arguments):
        raise RuntimeError("disk on fire")

    failing = Tool("boom", "Fails.", {"type": "object"}, lambda: broken)
    loop, _ = _loop(tokenizer, [['<tool_call>{"name": "boom", "arguments": {}}</tool_call>', "ok<|im_end|>"]], [failing])
    (episode,) = loop.generate(_prompts(tokenizer, 1), SamplingParams(max_new_tokens=100))
    assert episode.meta["messages"][1]["content"] == "Error: boom failed: RuntimeError: disk on fire"
    assert episode.meta["tools"]["errors"] == 1


def test_turn_token_and_result_limits(tokenizer):
    call = '<tool_call>{"name": "lookup", "arguments": {"word": "x"}}</tool_call>'
    # max_turns: the call of the last allowed turn is not run and the episode ends without an answer.
    loop, _ = _loop(tokenizer, [[call, call]], [function_tool(lookup)], max_turns=2)
    (episode,) = loop.generate(_prompts(tokenizer, 1), SamplingParams(max_new_tokens=500))
    assert episode.meta["tools"]["calls"] == {"lookup": 1} and episode.meta["tools"]["stop"] == "max_turns"
    assert not episode.truncated
    # max_new_tokens caps the model's tokens over all turns; tool tokens do not count.
    call_tokens = len(tokenizer.encode(call, add_special_tokens=False))
    loop, engine = _loop(tokenizer, [[call, "a long answer that will not fit in what is left"]], [function_tool(lookup)])
    (episode,) = loop.generate(_prompts(tokenizer, 1), SamplingParams(max_new_tokens=call_tokens + 3))
    assert episode.generated_tokens == call_tokens + 3 and episode.truncated and episode.meta["tools"]["stop"] == "length"
    assert episode.num_tokens > episode.generated_tokens
    # A long result is cut to max_result_tokens, with a marker.
    verbose = Tool("verbose", "Talks.", {"type": "object"}, lambda: lambda arguments: "word " * 500)
    loop, _ = _loop(
        tokenizer,
        [['<tool_call>{"name": "verbose", "arguments": {}}</tool_call>', "ok<|im_end|>"]],
        [verbose],
        max_result_tokens=10,
    )
    (episode,) = loop.generate(_prompts(tokenizer, 1), SamplingParams(max_new_tokens=100))
    result = episode.meta["messages"][1]["content"]
    assert result.endswith(TRUNCATION_MARKER) and len(tokenizer.encode(result.removesuffix(TRUNCATION_MARKER))) == 10


def _episode_with(stats: dict, subset: str) -> Episode:
    return Episode([1], [2], [0.0], [1], meta={"tools": stats, "subset": subset})


def test_tool_metrics_per_subset_and_collapse_warning():
    stats = [
        ({"calls": {"search": 2}, "errors": 1, "turns": 3, "tool_tokens": 40}, "a"),
        ({"calls": {}, "errors": 0, "turns": 1, "tool_tokens": 0}, "a"),
        ({"calls": {"search": 1, "python": 1}, "errors": 0, "turns": 3, "tool_tokens": 20}, "b"),
        ({"calls": {}, "errors": 0, "turns": 1, "tool_tokens": 0}, "b"),
    ]
    metrics = tool_metrics([_episode_with(s, subset) for s, subset in stats], ["search", "python"], per_subset=True)
    assert metrics["tools/calls_per_episode"] == 1.0
    assert metrics["tools/error_rate"] == 0.25
    assert metrics["tools/turns"] == 2.0
    assert metrics["tools/result_tokens"] == 15.0
    assert metrics["tools/search/call_rate"] == 0.5 and metrics["tools/python/call_rate"] == 0.25
    assert metrics["a/tools/error_rate"] == 0.5 and metrics["b/tools/python/call_rate"] == 0.5
    assert tool_metrics([Episode([1], [2], [0.0], [1])], ["search"]) == {}
    # The readers the report, the progress bar and the monitor use find exactly what the builders wrote.
    assert call_rates(metrics) == {"search": 0.5, "python": 0.25}
    assert tools_in([metrics, {"tools/x/call_rate": 0.0}]) == ["python", "search", "x"]
    assert subsets_in([{"a/accuracy": 0.5, "b/accuracy": 1.0, "accuracy": 0.7, "a/tools/search/call_rate": 1.0}]) == ["a", "b"]

    monitor = CollapseMonitor(["search"], threshold=0.1, patience=3)
    rates = [0.5, 0.05, 0.0, 0.02, 0.0, 0.3, 0.0]
    warned = [bool(monitor.update({"tools/search/call_rate": r})) for r in rates]
    assert warned == [False, False, False, True, False, False, False]
    assert monitor.collapsed() == []
    # Its counts go into the checkpoint: a resumed monitor warns at the step an uninterrupted one would.
    first, resumed = CollapseMonitor(["search"], 0.1, 3), CollapseMonitor(["search"], 0.1, 3)
    first.update({"tools/search/call_rate": 0.0}), first.update({"tools/search/call_rate": 0.0})
    resumed.load_state_dict(first.state_dict() | {"gone": 2})  # a tool no longer enabled is forgotten
    assert resumed.low_steps == {"search": 2} and resumed.update({"tools/search/call_rate": 0.0})
