"""Recipes, overrides and the one-line errors a user sees."""

import json
from pathlib import Path

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
        ("trian.lr=1", "trian: unknown key (valid keys: name, plugins, seed"),
        ("train.steps=many", "train.steps: Input should be a valid integer"),
        (
            "algo.advantage=ppo",
            "algo.advantage: unknown advantage estimator 'ppo' (choices: dr_grpo, grpo, reinforce_pp, reinforce_pp_baseline,",
        ),
        ("algo.loss=nope", "algo.loss.name: unknown policy loss 'nope' (choices: cispo, gspo, ppo_clip, reinforce)"),
        ("algo.correction=nope", "algo.correction.name: unknown correction 'nope' (choices: icepop, none, seq_mask, tis)"),
        ("algo.loss={name: gspo, clip: 1}", "algo.loss.clip: unknown key (valid keys: name, clip_low, clip_high)"),
        ("algo.kl.estimator=k4", "algo.kl.estimator: unknown KL estimator 'k4' (choices: k1, k2, k3)"),
        ("algo.clip_low=0.1", "algo: clip_low is now a setting of its own: write algo.loss: {name: ppo_clip, clip_low: ...}"),
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


def test_switching_the_environment_keeps_shared_keys_and_replays_the_new_ones():
    # --set env.name=X drops what only the recipe's environment reads (the gym task) and keeps what all share.
    config = load_config(None, ["env.name=searchqa", "env.task_config.cities=100", "env.eval_size=20"])
    assert config.env.name == "searchqa" and config.env.task_config.cities == 100 and config.env.eval_size == 20
    assert config.env.format_reward == 0.1  # from the recipe
    whole = load_config(None, ["env={name: searchqa, task_config: {cities: 90}}"])
    assert whole.env.task_config.cities == 90
    # The same name is no switch: the recipe's environment stays as it is, overrides on top.
    same = load_config("search-qa", ["env.name=searchqa", "env.task_config.kb_seed=3"])
    assert same.env.task_config.two_hop_fraction == 0.3 and same.env.task_config.kb_seed == 3


def test_eval_env_and_data_switch_like_set():
    from rlvr.api import eval_config

    assert eval_config("smollm2-135m", env="gym").env.label == "gym:chain_sum"  # the recipe's own
    assert eval_config("smollm2-135m", env="humaneval").env.name == "humaneval"
    data = eval_config("smollm2-135m", data=Path("my data.jsonl"), overrides=["env.eval_size=7"]).env
    assert data.name == "mixture" and data.sources[0].path == "my data.jsonl" and data.sources[0].use == "eval"
    assert data.eval_size == 7
    with pytest.raises(ConfigError, match="env.name: unknown environment 'nope'"):
        eval_config("smollm2-135m", env="nope")


def test_choosing_another_loss_or_correction_drops_the_old_ones_keys():
    # The default recipe spells out ppo_clip's clip range and tis's cap; another choice must not inherit them.
    assert load_config(None, ["algo.loss.name=gspo"]).algo.loss.clip_high == 4e-4
    cispo = load_config(None, ["algo.loss.name=cispo", "algo.loss.max_weight=3"]).algo.loss
    assert cispo.name == "cispo" and cispo.max_weight == 3
    assert load_config(None, ["algo.correction.name=none"]).algo.correction.name == "none"
    assert load_config(None, ["algo.loss.clip_high=0.3"]).algo.loss.clip_low == 0.2  # the same loss: keys stay
    assert load_config(None, ["algo={loss: gspo}"]).algo.loss.name == "gspo"  # a whole section as written
    with pytest.raises(ConfigError, match=r"algo.loss: a loss by name, or \{name: ..., its keys\}"):
        load_config(None, ["algo.loss={clip_low: 0.1}"])
    with pytest.raises(ConfigError, match="k1 as a loss term has no expected gradient"):
        load_config(None, ["algo.kl={coef: 0.1, estimator: k1}"])
    with pytest.raises(ConfigError, match="min_weight"):
        load_config(None, ["algo.loss={name: cispo, min_weight: 6}"])


def test_a_json_escaped_character_beyond_16_bits_reads_as_itself():
    """JSON escapes 😀 as a surrogate pair, which YAML alone would read as two lone surrogates."""
    config = load_config(None, ["env.system_prompt=" + json.dumps("Be brief 😀")])
    assert config.env.system_prompt == "Be brief 😀"
    with pytest.raises(ConfigError, match=r"env.system_prompt: not Unicode text \(a lone surrogate\)"):
        load_config(None, ["env.system_prompt=" + json.dumps("\ud800")])
