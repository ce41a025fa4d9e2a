"""Tools through the whole system: a training step, monitoring, evaluation, `rlvr sample`, `rlvr chat`,
`rlvr template check` and the errors a user can make."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence

import pytest
import torch
from typer.testing import CliRunner

from rlvr.cli import app
from rlvr.config import ConfigError, load_config
from rlvr.envs.base import load_demos
from rlvr.rollout.base import RolloutEngine, SamplingParams
from rlvr.rollout.tool_loop import ToolLoop
from rlvr.trainer import Trainer
from rlvr.types import Episode

# Tiny random models run on the transformers engine: vLLM has no kernels for their head size.
TINY = "rollout.engine=transformers"


class SearchingEngine(RolloutEngine):
    """Plays a policy that searches for the question's entity, then answers: right in even rows, wrong in odd ones."""

    shares_weights = True

    def __init__(self, tokenizer, answers: dict[str, str]) -> None:
        self.tokenizer = tokenizer
        self.answers = answers

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingParams) -> list[Episode]:
        episodes = []
        for row, prompt in enumerate(prompts):
            context = self.tokenizer.decode(prompt)
            question = context.rsplit("<|im_start|>user\n", 1)[1].split("<|im_end|>")[0]
            if context.rstrip().endswith("</tool_response><|im_end|>\n<|im_start|>assistant"):
                text = f"Answer: {self.answers[question] if row % 2 == 0 else 'Nowhere'}<|im_end|>"
            else:
                entity = re.search(r"((?:[A-Z][a-z]+ ?){1,2}[A-Z][a-z]+)", question.split(" ", 1)[1]).group(1)
                text = f'<tool_call>{{"name": "search", "arguments": {{"query": "{entity}"}}}}</tool_call>'
            ids = self.tokenizer.encode(text, add_special_tokens=False)[: sampling.max_new_tokens]
            episodes.append(Episode(list(prompt), ids, [-1.0] * len(ids), [1] * len(ids), text=self.tokenizer.decode(ids)))
        return episodes

    def update_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        pass


def _search_trainer(tiny_model_dir, tmp_path, *overrides) -> Trainer:
    settings = [
        f"model.path={tiny_model_dir}",
        "rollout.engine=transformers",
        f"output_dir={tmp_path}",
        "env.name=searchqa",
        "env.eval_size=4",
        "env.task_config={two_hop_fraction: 0.0}",
        "tools.search.corpus=[env]",
        "train.prompts_per_step=2",
        "train.group_size=4",
        "train.micro_batch_size=4",
        "sampling.max_new_tokens=40",
        "scoring.workers=0",
        "algo.overlong_filter=false",
    ]
    return Trainer(load_config(None, [*settings, *overrides]))


def test_a_training_step_with_the_search_tool(tiny_model_dir, tmp_path, tokenizer):
    trainer = _search_trainer(tiny_model_dir, tmp_path)
    assert trainer.tool_names == ["search"] and isinstance(trainer.sampler, ToolLoop)
    problems = trainer.env.train_problems(0, 4)  # steps 0 and 1
    trainer.sampler.engine = SearchingEngine(tokenizer, {p.question: p.answer for p in problems})
    problems = problems[:2]
    before = [p.detach().clone() for p in trainer.params]

    episodes = trainer.rollout(0)
    assert [e.rewards["correct"] for e in episodes] == [1.0, 0.0] * 4
    for episode, problem in zip(episodes, [p for p in problems for _ in range(4)]):
        (result,) = [m["content"] for m in episode.meta["messages"] if m["role"] == "tool"]
        assert result.startswith("[1] ") and problem.answer in result  # the search found the entity's document
    metrics = trainer.train_step(1)
    assert metrics["tools/search/call_rate"] == 1.0 and metrics["tools/error_rate"] == 0.0
    assert metrics["tools/turns"] == 2.0 and metrics["tools/result_tokens"] > 0
    assert metrics["one_hop/tools/search/call_rate"] == 1.0
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.params))
    assert "warnings" not in metrics


def test_collapse_warning_reaches_the_metrics(tiny_model_dir, tmp_path):
    trainer = _search_trainer(tiny_model_dir, tmp_path, "tools.collapse_steps=1", "tools.collapse_threshold=0.5")
    metrics = trainer.train_step(0)  # the tiny random model never writes a well-formed call
    assert metrics["tools/search/call_rate"] < 0.5
    assert metrics["warnings"] == [
        f"tool-use collapse: search call rate below 50% for 1 steps (now {metrics['tools/search/call_rate']:.1%})"
    ]


