"""Supervised fine-tuning: the assistant-only mask on the real chat template (with tool calls, and a template that is
not append-only), bad rows named by file and line, the likelihood objective by hand, each epoch's order, and `rlvr
sft` on a tiny model: the loss falls, the run folder is written, and a resumed run is the uninterrupted one."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file

from rlvr.config import ConfigError, load_config
from rlvr.envs import make_env
from rlvr.sft.data import load_traces, read_conversations, tokenize
from rlvr.sft.trainer import NegativeLogLikelihood, SFTTrainer, steps_for
from rlvr.tools import build_tools
from rlvr.tools.protocol import ChatFormat
from rlvr.types import Problem

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "Bye"},
    {"role": "assistant", "content": "Goodbye."},
]
TINY = ["rollout.engine=transformers", "scoring.workers=0", "env.eval_size=2", "sampling.max_new_tokens=4"]


def _masked(trace, tokenizer, value: int) -> str:
    return tokenizer.decode([t for t, m in zip(trace.completion_ids, trace.loss_mask) if m == value])


def test_only_the_assistants_tokens_and_their_ends_of_turn_are_trained(tokenizer):
    trace = tokenize("x:1", CHAT, ChatFormat(tokenizer), max_tokens=1000, turns="all")
    # The prompt is the conversation up to the first assistant turn, rendered for generation.
    assert tokenizer.decode(trace.prompt_ids).endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    assert _masked(trace, tokenizer, 1) == "Hello.<|im_end|>Goodbye.<|im_end|>"
    # Context the model never writes: the newline after its end of turn, the user's turn, the next turn's header.
    assert _masked(trace, tokenizer, 0) == "\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n\n"
    # Appended piece by piece, the ids are the whole conversation's text.
    assert tokenizer.decode(trace.prompt_ids + trace.completion_ids) == tokenizer.apply_chat_template(CHAT, tokenize=False)
    # By default only the answer to the last user message trains: earlier turns (and demonstrations) are prompt.
    last = tokenize("x:1", CHAT, ChatFormat(tokenizer), max_tokens=1000)
    assert tokenizer.decode(last.prompt_ids).endswith("<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n")
    assert (
        _masked(last, tokenizer, 1) == "Goodbye.<|im_end|>"
        and last.prompt_ids + last.completion_ids == trace.prompt_ids + trace.completion_ids
    )


def test_tool_calls_are_trained_and_tool_results_are_not(tokenizer):
    tools = build_tools(["python"], load_config(None).tools, None)
    chat = ChatFormat(tokenizer, tools)
    call = {"type": "function", "function": {"name": "python", "arguments": {"code": "print(6 * 7)"}}}
    messages = [
        {"role": "user", "content": "What is 6 * 7?"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "name": "python", "content": "42\n", "tool_call_id": "call_0"},
        {"role": "assistant", "content": "Answer: 42"},
    ]
    trace = tokenize("x:1", messages, chat, max_tokens=1000)
    trained, context = _masked(trace, tokenizer, 1), _masked(trace, tokenizer, 0)
    assert '<tool_call>{"name": "python", "arguments": {"code": "print(6 * 7)"}}</tool_call>' in trained
    # A calling turn ends at the call's close, where the model stops; the end of turn after it is context.
    assert "</tool_call><|im_end|>" not in trained and context.startswith("<|im_end|>")
    assert trained.endswith("Answer: 42<|im_end|>") and "42\n" not in trained.removesuffix("Answer: 42<|im_end|>")
    assert "<tool_response>\n42\n\n</tool_response>" in context
    assert "python" in tokenizer.decode(trace.prompt_ids)  # the tools are advertised in the prompt, as in training


def test_a_template_that_rewrites_earlier_turns_is_refused_with_the_row_and_message(tokenizer):
    dropping = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    # Like templates that drop earlier reasoning: an assistant turn followed by another renders differently.
    dropping.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n"
        "{% if m.role == 'assistant' and not loop.last %}(earlier){% else %}{{ m.content }}{% endif %}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    with pytest.raises(ConfigError, match=r"^traces.jsonl:3: the chat template does not render this conversation append-only"):
        tokenize("traces.jsonl:3", CHAT, ChatFormat(dropping), max_tokens=1000, turns="all")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"prompt": "x"}, r"data.jsonl:2: expected `messages` .* \(fields present: prompt\)"),
        ({"messages": "hi"}, r"data.jsonl:2: messages: expected a list of chat messages"),
        ({"messages": [{"role": "user", "content": "hi"}]}, r"data.jsonl:2: messages: no assistant message to train on"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, r"data.jsonl:2: messages: message 0: role: expected one of"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, r"data.jsonl:2: messages: the conversation starts with"),
        ({"question": "1+1?", "completion": ""}, r"data.jsonl:2: completion: expected non-empty text"),
    ],
)
def test_a_bad_row_names_the_file_the_line_and_the_field(tmp_path, monkeypatch, row, message):
    monkeypatch.chdir(tmp_path)
    good = {"question": "1+1?", "completion": "Answer: 2"}
    Path("data.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(ConfigError, match=message):
        read_conversations("data.jsonl", make_env(load_config(None).env))


def test_a_question_and_completion_get_the_recipes_prompt(tmp_path, tokenizer):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"question": "What is 2 + 3?", "completion": "Answer: 5"}) + "\n")
    env = make_env(load_config(None).env)
    ((where, messages),) = read_conversations(str(path), env)
    assert where == f"{path}:1" and messages[:-1] == env.messages(Problem("What is 2 + 3?", ""))
    (trace,) = load_traces(str(path), env, ChatFormat(tokenizer), max_tokens=3)
    assert len(trace.completion_ids) == 3 and trace.loss_mask == [1, 1, 1]  # cut at sft.max_tokens


def test_the_likelihood_objective_by_hand():
    logprobs = torch.log(torch.tensor([[0.5, 0.25, 1.0], [0.125, 1.0, 1.0]]))
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    objective = NegativeLogLikelihood()
    out = objective(logprobs, None, None, None, mask)
    # Three trained tokens: -(ln 0.5 + ln 0.25 + ln 0.125) / 3 = (1 + 2 + 3) ln 2 / 3 = 2 ln 2.
    assert objective.reduce(out.per_token, mask, normalizer=3.0).item() == pytest.approx(2 * math.log(2))


def _write_traces(path: Path, count: int = 6) -> Path:
    rows = [
        {"question": f"What is {i} + {i}?", "completion": f"<think>{i} and {i}.</think>\nAnswer: {2 * i}"} for i in range(count)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _config(tiny_model_dir, tmp_path, data: Path, *extra: str):
    from rlvr.api import sft_config

    settings = [*TINY, f"output_dir={tmp_path / 'runs'}", "train.prompts_per_step=2", "train.lr=1e-3", "train.save_every=1"]
    return sft_config(data, model=str(tiny_model_dir), overrides=[*settings, *extra])


def test_each_epoch_trains_on_every_trace_once_in_its_own_order(tiny_model_dir, tmp_path):
    config = _config(tiny_model_dir, tmp_path, _write_traces(tmp_path / "t.jsonl"), "sft.epochs=2")
    assert (config.name, config.train.steps, steps_for(config, 6)) == ("default-sft", 6, 6)
    trainer = SFTTrainer(config)
    epochs = [[trace.where for step in range(start, start + 3) for trace in trainer.window(step)] for start in (0, 3)]
    assert all(sorted(epoch) == sorted(t.where for t in trainer.traces) for epoch in epochs)
    assert epochs[0] != epochs[1]  # each epoch shuffled by its own seed


def _rows(path: Path) -> list[dict]:
    timing = ("seconds", "tokens_per_second", "memory/")
    return [
        {k: v for k, v in json.loads(line).items() if not any(t in k for t in timing)} for line in path.read_text().splitlines()
    ]


def test_rlvr_sft_learns_writes_the_run_folder_and_resumes_exactly(tiny_model_dir, tmp_path):
    from rlvr.api import sft

    data = _write_traces(tmp_path / "t.jsonl")
    quiet = Console(file=io.StringIO())
    whole = _config(tiny_model_dir, tmp_path, data, "name=whole", "sft.epochs=3")
    summary = sft(whole, console=quiet)
    run = tmp_path / "runs" / "whole"
    rows = _rows(run / "metrics.jsonl")
    assert [row["step"] for row in rows] == list(range(1, 10)) and summary["steps"] == 9
    assert rows[-1]["loss"] < rows[0]["loss"] and rows[-1]["epoch"] == 3.0
    assert {"final", "config.yaml", "summary.json", "curves.png", "eval_before.json", "eval_after.json"} <= {
        p.name for p in run.iterdir()
    }
    # Crashed in step 5 (step 4's checkpoint written), then resumed: the same rows and the same weights.
    config = _config(tiny_model_dir, tmp_path, data, "name=resumed", "sft.epochs=3")
    step = SFTTrainer.train_step

    def crash_in_step_5(self, index):
        if index == 4:
            raise RuntimeError("killed")
        return step(self, index)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SFTTrainer, "train_step", crash_in_step_5)
        with pytest.raises(RuntimeError, match="killed"):
            sft(config, console=quiet)
    sft(config, resume=True, console=quiet)
    assert _rows(tmp_path / "runs" / "resumed" / "metrics.jsonl") == rows
    a, b = (load_file(tmp_path / "runs" / name / "final" / "model.safetensors") for name in ("whole", "resumed"))
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_the_cli_names_a_bad_row(tiny_model_dir, tmp_path):
    from typer.testing import CliRunner

    from rlvr.cli import app

    data = tmp_path / "bad.jsonl"
    data.write_text('{"question": "q", "completion": "a"}\n{"messages": []}\n')
    args = ["sft", str(data), "--model", str(tiny_model_dir), *(a for s in TINY for a in ("--set", s))]
    result = CliRunner().invoke(app, [*args, "--set", f"output_dir={tmp_path}"])
    assert result.exit_code == 2 and f"{data}:2: messages: no assistant message to train on" in result.output


def test_a_worked_gsm8k_answer_becomes_r1_cold_start_data(tmp_path):
    from rlvr.rewards.math import worked_solution

    answer = "She sold 48 / 2 = <<48/2=24>>24 clips.\nIn all 48 + 24 = <<48+24=72>>72.\n#### 1,072"
    assert worked_solution(answer) == ("She sold 48 / 2 = 24 clips.\nIn all 48 + 24 = 72.", "1072")
    assert worked_solution("72") is None
    path = tmp_path / "gsm8k.jsonl"
    path.write_text(
        json.dumps({"question": "How many clips?", "answer": answer}) + "\n" + json.dumps({"question": "q", "answer": "7"})
    )
    env = make_env(load_config(None).env)
    with pytest.raises(ConfigError, match=r"gsm8k.jsonl:2: answer: not a worked solution ending in '#### <answer>'"):
        read_conversations(str(path), env)
    path.write_text(json.dumps({"question": "How many clips?", "answer": answer}) + "\n")
    ((_, messages),) = read_conversations(str(path), env)
    assert messages[-1] == {
        "role": "assistant",
        "content": "<think>\nShe sold 48 / 2 = 24 clips.\nIn all 48 + 24 = 72.\n</think>\nAnswer: 1072",
    }


def test_demonstrations_are_prompt_and_the_answered_question_is_the_last(tokenizer):
    from rlvr.sft.data import answered_question

    demo = [{"role": "user", "content": "What is 1 + 1?"}, {"role": "assistant", "content": "Answer: 2"}]
    messages = [{"role": "system", "content": "s"}, *demo, {"role": "user", "content": "What is 2 + 2?"}]
    messages.append({"role": "assistant", "content": "Answer: 4"})
    assert answered_question(messages) == "What is 2 + 2?"
    trace = tokenize("x:1", messages, ChatFormat(tokenizer), max_tokens=1000)
    assert _masked(trace, tokenizer, 1) == "Answer: 4<|im_end|>"


def test_traces_of_held_out_questions_are_left_out(tmp_path):
    from rlvr.config import RECIPES_DIR
    from rlvr.sft.data import held_out_questions, training_conversations

    env = make_env(load_config(None).env)
    held = env.eval_problems()[0].question
    path = tmp_path / "t.jsonl"
    rows = [{"question": held, "completion": "Answer: 1"}, {"question": "What is 1 + 1?", "completion": "Answer: 2"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    questions = held_out_questions(load_config(None), env)
    kept, dropped = training_conversations(str(path), env, questions)
    assert dropped == 1 and [messages[-2]["content"] for _, messages in kept] == ["What is 1 + 1?"]
    assert held_out_questions(load_config(None, ["sft.keep_held_out=true"]), env) == set()
    # With train.eval_every, the regression suite's questions are held out too.
    lines = (RECIPES_DIR / "data" / "word_problems.jsonl").read_text().splitlines()
    word_problems = {json.loads(line)["question"] for line in lines}
    with_suite = held_out_questions(load_config(None, ["train.eval_every=5"]), env)
    assert questions < with_suite and len(with_suite & word_problems) == 50  # the suite's 50 held-out word problems
    # Trained on every turn, a trace leaks when any of its questions is held out, not only the last.
    both = [{"role": "user", "content": held}, {"role": "assistant", "content": "Answer: 1"}]
    both += [{"role": "user", "content": "What is 1 + 1?"}, {"role": "assistant", "content": "Answer: 2"}]
    path.write_text(json.dumps({"messages": both}) + "\n")
    assert training_conversations(str(path), env, questions)[1] == 0
    with pytest.raises(ConfigError, match="every trace's question is held out"):
        training_conversations(str(path), env, questions, turns="all")
