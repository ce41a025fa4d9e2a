"""Pipelines (`stages:`): stage configs checked before anything runs, each stage starting from the model the one before
it trained and reading the traces a rejection stage wrote, the report's numbers, and a crash in a later stage resumed
without running the finished stages again, ending where an uninterrupted pipeline ends."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from rlvr.config import ConfigError, load_config
from rlvr.rewards import VERIFIERS

TINY = [
    "rollout.engine=transformers",
    "scoring.workers=0",
    "env.eval_size=3",
    "sampling.max_new_tokens=3",
    "train.prompts_per_step=2",
    "train.group_size=2",
    "train.lr=1e-3",
    "train.save_every=100",  # a checkpoint at the end of each stage; stage 4, which the test crashes, saves every step
]
STAGES = (
    "stages=[{name: cold, kind: sft, data: DATA}, {name: rl, kind: rl, set: {train.steps: 2}},"
    " {name: sample, kind: rejection_sample, n: 2, limit: 3},"
    " {name: again, kind: sft, set: {train.lr: 5.0e-4, train.save_every: 1}},"
    " {name: rl2, kind: rl, set: {train.steps: 1}}]"
)


def _data(folder: Path) -> Path:
    """A GSM8K-format file: 3 rows held out, the rest the cold-start traces and the training questions."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "word.jsonl"
    rows = [{"question": f"What is {i} plus {i}?", "answer": f"{i} + {i} = {2 * i}.\n#### {2 * i}"} for i in range(9)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _config(tiny_model_dir, tmp_path, *extra: str):
    data = _data(tmp_path)
    env = [
        "env.name=mixture",
        f"env.sources=[{{path: {json.dumps(str(data))}, verifier: math}}]",
    ]
    settings = [*env, *TINY, f"model.path={tiny_model_dir}", f"output_dir={tmp_path / 'runs'}", "name=pipe"]
    return load_config(None, [*settings, STAGES.replace("DATA", json.dumps(str(data))), *extra])


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        ("[{name: a, kind: dpo}]", "stages.0: Input tag 'dpo' found using 'kind' does not match"),
        ("[{name: a, kind: rl, set: {model.path: x}}]", "stages.0.set: model.path: the pipeline sets it for each stage"),
        ("[{name: a, kind: rl, epochs: 2}]", "stages.0.epochs: unknown key (valid keys: name, set, kind)"),
        ("[{name: a, kind: sft}]", "stages.0 (a): data: no earlier rejection_sample stage"),
        ("[{name: a, kind: rl}, {name: a, kind: sft, data: t.jsonl}]", "stages.1 (a): another stage is named 'a'"),
        ("[{name: s, kind: rejection_sample}, {name: d, kind: distill, teacher: s}]", "stages.1 (d): teacher: stage 's' trains"),
        ("[{name: r, kind: rl}, {name: t, kind: sft, data: r}]", "stages.1 (t): data: stage 'r' is a rl stage"),
    ],
)
def test_a_bad_stage_is_named(stages, message):
    with pytest.raises(ConfigError, match="stages") as error:
        load_config(None, [f"stages={stages}"])
    assert message in str(error.value)


def test_a_bad_override_of_a_later_stage_fails_before_any_stage_runs(tiny_model_dir, tmp_path):
    from rlvr.pipeline import run_pipeline

    config = _config(tiny_model_dir, tmp_path, "stages.3.set={train.lr: -1}")
    with pytest.raises(ConfigError, match=r"pipe: stage 4 \(again\): train.lr: Input should be greater than 0"):
        run_pipeline(config, console=Console(file=io.StringIO()))
    assert not (tmp_path / "runs" / "pipe" / "1-cold").exists()


def _always_right(text, problem):
    return 1.0  # the tiny random model never answers right: every sample verified, so every stage has data


