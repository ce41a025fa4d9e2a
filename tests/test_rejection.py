"""Rejection sampling: the keep rules and the cap on hand-made samples, the numbers by hand, training questions by
default (never a held-out one), complete OpenAI chat traces (tool calls and results included) that `rlvr sft` reads
back as the model saw them, an engine failure that keeps the traces before it, and the command on a tiny model."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest

from rlvr.config import SamplingConfig
from rlvr.data import Source
from rlvr.env_config import GymEnvConfig, MixtureEnvConfig
from rlvr.envs import make_env
from rlvr.errors import ConfigError
from rlvr.eval import EvalSettings, Sample
from rlvr.eval.estimators import bootstrap_ci
from rlvr.rejection import (
    KEEP_RULES,
    QuestionResult,
    Selection,
    Tally,
    assistant_turn,
    choose_problems,
    keep_question,
    link_calls,
    provenance_path,
    rejection_sample,
    summarize,
    trace_messages,
)
from rlvr.rewards import VERIFIERS, VOTE_KEYS
from rlvr.rollout.base import RolloutEngine, SamplingParams
from rlvr.rollout.tool_loop import ToolLoop, ToolLoopSettings
from rlvr.scoring import Scorer
from rlvr.tools import Tool
from rlvr.tools.protocol import ChatFormat, call_text
from rlvr.types import Episode, Problem

TINY = ["rollout.engine=transformers", "scoring.workers=0"]
PROMPT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "q"}]


def _sample(index: int, correct: bool, tokens: int, extracted: str | None, question: str = "q") -> Sample:
    sample = Sample("p", f"answer {index}", 0, tokens, False, False, 0.0, correct=correct, extracted=extracted)
    sample.sample, sample.id, sample.subset, sample.question = index, f"id-{question}", "s", question
    return sample


# Three questions x four samples: (correct, tokens, extracted answer) per sample.
QUESTIONS = {
    "q0": [(True, 9, "4"), (True, 5, "4"), (False, 3, "5"), (True, 5, "4.0")],
    "q1": [(False, 4, "1"), (False, 4, "2"), (False, 4, None), (False, 4, "1")],
    "q2": [(False, 2, "3"), (True, 7, "12"), (True, 4, "12"), (True, 6, "12")],
}


def _hand_made() -> dict[str, list[Sample]]:
    return {q: [_sample(i, *outcome, question=q) for i, outcome in enumerate(rows)] for q, rows in QUESTIONS.items()}


@pytest.mark.parametrize(
    "keep, cap, expected",
    [
        ("all", None, {"q0": [0, 1, 3], "q1": [], "q2": [1, 2, 3]}),
        ("shortest", None, {"q0": [1], "q1": [], "q2": [2]}),  # q0: samples 1 and 3 tie at 5 tokens, the first wins
        ("distinct", None, {"q0": [0, 3], "q1": [], "q2": [1]}),  # "4" and "4.0" vote apart, as in maj@k
        ("all", 2, {"q0": [0, 1], "q1": [], "q2": [1, 2]}),
        ("all", 1, {"q0": [0], "q1": [], "q2": [1]}),
        ("distinct", 1, {"q0": [0], "q1": [], "q2": [1]}),
        ("shortest", 3, {"q0": [1], "q1": [], "q2": [2]}),
    ],
)
def test_keep_rules_and_the_cap_on_hand_made_samples(keep, cap, expected):
    selection = Selection(keep, cap)
    kept = {q: [s.sample for s in selection.apply(samples)] for q, samples in _hand_made().items()}
    assert kept == expected


def test_distinct_without_a_vote_key_tells_answers_apart_by_their_text():
    a, b, c = (_sample(i, True, 3, None) for i in range(3))
    a.completion, b.completion, c.completion = "def f(): return 1", "def f(): return 1", "def f(): return 2"
    assert [s.sample for s in KEEP_RULES["distinct"]([a, b, c])] == [0, 2]


def test_bad_options_name_the_option():
    with pytest.raises(ConfigError, match=r"--keep: unknown keep rule 'longest' \(choices: all, distinct, shortest\)"):
        Selection("longest")
    with pytest.raises(ConfigError, match="--max-per-question"):
        Selection("all", 0)


def test_the_numbers_by_hand():
    samples = _hand_made()
    problems = {q: Problem(q, "x", subset="b" if q == "q1" else "a") for q in samples}
    results = []
    for keep, kept in (("all", 6), ("shortest", 2)):
        results = [keep_question(problems[q], samples[q], PROMPT, Selection(keep), None)[1] for q in samples]
        overall, subsets = summarize(results, resamples=2000, seed=3)
        assert overall.traces == kept and overall.trace_yield == kept / 12
    assert [r.correct for r in results] == [[True, True, False, True], [False] * 4, [False, True, True, True]]
    overall, subsets = summarize(results, resamples=2000, seed=3)
    assert (overall.questions, overall.samples, overall.correct, overall.covered) == (3, 12, 6, 2)
    assert overall.pass_rate == 0.5 and overall.coverage == 2 / 3
    # The interval is the project's bootstrap over questions, of the per-question pass rates 3/4, 0, 3/4.
    assert overall.pass_rate_ci95 == bootstrap_ci([0.75, 0.0, 0.75], resamples=2000, seed=3)
    assert 0.0 <= overall.pass_rate_ci95[0] <= 0.5 <= overall.pass_rate_ci95[1] <= 0.75
    assert list(subsets) == ["a", "b"]
    assert (subsets["a"].questions, subsets["a"].pass_rate, subsets["a"].coverage, subsets["a"].traces) == (2, 0.75, 1.0, 2)
    assert (subsets["b"].pass_rate, subsets["b"].pass_rate_ci95, subsets["b"].coverage, subsets["b"].traces) == (
        0.0,
        (0.0, 0.0),
        0.0,
        0,
    )
    assert Tally.of([QuestionResult("a", [True, False], 1)]).to_dict()["yield"] == 0.5


def test_a_plain_trace_is_the_prompt_then_the_answer():
    samples = _hand_made()["q2"]
    traces, result = keep_question(Problem("q2", "12"), samples, PROMPT, Selection("shortest"), None)
    (trace,) = traces
    assert trace.to_dict() == {
        "messages": [*PROMPT, {"role": "assistant", "content": "answer 2"}],
        "id": "id-q2",
        "subset": "s",
        "question": "q2",
        "reference": "",
        "sample": 2,
        "tokens": 4,
    }
    assert result == QuestionResult("default", [False, True, True, True], 1)


def test_tool_calls_in_openai_format_and_what_it_cannot_hold():
    call = call_text("add", {"a": 2, "b": 3})
    assert assistant_turn(f"I will add.\n{call}") == {
        "role": "assistant",
        "content": "I will add.",  # the newline before the call is the one the fallback format writes back
        "tool_calls": [{"type": "function", "function": {"name": "add", "arguments": {"a": 2, "b": 3}}}],
    }
    assert assistant_turn("Answer: 5") == {"role": "assistant", "content": "Answer: 5"}
    assert assistant_turn('<tool_call>{"name": "add", </tool_call>') is None  # does not parse
    assert assistant_turn('<tool_call>{"name": "add"}') is None  # left open
    demo = {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": "x", "arguments": {}}}]}
    linked = link_calls([demo, {"role": "tool", "content": "1"}, demo, {"role": "tool", "content": "2"}])
    assert [m["tool_calls"][0]["id"] for m in linked[::2]] == ["call_0", "call_1"]
    assert [m["tool_call_id"] for m in linked[1::2]] == ["call_0", "call_1"]
    assert link_calls([{"role": "tool", "content": "1"}]) is None and link_calls([demo]) is None
    # Without tools an answer is text, even one that looks like a call.
    plain = _sample(0, True, 3, "5")
    plain.completion = f"{call}\nAnswer: 5"
    assert trace_messages(PROMPT, plain) == [*PROMPT, {"role": "assistant", "content": plain.completion}]


def test_training_questions_by_default_never_held_out_ones(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"question": f"What is {i} + 1?", "answer": str(i + 1)}) + "\n" for i in range(8)))
    env = make_env(MixtureEnvConfig(sources=[Source(path=str(path))], eval_size=3))
    held_out = {p.question for p in env.eval_problems()}
    train = choose_problems(env, "train", None)  # a finite training set: every question once
    assert len(train) == 5 and not {p.question for p in train} & held_out
    assert {p.question for p in choose_problems(env, "train", 2)} < {p.question for p in train}
    assert {p.question for p in choose_problems(env, "eval", None)} == held_out
    gym = make_env(GymEnvConfig(task="chain_sum", task_config={"min_terms": 2, "max_terms": 2}, eval_size=5))
    with pytest.raises(ConfigError, match="--limit: the training split of this environment is an endless"):
        choose_problems(gym, "train", None)
    first = choose_problems(gym, "train", 6)
    assert len({p.question for p in first}) == 6 and not {p.question for p in first} & {p.question for p in gym.eval_problems()}
    with pytest.raises(ConfigError, match="--split: expected one of train, eval, got 'test'"):
        choose_problems(env, "test", None)


class ToolUser(RolloutEngine):
    """Calls `add` first, then answers with the sum it was given: a scripted model that uses its tool."""

    shares_weights, precision = True, "scripted"

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingParams) -> list[Episode]:
        episodes = []
        for prompt in prompts:
            context = self.tokenizer.decode(prompt)
            if "<tool_response>\n" in context:
                text = f"The sum is {context.rsplit('<tool_response>', 1)[1].split()[0]}.\nAnswer: 5<|im_end|>"
            else:
                text = "I will add.\n" + call_text("add", {"a": 2, "b": 3})
            ids = self.tokenizer.encode(text, add_special_tokens=False)
            episodes.append(Episode(list(prompt), ids, [-0.5] * len(ids), [1] * len(ids), text=self.tokenizer.decode(ids)))
        return episodes

    def update_weights(self, weights) -> None:
        pass


def _add_tool() -> Tool:
    parameters = {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]}
    return Tool("add", "Add two numbers.", parameters, lambda: lambda arguments: str(arguments["a"] + arguments["b"]))


PROVENANCE = {"model": "scripted", "model_hash": "-", "engine": "scripted", "data": "rows", "split": "all"}


def test_a_tool_trace_is_complete_openai_chat_that_sft_reads_as_the_model_saw_it(tokenizer, tmp_path):
    from rlvr.sft.data import read_conversations, tokenize

    path = tmp_path / "rows.jsonl"
    path.write_text(
        json.dumps({"question": "What is 2 + 3?", "answer": "5"}) + "\n" + json.dumps({"question": "7?", "answer": "7"})
    )
    env = make_env(MixtureEnvConfig(sources=[Source(path=str(path), use="eval")], system_prompt="Use the tool."))
    chat = ChatFormat(tokenizer, [_add_tool()])
    loop = ToolLoop(ToolUser(tokenizer), chat, ToolLoopSettings(max_turns=3))
    settings = EvalSettings(n=2, sampling=SamplingConfig(max_new_tokens=64), resamples=200)
    out = tmp_path / "traces.jsonl"
    with Scorer(env.rubric, workers=0) as scorer:
        summary = rejection_sample(
            loop, env, tokenizer, scorer, chat, env.eval_problems(), settings, Selection(), out, PROVENANCE
        )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["question"], r["sample"]) for r in rows] == [("What is 2 + 3?", 0), ("What is 2 + 3?", 1)]
    assert rows[0]["messages"] == [
        {"role": "system", "content": "Use the tool."},
        {"role": "user", "content": "What is 2 + 3?"},
        {
            "role": "assistant",
            "content": "I will add.",
            "tool_calls": [{"id": "call_0", "type": "function", "function": {"name": "add", "arguments": {"a": 2, "b": 3}}}],
        },
        {"role": "tool", "name": "add", "content": "5", "tool_call_id": "call_0"},
        {"role": "assistant", "content": "The sum is 5.\nAnswer: 5"},
    ]
    assert rows[0]["tools"] == [_add_tool().schema()] and rows[0]["tokens"] > 0
    # rlvr sft reads the file, and renders the prompt exactly as the model was prompted (the tools in the system prompt).
    ((where, messages), _) = read_conversations(str(out), env)
    trace = tokenize(where, messages, chat, max_tokens=1000)
    assert tokenizer.decode(trace.prompt_ids) == tokenizer.decode(chat.prompt_ids(env.messages(env.eval_problems()[0])))
    trained = tokenizer.decode([t for t, m in zip(trace.completion_ids, trace.loss_mask) if m])
    assert "I will add.\n" + call_text("add", {"a": 2, "b": 3}) in trained and "The sum is 5.\nAnswer: 5" in trained
    assert "<tool_response>" not in trained
    # The numbers: question 1 always right, question 2 always wrong.
    assert (summary.overall.pass_rate, summary.overall.covered, summary.overall.traces, summary.tools) == (0.5, 1, 2, ["add"])
    assert json.loads(provenance_path(out).read_text())["overall"]["yield"] == 0.5


@pytest.fixture
def parity_verifier(monkeypatch):
    """The math verifier replaced, in this process, by one a tiny random model passes about half the time: an answer
    is correct when its text has an even length; it votes for its first character."""
    monkeypatch.setitem(VERIFIERS, "math", lambda text, problem: float(len(text) % 2 == 0))
    monkeypatch.setitem(VOTE_KEYS, "math", lambda text: text[:1] or None)


def _rows(path, count: int) -> None:
    path.write_text(
        "".join(json.dumps({"question": f"What is {i} + {i}?", "answer": f"#### {2 * i}"}) + "\n" for i in range(count))
    )


def test_the_api_samples_the_training_split_unless_told(tiny_model_dir, tmp_path, parity_verifier):
    from rlvr.api import rejection_sample as api_rejection_sample

    data = tmp_path / "rows.jsonl"
    _rows(data, 8)
    env = ["env.name=mixture", f"env.sources=[{{path: {json.dumps(str(data))}}}]", "env.eval_size=3"]
    overrides = [*env, *TINY]
    held_out = {p.question for p in make_env(MixtureEnvConfig(sources=[Source(path=str(data))], eval_size=3)).eval_problems()}
    runs = {}
    for split in (None, "eval"):
        out = tmp_path / f"{split}.jsonl"
        summary = api_rejection_sample(str(tiny_model_dir), out, overrides=overrides, n=2, max_new_tokens=3, split=split)
        runs[split] = {json.loads(line)["question"] for line in out.read_text().splitlines()}
        assert summary.split == (split or "train") and summary.sampling["n"] == 2 and not summary.sampling["greedy"]
    assert summary.overall.questions == 3 and runs["eval"] <= held_out and runs["eval"]
    assert runs[None] and not runs[None] & held_out  # traces of training questions only


def test_an_engine_failure_keeps_the_traces_before_it(tiny_model_dir, tmp_path, parity_verifier, monkeypatch):
    from rlvr.api import rejection_sample as api_rejection_sample
    from rlvr.errors import EngineError
    from rlvr.rollout import ENGINES, TransformersEngine

    class FailsSecond(TransformersEngine):
        calls = 0

        def generate(self, prompts, sampling):
            FailsSecond.calls += 1
            if FailsSecond.calls == 2:
                raise EngineError("test engine: RuntimeError: boom")
            return super().generate(prompts, sampling)

    monkeypatch.setitem(
        ENGINES, "fails-second", lambda policy, tokenizer, settings, batch_size: FailsSecond(policy, tokenizer, 64)
    )
    data = tmp_path / "rows.jsonl"
    _rows(data, 3)
    out = tmp_path / "traces.jsonl"
    overrides = ["rollout.engine=fails-second", "scoring.workers=0"]
    with pytest.raises(EngineError, match=r"boom; the (\d+) traces of the 1 questions before it are in") as failure:
        api_rejection_sample(str(tiny_model_dir), out, data=data, overrides=overrides, n=64, max_new_tokens=2)  # 1 per call
    written = len(out.read_text().splitlines())
    assert f"the {written} traces" in str(failure.value)
    provenance = json.loads(provenance_path(out).read_text())
    assert provenance["complete"] is False and provenance["overall"]["questions"] == 1
    assert provenance["overall"]["traces"] == written and "boom" in provenance["error"]


def _invoke(*args: str):
    from typer.testing import CliRunner

    from rlvr.cli import app

    return CliRunner().invoke(app, ["rejection-sample", *args])


def test_the_command_on_a_tiny_model(tiny_model_dir, tmp_path, parity_verifier):
    data = tmp_path / "rows.jsonl"
    _rows(data, 4)
    common = ["--model", str(tiny_model_dir), "--data", str(data), "--n", "4", "--max-new-tokens", "4"]
    common += [arg for setting in TINY for arg in ("--set", setting)]
    outputs = []
    for attempt in range(2):
        out = tmp_path / f"run{attempt}" / "traces.jsonl"
        result = _invoke(*common, "--keep", "distinct", "--seed", "7", "--out", str(out))
        assert result.exit_code == 0, result.output
        outputs.append(out.read_text())
    assert outputs[0] == outputs[1]  # seeded
    rows = [json.loads(line) for line in outputs[0].splitlines()]
    assert rows and all([m["role"] for m in r["messages"]] == ["system", "user", "assistant"] for r in rows)
    assert all(r["messages"][1]["content"] == r["question"] and len(r["messages"][2]["content"]) % 2 == 0 for r in rows)
    for question in {r["id"] for r in rows}:  # distinct: one trace per first character
        firsts = [r["messages"][2]["content"][:1] for r in rows if r["id"] == question]
        assert len(firsts) == len(set(firsts))
    provenance = json.loads(provenance_path(out).read_text())
    assert provenance["split"] == "all" and provenance["data"] == str(data) and provenance["keep"] == "distinct"
    assert provenance["model_hash"] and provenance["data_hash"] and provenance["sampling"]["seed"] == 7
    overall = provenance["overall"]
    assert (overall["questions"], overall["samples"], overall["traces"]) == (4, 16, len(rows))
    assert overall["pass_rate"] == overall["correct"] / 16 and overall["yield"] == len(rows) / 16
    assert list(provenance["verifiers"].values()) == [["math"]]
    assert "pass rate" in result.stderr and f"wrote {len(rows)} traces" in result.stderr
    assert json.loads(result.stdout)["overall"] == overall


@pytest.mark.parametrize(
    "args, message",
    [
        (["--keep", "longest"], "error: --keep: unknown keep rule 'longest' (choices: all, distinct, shortest)"),
        (["--split", "train"], "error: --split: --data samples every row of its file"),
        (["--temperature", "0"], "error: --temperature: 0 is greedy decoding"),
    ],
)
def test_a_bad_option_is_one_line_naming_it(tiny_model_dir, tmp_path, args, message):
    data = tmp_path / "rows.jsonl"
    _rows(data, 2)
    result = _invoke("--model", str(tiny_model_dir), "--data", str(data), "--out", str(tmp_path / "t.jsonl"), *args)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith(message), result.output
    assert not (tmp_path / "t.jsonl").exists()
