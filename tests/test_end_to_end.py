"""Real runs: a few GRPO steps on the packaged SmolLM2, and LoRA on a tiny model."""

import json
import math

import pytest

from rlvr.config import load_config
from rlvr.run import train


def _overrides(out, **extra):
    settings = {
        "output_dir": str(out),
        "train.steps": 2,
        "train.prompts_per_step": 2,
        "train.group_size": 4,
        "train.micro_batch_size": 8,
        "sampling.max_new_tokens": 32,
        "env.eval_size": 8,
        "train.save_every": 1,
        "rollout.engine": "transformers",  # the vLLM engine has its own end-to-end test
        **extra,
    }
    return [f"{key}={value}" for key, value in settings.items()]


@pytest.mark.slow
def test_grpo_steps_on_the_packaged_model(tmp_path):
    # An fp32 learner on every CPU, so that it computes exactly what the sampler, sharing its weights, computed.
    # A checkpoint at step 2 only: each of the 135M model's (with its optimiser state) costs seconds to write. A guard
    # verdict stops the run at once (failing the test) instead of rolling back, so the guard writes no step-0 one.
    # Evaluation generates 8 tokens: it is the whole evaluation path on 8 questions either way.
    settings = {"model.autocast_bf16": "false", "train.save_every": 2, "eval.max_new_tokens": 8, "train.guard.max_rollbacks": 0}
    config = load_config(None, _overrides(tmp_path, name="e2e", **settings))
    summary = train(config)
    run = tmp_path / "e2e"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2]
    for row in rows:
        for key in (
            "reward",
            "reward/correct",
            "reward/format",
            "accuracy",
            "response_length",
            "clip_frac",
            "entropy",
            "grad_norm",
            "tokens_per_second",
            "step_seconds",
        ):
            assert math.isfinite(row[key]), key
        assert row["logprob_mismatch"] < 1e-3  # the sampler and learner share weights
    assert summary["eval_before"]["n"] == summary["eval_after"]["n"] == 8
    assert {"model", "env", "steps", "wall_seconds"} <= set(summary)
    assert (run / "final" / "model.safetensors").exists()
    assert (run / "curves.png").exists()
    assert (run / "checkpoints" / "latest").read_text() == "step-000002"
    # Any checkpoint, or the run itself, is a model rlvr can load and evaluate.
    from rlvr.models import load_policy, load_tokenizer

    for name in (run / "checkpoints" / "step-000002", run):
        assert load_tokenizer(str(name)).eos_token == "<|im_end|>"
        assert load_policy(str(name)).config.num_hidden_layers == 30


def test_lora_run_saves_an_adapter_that_eval_can_load(tiny_model_dir, tmp_path):
    from rlvr.models import load_policy

    config = load_config(
        None,
        _overrides(
            tmp_path,
            name="lora",
            **{
                "model.path": str(tiny_model_dir),
                "model.lora.rank": 4,
                "train.lr": 1e-3,
                "scoring.workers": 0,  # scoring in worker processes is the mixture test's; here, two fewer interpreters
                "eval.before": False,
                "sampling.max_new_tokens": 8,
                "env.eval_size": 2,
            },
        ),
    )
    summary = train(config)
    final = tmp_path / "lora" / "final"
    assert (final / "adapter_config.json").exists() and summary["steps"] == 2
    merged = load_policy(str(final))
    assert not any("lora" in name for name, _ in merged.named_parameters())


def test_the_mixture_recipe_logs_every_subset(tiny_model_dir, tmp_path):
    """The packaged mixture recipe end to end on a tiny model (scoring in worker processes): per-subset reward and
    accuracy at every step, and per-subset held-out accuracy before and after."""
    settings = {"model.path": str(tiny_model_dir), "sampling.max_new_tokens": 8, "env.eval_size": 6, "train.prompts_per_step": 6}
    config = load_config("mixture", _overrides(tmp_path, name="mix", **settings))
    assert config.scoring.workers > 0
    summary = train(config)
    rows = [json.loads(line) for line in (tmp_path / "mix" / "metrics.jsonl").read_text().splitlines()]
    logged = [key.removesuffix("/accuracy") for row in rows for key in row if key.endswith("/accuracy")]
    assert set(logged) == {"word_problems", "chain_sum", "basic_arithmetic"}
    for row in rows:
        assert sum(row[f"{subset}/episodes"] for subset in set(logged) if f"{subset}/episodes" in row) == 6 * 4
        assert row["score_errors"] == 0
    for label in ("eval_before", "eval_after"):
        assert {name: part["questions"] for name, part in summary[label]["subsets"].items()} == {
            "word_problems": 2,
            "chain_sum": 2,
            "basic_arithmetic": 2,
        }
    assert summary["env"] == "mixture:word_problems+chain_sum+basic_arithmetic"