def test_a_pipeline_chains_its_stages_resumes_after_a_crash_and_reports_them(tiny_model_dir, tmp_path, monkeypatch):
    from rlvr.api import train
    from rlvr.sft.trainer import SFTTrainer

    monkeypatch.setitem(VERIFIERS, "math", _always_right)
    quiet = Console(file=io.StringIO())
    config = _config(tiny_model_dir, tmp_path)
    run = tmp_path / "runs" / "pipe"
    folders = [run / name for name in ("1-cold", "2-rl", "3-sample", "4-again", "5-rl2")]
    # Killed in the second sft stage's second step, then resumed: the finished stages are not run again, and the
    # killed one continues from its checkpoint (exact resume within a stage is the trainer's, tested in test_sft).
    step = SFTTrainer.train_step

    def crash_in_stage_4(self, index):
        if self.config.name == "4-again" and index == 1:
            raise RuntimeError("killed")
        return step(self, index)

    with monkeypatch.context() as patch:
        patch.setattr(SFTTrainer, "train_step", crash_in_stage_4)
        with pytest.raises(RuntimeError, match="killed"):
            train(config, console=quiet)
    assert [stage["name"] for stage in json.loads((run / "pipeline.json").read_text())["stages"]] == ["cold", "rl", "sample"]
    finished = {f.name: (f / "summary.json").stat().st_mtime_ns for f in folders[:2]}
    sampled = (folders[2] / "traces.jsonl").stat().st_mtime_ns
    before_crash = (folders[3] / "metrics.jsonl").read_text()
    with pytest.raises(ConfigError, match="run folder exists"):
        train(config, console=quiet)
    report = train(config, resume=True, console=quiet)
    assert {f.name: (f / "summary.json").stat().st_mtime_ns for f in folders[:2]} == finished
    assert (folders[2] / "traces.jsonl").stat().st_mtime_ns == sampled
    resumed = (folders[3] / "metrics.jsonl").read_text()
    assert resumed.startswith(before_crash) and [json.loads(line)["step"] for line in resumed.splitlines()] == [1, 2, 3]

    assert [stage["folder"] for stage in report["stages"]] == [str(f) for f in folders]
    saved = [yaml.safe_load((f / "config.yaml").read_text()) for f in folders if f.name != "3-sample"]
    # Each training stage starts from the model the one before it trained; the rejection stage samples from rl's.
    assert [c["model"]["path"] for c in saved] == [str(tiny_model_dir), *(str(folders[i] / "final") for i in (0, 1, 3))]
    assert saved[2]["sft"]["data"] == str(folders[2] / "traces.jsonl") and saved[2]["train"]["lr"] == 5e-4
    assert report["stages"][2]["model"] == str(folders[1] / "final")
    # Only the first stage evaluates the starting model; every training stage evaluates its own.
    assert [(f / "eval_before.json").exists() for f in folders] == [True, False, False, False, False]
    traces = [json.loads(line) for line in (folders[2] / "traces.jsonl").read_text().splitlines()]
    kept = report["stages"][2]["traces"]
    assert len(traces) == kept["traces"] == kept["samples"] == 6 and kept["pass_rate"] == 1.0
    # The compute each stage spent, from its own records.
    rl_rows = [json.loads(line) for line in (folders[1] / "metrics.jsonl").read_text().splitlines()]
    assert report["stages"][1]["compute"]["generated_tokens"] == sum(r["generated_tokens"] for r in rl_rows) > 0
    assert report["stages"][0]["compute"]["generated_tokens"] == 0 and report["stages"][0]["compute"]["trained_tokens"] > 0
    assert report["stages"][2]["compute"]["trained_tokens"] == 0 and report["stages"][2]["compute"]["generated_tokens"] > 0
    total = report["total"]["generated_tokens"]
    assert total == sum(stage["compute"]["generated_tokens"] for stage in report["stages"])
    assert report["start"]["questions"] == 3 and all(
        stage["accuracy"]["questions"] == 3 and stage["versus_start"]["questions"] == 3
        for stage in report["stages"]
        if stage["kind"] != "rejection_sample"
    )
    assert json.loads((run / "pipeline.json").read_text()) == json.loads(json.dumps(report))
    table = (run / "pipeline.md").read_text()
    assert "| 3 | sample | rejection_sample | (no training) |" in table and "6 traces, pass rate 100.0%" in table
    assert (run / "pipeline.png").stat().st_size > 0


def test_compare_reads_a_run_or_a_pipeline_folder(tmp_path):
    from rlvr.eval.compare import evaluation_files

    run = tmp_path / "run"
    run.mkdir()
    (run / "eval_after.json").write_text("{}")
    (run / "eval_after.samples.jsonl").write_text("")
    assert evaluation_files(run) == (run / "eval_after.json", run / "eval_after.samples.jsonl")
    pipe = tmp_path / "pipe"
    pipe.mkdir()
    stages = [{"folder": str(run), "accuracy": {"value": 0.5}}, {"folder": str(tmp_path / "x"), "accuracy": None}]
    (pipe / "pipeline.json").write_text(json.dumps({"stages": stages}))
    assert evaluation_files(pipe) == (run / "eval_after.json", run / "eval_after.samples.jsonl")
    with pytest.raises(ConfigError, match="not an evaluation folder"):
        evaluation_files(tmp_path)
