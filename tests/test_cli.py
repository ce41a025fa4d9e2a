"""The command line as a user meets it: one-line errors, a kill -9 mid-run that resumes exactly."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlvr.rollout import RolloutEngine

# Tiny random models run on the transformers engine: vLLM has no kernels for their head size.
TINY = "rollout.engine=transformers"

RLVR = [sys.executable, "-m", "rlvr.cli"]
TIMING = {"tokens_per_second", "generate_tokens_per_second", "generate_seconds", "score_seconds", "train_seconds", "step_seconds"}


def _run(*args, cwd=None, timeout=300):
    return subprocess.run([*RLVR, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd)


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--set", "train.lrr=1e-5"], "train.lrr: unknown key"),
        (["--set", "train.steps=ten"], "train.steps: Input should be a valid integer"),
        (["--set", "model.path=/no/such/model"], "model.path: /no/such/model: no such folder"),
        (["--set", "algo.loss=nope"], "unknown policy loss 'nope' (choices: cispo, gspo, ppo_clip, reinforce)"),
        (["--set", "algo.advantage=nope"], "(choices: dr_grpo, grpo, reinforce_pp, reinforce_pp_baseline, rloo)"),
        (["--set", "algo.correction=nope"], "unknown correction 'nope' (choices: icepop, none, seq_mask, tis)"),
    ],
)
def test_bad_config_exits_with_one_line_naming_the_key(args, expected, tmp_path):
    result = _run("train", *args, "--set", f"output_dir={tmp_path}")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu_exits_with_one_line(tmp_path):
    test_bad_config_exits_with_one_line_naming_the_key(
        ["--set", "train.device=cuda"], "train.device=cuda: no CUDA device is available on this machine", tmp_path
    )


def _tiny_run_args(model_dir: Path, out: Path, name: str, steps: int) -> list[str]:
    settings = {
        "name": name,
        "output_dir": str(out),
        "model.path": str(model_dir),
        "rollout.engine": "transformers",  # a tiny random model: vLLM has no kernels for its head size
        "train.steps": steps,
        "train.save_every": 2,
        "train.prompts_per_step": 4,
        "train.group_size": 4,
        "train.micro_batch_size": 8,
        "train.lr": 1e-3,
        "sampling.max_new_tokens": 24,
        "sampling.temperature": 1.0,
        "env.eval_size": 4,
        "eval.before": False,
    }
    return ["train", *[arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]]


def _metrics(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMING and not k.startswith("memory/")} for row in rows]


def _invoke(*args: str) -> subprocess.CompletedProcess:
    """The command line in this process (no interpreter start-up per call), with a subprocess's result fields."""
    from typer.testing import CliRunner

    from rlvr.cli import app

    result = CliRunner().invoke(app, list(args))
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def test_existing_run_needs_resume_or_overwrite(tiny_model_dir, tmp_path):
    args = _tiny_run_args(tiny_model_dir, tmp_path, "twice", 1)
    assert _invoke(*args).returncode == 0
    again = _invoke(*args)
    assert again.returncode == 2 and "--resume" in again.stderr and "--overwrite" in again.stderr
    assert _invoke(*args, "--overwrite").returncode == 0


def test_eval_reports_accuracy_with_a_confidence_interval(tiny_model_dir, tmp_path):
    out = tmp_path / "eval"
    result = _run(
        "eval",
        str(tiny_model_dir),
        "--set",
        TINY,
        "--set",
        "env.eval_size=3",
        "--set",
        "sampling.max_new_tokens=4",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    low, high = summary["avg@n"]["ci95"]
    assert summary["questions"] == 3 and 0.0 <= low <= summary["avg@n"]["value"] <= high <= 1.0
    assert len((out / "samples.jsonl").read_text().splitlines()) == 3
    assert {"summary.json", "report.md", "report.html"} <= {p.name for p in out.iterdir()}
    assert "avg@n" in result.stderr and "bootstrap" in result.stderr


def test_eval_on_a_gsm8k_file_with_samples_and_a_paired_comparison(tiny_model_dir, tmp_path):
    data = tmp_path / "gsm8k.jsonl"
    rows = [{"question": f"What is {i} + {i}?", "answer": f"{i} + {i} = <<{i}+{i}={2 * i}>>\n#### {2 * i}"} for i in range(5)]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    runs = []
    for seed in (0, 1):
        out = tmp_path / f"eval{seed}"
        args = ["--model", str(tiny_model_dir), "--data", str(data), "--n", "4", "--k", "1,4", "--seed", str(seed)]
        result = _invoke("eval", *args, "--set", TINY, "--max-new-tokens", "4", "--out", str(out))
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout)
        assert summary["questions"] == 5 and summary["samples_per_question"] == 4
        assert {"avg@n", "pass@1", "pass@4", "maj@1", "maj@4", "bo@4"} <= set(summary)
        assert summary["model_hash"] and summary["data_hash"] and summary["versions"]["torch"]
        assert len((out / "samples.jsonl").read_text().splitlines()) == 20
        runs.append(out)
    result = _invoke("eval", "--compare", str(runs[0]), str(runs[1]))
    assert result.returncode == 0, result.stderr
    comparison = json.loads(result.stdout)
    assert comparison["questions"] == 5 and comparison["ci95"][0] <= comparison["difference"] <= comparison["ci95"][1]
    assert "paired CI" in result.stderr
    bad = _invoke("eval", "--model", str(tiny_model_dir), "--data", str(data), "--n", "2", "--k", "4", "--set", TINY)
    assert bad.returncode == 2 and "k" in bad.stderr