def test_tool_config_errors_name_the_key(tiny_model_dir, tmp_path):
    with pytest.raises(ConfigError, match="tools.enabled: unknown tool 'serch'"):
        _search_trainer(tiny_model_dir, tmp_path, "tools.enabled=[serch]")
    with pytest.raises(ConfigError, match="tools.max_turns"):
        load_config(None, ["tools.max_turns=0"])
    with pytest.raises(ConfigError, match="the environment has no documents of its own"):
        load_trainer = load_config(
            None, [f"model.path={tiny_model_dir}", "tools.enabled=[search]", "tools.search.corpus=[env]", TINY]
        )
        Trainer(load_trainer)


def test_demos_file_errors_name_the_message(tmp_path):
    path = tmp_path / "demos.json"
    path.write_text(json.dumps([{"role": "user", "content": "q"}, {"role": "robot", "content": "a"}]))
    with pytest.raises(ConfigError, match="demos.json: message 1: role: expected one of user, assistant, tool"):
        load_demos(str(path))
    path.write_text(json.dumps([{"role": "assistant", "content": "", "tool_calls": [{"function": {}}]}]))
    with pytest.raises(ConfigError, match="message 0: tool_calls"):
        load_demos(str(path))
    path.write_text("[{")
    with pytest.raises(ConfigError, match="env.demos: .*demos.json"):
        load_demos(str(path))


def test_python_math_recipe_shows_the_demos_and_the_tool(tokenizer):
    from rlvr.envs import make_env
    from rlvr.rollout.sampler import enabled_tools

    config = load_config("python-math")
    env = make_env(config.env)
    messages = env.messages(env.eval_problems()[0])
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "assistant"] * 1 + [
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
    ]
    assert enabled_tools(config, env) == ["python"]


runner = CliRunner()


def test_sample_writes_one_record_per_sample_and_rejects_bad_lines(tiny_model_dir, tmp_path):
    requests = tmp_path / "in.jsonl"
    requests.write_text(
        '{"question": "Where was Tamric Tarrask born?", "id": 7}\n\n{"messages": [{"role": "user", "content": "hi"}]}\n'
    )
    out = tmp_path / "out.jsonl"
    args = ["sample", str(tiny_model_dir), "-i", str(requests), "-o", str(out), "--recipe", "search-qa", "--n", "2"]
    result = runner.invoke(app, [*args, "--max-new-tokens", "8", "--set", "env.eval_size=4", "--set", TINY])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 4 and [r["sample"] for r in records] == [0, 1, 0, 1]
    assert records[0]["id"] == 7 and records[0]["messages"][-1]["role"] in ("assistant", "tool")
    assert records[0]["tools"]["model_tokens"] <= 8
    requests.write_text('{"question": "fine"}\n{"prompt": "no question"}\n')
    result = runner.invoke(app, ["sample", str(tiny_model_dir), "-i", str(requests), "-o", str(out), "--set", TINY])
    assert result.exit_code == 2 and "in.jsonl:2: question: expected a string" in result.output


def test_chat_reads_questions_from_stdin(tiny_model_dir):
    args = [
        "chat",
        str(tiny_model_dir),
        "--recipe",
        "search-qa",
        "--max-new-tokens",
        "6",
        "--set",
        "env.eval_size=4",
        "--set",
        TINY,
    ]
    result = runner.invoke(app, args, input="Where was Tamric Tarrask born?\nAnd then?\n\n")
    assert result.exit_code == 0, result.output
    assert "with tools: search" in result.output
    assert result.output.count("you>") == 2


def test_template_check_command(tiny_model_dir):
    result = runner.invoke(app, ["template", "check", str(tiny_model_dir)])
    assert result.exit_code == 0 and "append-only" in result.output


def test_evaluation_runs_the_tool_loop_and_reports_tool_use(tiny_model_dir, tmp_path, tokenizer):
    from rlvr.config import SamplingConfig
    from rlvr.eval.report import markdown
    from rlvr.eval.runner import evaluate

    trainer = _search_trainer(tiny_model_dir, tmp_path)
    problems = trainer.env.eval_problems()
    trainer.sampler.engine = SearchingEngine(tokenizer, {p.question: p.answer for p in problems})
    result = evaluate(trainer.sampler, trainer.env, tokenizer, SamplingConfig(max_new_tokens=40), trainer.scorer, trainer.chat)
    assert result["tools"]["search/call_rate"] == 1.0 and result["tools"]["turns"] == 2.0
    # Greedy n=1 runs the rows in order, so rows 0 and 2 answer right (the engine's rule), 1 and 3 wrong.
    assert [s.correct for s in result["samples"]] == [True, False, True, False]
    sample = result["samples"][0]
    assert sample.tokens == sample.tools["model_tokens"] and [m["role"] for m in sample.messages] == [
        "assistant",
        "tool",
        "assistant",
    ]
    assert "Tool use: called in search 100% of samples" in markdown({**result, "samples_per_question": 1})
