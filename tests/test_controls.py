"""Control rewards (`random`, `format_only`) and `rlvr controls`: the recipe against its controls, paired."""

from __future__ import annotations

import json

import pytest

from rlvr.controls import CONTROLS, control_configs, run_controls
from rlvr.envs import make_env
from rlvr.rewards import REWARDS
from rlvr.types import Problem


def test_the_random_reward_is_a_fair_coin_that_ignores_correctness():
    problem = Problem(question="What is 2 + 3?", answer="5", verifier="math")
    texts = [f"Answer: {n}" for n in range(2000)]
    draws = [REWARDS["random"](text, problem) for text in texts]
    assert set(draws) == {0.0, 1.0} and 0.45 < sum(draws) / len(draws) < 0.55
    assert draws == [REWARDS["random"](text, problem) for text in texts]  # the same completion, the same reward
    # Right and wrong answers are paid alike: among completions that say 5 and those that do not.
    right = [REWARDS["random"](f"Answer: 5{' ' * k}", problem) for k in range(400)]
    assert 0.4 < sum(right) / len(right) < 0.6


def test_each_control_changes_only_what_the_reward_pays_for():
    configs = control_configs(None, ["name=demo"], [])
    assert {c: cfg.name for c, cfg in configs.items()} == {
        "real": "demo-real",
        "random": "demo-random",
        "format_only": "demo-format_only",
    }
    weights = {c: make_env(cfg.env).rubric.weights for c, cfg in configs.items()}
    assert weights == {
        "real": {"correct": 1.0, "format": 0.1},
        "random": {"correct": 0.0, "format": 0.0, "random": 1.0},
        "format_only": {"correct": 0.0, "format": 1.0},
    }
    real = configs["real"].model_dump()
    for control in ("random", "format_only"):
        other = configs[control].model_dump()
        assert {k for k in real if real[k] != other[k]} == {"name", "env", "eval"}
        assert other["eval"]["before"] is False and configs["real"].eval.before is True
        assert {k for k in real["env"] if real["env"][k] != other["env"][k]} <= {"correct_weight", "format_reward", "rewards"}
    assert set(CONTROLS) == {"real", "random", "format_only"}


def test_controls_train_compare_and_keep_finished_runs(tiny_model_dir, tmp_path):
    settings = {
        "model.path": str(tiny_model_dir),
        "output_dir": str(tmp_path),
        "name": "tiny",
        "train.steps": 1,
        "train.prompts_per_step": 2,
        "train.group_size": 4,
        "sampling.max_new_tokens": 8,
        "env.eval_size": 6,
        "rollout.engine": "transformers",
        "scoring.workers": 0,
    }
    overrides = [f"{key}={value}" for key, value in settings.items()]
    results = run_controls(None, overrides)
    assert [r.control for r in results] == ["real", "random", "format_only"]
    assert all(r.questions == 6 and 0.0 <= r.accuracy <= 1.0 for r in results)
    assert results[0].minus_real is None and all(r.minus_real is not None and r.p_value is not None for r in results[1:])
    for r in results[1:]:
        assert r.paired_questions == 6  # six distinct held-out questions: the difference is the plain one
        assert r.minus_real == pytest.approx(r.accuracy - results[0].accuracy)
    saved = json.loads((tmp_path / "tiny-controls.json").read_text())
    assert [row["control"] for row in saved] == ["real", "random", "format_only"]
    # The random run was paid by the coin alone, and its accuracy still measured by the task's verifier.
    (row,) = [json.loads(line) for line in (tmp_path / "tiny-random" / "metrics.jsonl").read_text().splitlines()]
    assert row["reward"] == pytest.approx(row["reward/random"]) and "accuracy" in row
    assert not (tmp_path / "tiny-random" / "eval_before.json").exists()
    stamp = (tmp_path / "tiny-real" / "summary.json").stat().st_mtime_ns
    assert run_controls(None, overrides) == results  # finished runs are kept, not trained again
    assert (tmp_path / "tiny-real" / "summary.json").stat().st_mtime_ns == stamp
