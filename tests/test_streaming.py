"""Token streaming: the transformers engine's per-step callback, the worker's incremental decoding (hold-back rules on
hand-made token sequences) and the server's chunks, which add up to the finished answer."""

from __future__ import annotations

import pytest

from rlvr.rollout.base import SamplingParams
from rlvr.rollout.hf import TransformersEngine
from rlvr.serve.answers import chat_completion
from rlvr.serve.backend import Generated, Job
from rlvr.serve.streaming import ChatStream, TextStream, visible_message


@pytest.fixture(scope="module")
def tiny_engine(tiny_model_dir, tokenizer):
    from rlvr.models import load_policy

    return TransformersEngine(load_policy(str(tiny_model_dir)).eval(), tokenizer, batch_size=2)


def test_the_engine_tells_each_step_and_the_steps_add_up_to_the_episodes(tiny_engine, tokenizer):
    prompts = [tokenizer.encode(text) for text in ("One two three four five", "Hello", "The capital of France is")]
    sampling = SamplingParams(temperature=1.0, max_new_tokens=6, seed=4)
    told: list[tuple[int, list[int]]] = []
    episodes = tiny_engine.generate_streaming(prompts, sampling, lambda row, ids: told.append((row, ids)))
    assert all(len(ids) == 1 for _, ids in told)  # one token per row per step
    for row, episode in enumerate(episodes):
        assert [i for r, ids in told for i in ids if r == row] == episode.completion_ids
    # Rows of one batch are told as they are generated, interleaved: the two longest prompts share the first batch.
    first_batch = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))[:2]
    assert [row for row, _ in told[:4]] == first_batch * 2
    plain = tiny_engine.generate(prompts, sampling)  # the same call without a listener samples the same
    assert [e.completion_ids for e in plain] == [e.completion_ids for e in episodes]


def _pushed(stream: TextStream, steps: list[list[int]]) -> list[str]:
    return [stream.push(ids) for ids in steps]


def test_a_character_split_over_tokens_is_held_until_it_is_whole(tokenizer):
    text = "ok 🦙 done"
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert any(tokenizer.decode(ids[:k]).endswith("\ufffd") for k in range(len(ids)))  # the emoji spans tokens
    emitted = _pushed(TextStream(tokenizer), [[i] for i in ids])
    assert "".join(emitted) == text and not any("\ufffd" in piece for piece in emitted)


def test_a_stop_string_split_over_steps_is_never_sent(tokenizer):
    stream = TextStream(tokenizer, stop=("STOP",))
    first, second = tokenizer.encode("Go on ST", add_special_tokens=False), tokenizer.encode("OP here", add_special_tokens=False)
    # "ST" could start the stop string: the last 3 characters wait; then the text ends before the stop string.
    assert _pushed(stream, [first, second, tokenizer.encode(" more", add_special_tokens=False)]) == ["Go on", " ", ""]


def test_special_tokens_are_not_sent(tokenizer):
    stream = TextStream(tokenizer)
    assert _pushed(stream, [tokenizer.encode("Hi", add_special_tokens=False), [tokenizer.eos_token_id]]) == ["Hi", ""]


@pytest.mark.parametrize(
    ("text", "visible"),
    [
        ("  Hello ", ("", "Hello")),  # the answer is stripped: leading and trailing space wait
        ("<thi", ("", "")),  # may open a thinking block
        ("<think> plan it </th", ("plan it", "")),
        ("<think>plan</think> The answer", ("plan", "The answer")),
        ("Let me look. <tool_call>{", ("", "Let me look.")),  # the call's text is not content
        ("Let me look. <tool_", ("", "Let me look.")),
    ],
)
def test_an_unfinished_reply_shows_what_the_finished_message_will_start_with(text, visible):
    assert visible_message(text) == visible


def test_chat_chunks_add_up_to_the_finished_message():
    text = "<think>Two and two.</think> It is 4."
    stream = ChatStream("m", include_usage=True)
    chunks = [chunk for piece in ("<think>Two", " and two.</th", "ink> It", " is 4") for chunk in stream.delta(0, piece)]
    answer = chat_completion("m", Job("plain", [[1, 2]], SamplingParams(), seeded=True), [Generated(text, [], "end_of_turn", 9)])
    chunks += list(stream.finish(answer))
    deltas = [chunk.choices[0].delta for chunk in chunks if chunk.choices]
    assert deltas[0].role == "assistant" and {chunk.id for chunk in chunks} == {stream.id}
    assert "".join(d.reasoning_content or "" for d in deltas) == answer.choices[0].message.reasoning_content == "Two and two."
    assert "".join(d.content or "" for d in deltas) == answer.choices[0].message.content == "It is 4."
    assert chunks[-2].choices[0].finish_reason == "stop" and chunks[-1].usage.completion_tokens == 9