class _FailsOnCall(RolloutEngine):
    """The transformers engine, except that its `fail_on`-th generate call fails the way a crashing engine does."""

    def __init__(self, engine, fail_on: int) -> None:
        self.engine, self.fail_on, self.calls = engine, fail_on, 0
        self.shares_weights, self.precision = engine.shares_weights, engine.precision

    def generate(self, prompts, sampling):
        from rlvr.errors import EngineError

        self.calls += 1
        if self.calls == self.fail_on:
            raise EngineError(f"test engine: generate failed on {len(prompts)} prompts: RuntimeError: boom")
        return self.engine.generate(prompts, sampling)

    def update_weights(self, weights):
        self.engine.update_weights(weights)


@pytest.fixture
def failing_engine(monkeypatch):
    """Registers `rollout.engine=fails-on-N` for N = 1..3, in this process."""
    from rlvr.rollout import ENGINES, TransformersEngine

    for n in (1, 2, 3):
        factory = lambda policy, tokenizer, settings, batch_size, n=n: _FailsOnCall(  # noqa: E731
            TransformersEngine(policy, tokenizer, batch_size), n
        )
        monkeypatch.setitem(ENGINES, f"fails-on-{n}", factory)


def test_an_engine_failure_in_eval_is_one_line_and_keeps_the_samples_before_it(tiny_model_dir, tmp_path, failing_engine):
    from typer.testing import CliRunner

    from rlvr.cli import app

    out = tmp_path / "eval"
    args = ["eval", str(tiny_model_dir), "--set", "rollout.engine=fails-on-2", "--set", "env.eval_size=40"]
    args += ["--set", "sampling.max_new_tokens=2", "--n", "2", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    (line,) = [line for line in result.output.splitlines() if line.strip()][-1:]
    assert line.startswith("error: test engine: generate failed on 16 prompts: RuntimeError: boom; the 64 samples")
    assert "Traceback" not in result.output
    partial = (out / "samples.partial.jsonl").read_text().splitlines()
    assert len(partial) == 64 and all("completion" in json.loads(row) for row in partial)  # the first call's 32 x 2


def test_an_engine_failure_in_training_keeps_the_steps_before_it(tiny_model_dir, tmp_path, failing_engine):
    from typer.testing import CliRunner

    from rlvr.cli import app

    settings = [f"model.path={tiny_model_dir}", "rollout.engine=fails-on-2", f"output_dir={tmp_path}", "name=crash"]
    settings += ["train.steps=3", "train.save_every=1", "train.prompts_per_step=1", "train.group_size=2"]
    settings += ["sampling.max_new_tokens=2", "eval.before=false", "eval.after=false", "scoring.workers=0"]
    result = CliRunner().invoke(app, ["train", *(arg for s in settings for arg in ("--set", s))])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "test engine: generate failed on 2 prompts: RuntimeError: boom" in result.output
    assert "continue with --resume" in result.output
    rows = (tmp_path / "crash" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(row)["step"] for row in rows] == [1]
    assert (tmp_path / "crash" / "checkpoints").is_dir()


def test_an_engine_failure_in_sample_is_one_line_and_keeps_the_lines_before_it(tiny_model_dir, tmp_path, failing_engine):
    from typer.testing import CliRunner

    from rlvr.cli import app

    requests = tmp_path / "in.jsonl"
    requests.write_text("".join(json.dumps({"question": f"What is {i} + 1?"}) + "\n" for i in range(4)))
    out = tmp_path / "out.jsonl"
    args = ["sample", str(tiny_model_dir), "-i", str(requests), "-o", str(out), "--batch-size", "2"]
    args += ["--max-new-tokens", "2", "--set", "rollout.engine=fails-on-2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "Traceback" not in result.output
    last = [line for line in result.output.splitlines() if line.strip()][-1]
    assert last.startswith("error: test engine: generate failed on 2 prompts: RuntimeError: boom; the 2 samples")
    assert len(out.read_text().splitlines()) == 2
