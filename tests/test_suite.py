"""The regression suite: the packaged suite's configs, bad suite files, the drop verdict by hand, `rlvr eval --suite`
on a tiny model (base results reused), and `train.eval_every` rows in metrics.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from rlvr.config import ConfigError, load_config
from rlvr.eval.suite import (
    SuiteResult,
    compare_results,
    drops,
    load_suite,
    markdown_table,
    starting_model,
    suite_configs,
)
from rlvr.step_metrics import subsets_in, suite_evals_in

TINY_SUITE = {
    "recipe": "default",
    "evals": {
        "chain_sum": {"env": {"name": "gym", "task": "chain_sum", "eval_size": 3}},
        "words": {"env": {"name": "mixture", "sources": [{"path": "words.jsonl", "use": "eval"}]}, "limit": 2},
    },
}
TINY = ["rollout.engine=transformers", "sampling.max_new_tokens=6", "scoring.workers=0"]


def _suite_file(folder: Path, suite: dict = TINY_SUITE) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"question": f"What is {a} + {a}?", "answer": str(2 * a)} for a in range(1, 4)]
    (folder / "words.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = folder / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def test_the_packaged_suite_builds_a_config_per_domain():
    suite = load_suite()
    configs = suite_configs(suite, "smollm2-135m")
    assert list(configs) == ["word_problems", "chain_sum", "basic_arithmetic", "search_qa", "humaneval", "instructions"]
    assert {name: c.env.label for name, c in configs.items()}["humaneval"] == "humaneval"
    word = configs["word_problems"].env.sources[0]
    assert Path(word.path).is_file() and word.verifier == "math"  # anchored to the suite's folder
    assert configs["search_qa"].tools.search.top_k == 2 and configs["humaneval"].eval.max_new_tokens == 256
    # What every evaluation shares comes from the recipe: the default's format reward and prompt.
    assert all(c.env.format_reward == 0.1 and c.model.path == "smollm2-135m" for c in configs.values())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"evals": {}}, r"evals: Value error, a suite needs at least one evaluation"),
        ({"extra": 1}, r"extra: Extra inputs are not permitted"),
        ({"evals": {"x": {"env": {"name": "gym"}, "limit": 0}}}, r"evals\.x\.limit: Input should be greater than or equal to 1"),
        ({"evals": {"x": {"env": {"name": "gym", "tsk": "chain_sum"}}}}, r"evals\.x: .*env\.tsk: unknown key"),
    ],
)
def test_a_bad_suite_file_names_the_file_and_the_key(tmp_path, change, message):
    path = _suite_file(tmp_path, {**TINY_SUITE, **change})
    with pytest.raises(ConfigError, match=message) as error:
        suite_configs(load_suite(str(path)), "smollm2-135m")
    assert str(error.value).startswith(str(path))


def test_a_missing_suite_lists_the_packaged_ones():
    with pytest.raises(ConfigError, match=r"nope: no such suite file or packaged suite \(packaged: regression\)"):
        load_suite("nope")


def _result(name: str, correct: list[int]) -> SuiteResult:
    per_question = {f"q{i}": float(c) for i, c in enumerate(correct)}
    accuracy = sum(correct) / len(correct)
    return SuiteResult(name, accuracy, (accuracy, accuracy), len(correct), per_question)


def test_a_drop_is_flagged_only_when_its_paired_interval_is_below_zero():
    base = {"a": _result("a", [1] * 20), "b": _result("b", [0] * 10 + [1] * 10), "c": _result("c", [1, 0] * 10)}
    model = {"a": _result("a", [1] * 10 + [0] * 10), "b": _result("b", [1] * 20), "c": _result("c", [0, 1] * 10)}
    rows = {row.name: row for row in compare_results(model, base, resamples=2000)}
    # a: 10 of 20 questions lost: -50%, every resample negative; b: +50%; c: as many lost as won, 0 on average.
    assert (rows["a"].difference, rows["a"].verdict, rows["a"].base_accuracy) == (-0.5, "drop", 1.0)
    assert rows["a"].difference_ci95[1] < 0 and rows["a"].p_value == 0.0
    assert (rows["b"].difference, rows["b"].verdict) == (0.5, "gain")
    assert rows["c"].difference == 0.0 and rows["c"].verdict == "same" and rows["c"].p_value == 1.0
    assert drops(list(rows.values())) == ["a"]
    table = markdown_table(list(rows.values()), "m", "base")
    assert "| a | 20 | 50.0% [50.0%, 50.0%] | 100.0% | -50.0%" in table and "**DROP**" in table
    assert rows["a"].paired_questions == 20
    assert "Significant drops: a." in table


def test_without_a_base_only_the_accuracies_are_shown():
    (row,) = compare_results({"a": _result("a", [1, 0])}, None)
    assert (row.accuracy, row.base_accuracy, row.verdict) == (0.5, None, "")


def test_the_starting_model_of_a_run_its_final_model_and_its_checkpoints(tmp_path):
    run = tmp_path / "runs" / "x"
    (run / "checkpoints" / "step-000002" / "model").mkdir(parents=True)
    (run / "final").mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"model": {"path": "smollm2-135m"}}))
    for model in (run, run / "final", run / "checkpoints" / "step-000002"):
        assert starting_model(str(model)) == "smollm2-135m"
    assert starting_model(str(tmp_path)) is None


def test_rlvr_eval_suite_on_a_tiny_model_reuses_the_base_results(tiny_model_dir, tmp_path):
    from rlvr.api import run_suite

    path = _suite_file(tmp_path / "suite")
    out = tmp_path / "out"
    kwargs = {"suite": str(path), "base": str(tiny_model_dir), "overrides": TINY, "out": out}
    rows = run_suite(str(tiny_model_dir), **kwargs)
    # The same weights on the same questions, greedy: no difference anywhere.
    assert [(r.name, r.questions, r.difference, r.verdict) for r in rows] == [
        ("chain_sum", 3, 0.0, "same"),
        ("words", 2, 0.0, "same"),
    ]
    record = json.loads((out / "suite.json").read_text())
    assert record["drops"] == [] and [r["name"] for r in record["rows"]] == ["chain_sum", "words"]
    for role in ("model", "base"):
        assert (out / role / "words" / "report.html").exists()
        assert len((out / role / "words" / "samples.jsonl").read_text().splitlines()) == 2
    written = (out / "base" / "chain_sum" / "samples.jsonl").stat().st_mtime_ns
    assert run_suite(str(tiny_model_dir), **kwargs) == rows
    assert (out / "base" / "chain_sum" / "samples.jsonl").stat().st_mtime_ns == written  # reused, not measured again
    # Results a kill left half-written, or measured with other settings, are measured again.
    samples = out / "base" / "chain_sum" / "samples.jsonl"
    samples.write_text(samples.read_text().splitlines()[0] + "\n")
    assert run_suite(str(tiny_model_dir), **kwargs) == rows and len(samples.read_text().splitlines()) == 3
    changed = run_suite(str(tiny_model_dir), **{**kwargs, "overrides": [*TINY, "eval.max_new_tokens=3"]})
    assert json.loads((out / "base" / "chain_sum" / "summary.json").read_text())["decoding"]["max_new_tokens"] == 3
    assert [r.verdict for r in changed] == ["same", "same"]


def test_eval_every_puts_the_suite_in_the_metrics_rows(tiny_model_dir, tmp_path):
    from rich.console import Console

    from rlvr.run import train

    # The suite's configs come from its file, not from the run's overrides: scored in this process, as the run is
    # (TINY), not by worker processes each of its four evaluations would start.
    in_process = {name: {**entry, "scoring": {"workers": 0}} for name, entry in TINY_SUITE["evals"].items()}
    path = _suite_file(tmp_path / "suite", {**TINY_SUITE, "evals": in_process})
    settings = [
        f"model.path={tiny_model_dir}",
        f"output_dir={tmp_path / 'runs'}",
        "name=tiny",
        *TINY,
        "train.steps=2",
        "train.prompts_per_step=2",
        "train.group_size=2",
        "train.eval_every=2",
        f"eval.suite={path}",
        "eval.before=false",
        "eval.after=false",
        "env.eval_size=2",
    ]
    train(load_config(None, settings), console=Console(file=open("/dev/null", "w")))  # noqa: SIM115
    run = tmp_path / "runs" / "tiny"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert "suite/drops" not in rows[0]  # step 1 is not due
    assert {"suite/chain_sum/accuracy", "suite/chain_sum/delta", "suite/words/accuracy", "suite/drops"} <= set(rows[1])
    assert sorted(p.name for p in (run / "suite").iterdir()) == ["step-000000", "step-000002"]
    record = json.loads((run / "suite" / "step-000002" / "suite.json").read_text())
    assert [r["name"] for r in record["rows"]] == ["chain_sum", "words"]
    assert rows[1]["suite/drops"] == len(record["drops"])
    # The suite's accuracies are not data subsets; they get their own panel of curves.png.
    assert subsets_in(rows) == [] and suite_evals_in(rows) == ["chain_sum", "words"]
    assert (run / "curves.png").exists()
