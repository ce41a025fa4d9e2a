"""Recipes, overrides and the one-line errors a user sees."""

import pytest

from rlvr.config import ConfigError, load_config, parse_config, set_override


def test_default_recipe_loads():
    config = load_config(None)
    assert config.model.path == "smollm2-135m"
    assert config.env.eval_size >= 200


def test_overrides_are_typed():
    config = load_config(None, ["train.lr=3e-5", "algo.dynamic_sampling=true", "env.task_config={min_terms: 3}"])
    assert config.train.lr == pytest.approx(3e-5)
    assert config.algo.dynamic_sampling is True
    assert config.env.task_config == {"min_terms": 3}


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.lrr=1", "train.lrr: unknown key (valid keys: steps, prompts_per_step"),
        ("trian.lr=1", "trian: unknown key (valid keys: name, seed"),
        ("train.steps=many", "train.steps: Input should be a valid integer"),
        ("algo.advantage=ppo", "algo.advantage: unknown advantage estimator 'ppo' (choices: dr_grpo, grpo, rloo)"),
        ("algo.aggregation=mean", "algo.aggregation: Input should be 'token', 'sequence' or 'constant'"),
        ("rollout.engine=tgi", "rollout.engine: unknown rollout engine 'tgi' (choices: auto, transformers, vllm)"),
        ("noequals", "expected key=value"),
    ],
)
def test_bad_keys_and_types_name_the_key(override, message):
    with pytest.raises(ConfigError) as error:
        load_config(None, [override])
    text = str(error.value)
    assert message in text
    assert "\n" not in text


def test_unknown_recipe_lists_packaged_ones(tmp_path):
    with pytest.raises(ConfigError, match="packaged: default"):
        load_config("nonexistent")
    with pytest.raises(ConfigError, match="recipe file not found"):
        load_config(str(tmp_path / "missing.yaml"))


def test_invalid_yaml_names_file_and_line(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("train:\n  steps: 3\n  lr: [1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: invalid YAML"):
        load_config(str(recipe))


def test_override_into_a_scalar_is_rejected():
    data = {"seed": 1}
    with pytest.raises(ConfigError, match="seed is not a section"):
        set_override(data, "seed.value=2")


def test_missing_model_path_is_named(tmp_path):
    from rlvr.models import resolve_model_path

    config = parse_config({"model": {"path": str(tmp_path / "nope")}})
    with pytest.raises(ConfigError, match=r"model.path: .*nope: no such folder"):
        resolve_model_path(config.model.path)
