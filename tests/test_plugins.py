"""Plugins: user files and modules imported before the config is validated, so that what they register with
rlvr's decorators is a valid choice in it, in this process and in the scoring workers."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rlvr import plugins
from rlvr.algos.advantages import ADVANTAGES
from rlvr.algos.losses import POLICY_LOSSES
from rlvr.cli import app
from rlvr.config import ConfigError, load_config
from rlvr.envs import ENVIRONMENTS, make_env
from rlvr.plugins import loaded_plugins
from rlvr.rewards import REWARDS, VERIFIERS, VOTE_KEYS, Rubric
from rlvr.scoring import Scorer
from rlvr.tools import TOOLS
from rlvr.types import Problem

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "plugin" / "larger.yaml"

# One plugin that registers a reward, a verifier, an advantage estimator, a loss and a tool. The registries are
# global to the process, so each test file's plugin names are its own.
PLUGIN = '''
import torch

from rlvr.algos.advantages import ADVANTAGES
from rlvr.algos.losses import POLICY_LOSSES, ppo_clip
from rlvr.rewards import register_reward, register_verifier
from rlvr.tools import tool


@register_reward("shouting")
def shouting(text, problem):
    return float(text.isupper())


@register_verifier("yes_no_test", vote=lambda text: text.strip().lower() or None)
def yes_no(text, problem):
    return float(text.strip().lower() == problem.answer)


@ADVANTAGES.register("centred_test")
def centred(rewards: torch.Tensor) -> torch.Tensor:
    return rewards - rewards.mean(dim=-1, keepdim=True)


@POLICY_LOSSES.register("ppo_clip_copy_test")
def ppo_clip_copy(x, s):
    return ppo_clip(x, s)


@tool
def shout_test(text: str) -> str:
    """Upper-case a text.

    Args:
        text: What to shout.
    """
    return text.upper()
'''


@pytest.fixture(autouse=True)
def _registries_as_they_were():
    """What a test's plugins register is gone after it, as if its process had ended: other tests see rlvr's own
    registries (and may count their entries)."""
    tables = (REWARDS, VERIFIERS, VOTE_KEYS, ENVIRONMENTS, ADVANTAGES, POLICY_LOSSES, TOOLS)
    saved, loaded = [dict(t) for t in tables], dict(plugins._LOADED)
    yield
    for table, entries in zip(tables, saved):
        table.clear()
        table.update(entries)
    for name in set(plugins._LOADED.values()) - set(loaded.values()):
        sys.modules.pop(name, None)  # the plugin's module, so that importing it again registers again
    plugins._LOADED.clear()
    plugins._LOADED.update(loaded)


def _recipe(folder: Path, plugin_line: str, body: str) -> Path:
    recipe = folder / "recipe.yaml"
    recipe.write_text(plugin_line + "\n" + textwrap.dedent(body))
    return recipe


def test_a_recipes_plugin_makes_its_names_valid_choices(tmp_path):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "my_plugin_all.py").write_text(PLUGIN)
    body = """
    env: {name: gym, rewards: {shouting: 0.5}}
    algo: {advantage: centred_test, loss: ppo_clip_copy_test}
    tools: {enabled: [shout_test]}
    """
    recipe = _recipe(tmp_path, "plugins: [plugins/my_plugin_all.py]", body)  # relative to the recipe's folder
    config = load_config(str(recipe))
    assert config.env.rewards == {"shouting": 0.5} and config.algo.advantage == "centred_test"
    assert config.algo.loss.name == "ppo_clip_copy_test" and config.tools.enabled == ["shout_test"]
    assert config.plugins == [str(tmp_path / "plugins" / "my_plugin_all.py")]  # absolute, so a resume finds it
    assert load_config(str(recipe)) == config  # imported once per process: loading again registers nothing twice
    assert REWARDS["shouting"]("LOUD", None) == 1.0


def test_without_the_plugin_the_name_is_an_unknown_choice(tmp_path):
    recipe = _recipe(tmp_path, "", "env: {name: gym, rewards: {not_registered_anywhere: 1.0}}")
    with pytest.raises(ConfigError, match="unknown reward function 'not_registered_anywhere' \\(choices: .*correct"):
        load_config(str(recipe))


def test_command_line_plugins_are_relative_to_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "cli_plugin_reward.py").write_text(
        "from rlvr.rewards import register_reward\nregister_reward('cli_reward')(lambda text, problem: 1.0)\n"
    )
    monkeypatch.chdir(tmp_path)
    config = load_config(None, ["env.rewards={cli_reward: 2.0}"], ["cli_plugin_reward.py"])
    assert config.env.rewards == {"cli_reward": 2.0} and config.plugins == [str(tmp_path / "cli_plugin_reward.py")]
    assert load_config(None, ["plugins=[cli_plugin_reward.py]"]).plugins == config.plugins  # --set: the same


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("import not_a_module_anywhere\n", "ModuleNotFoundError: No module named 'not_a_module_anywhere'"),
        ("x = 1\nraise RuntimeError('broken on purpose')\n", r"RuntimeError: broken on purpose \(.*broken_\d\.py:2\)"),
        ("def f(:\n", "SyntaxError"),
    ],
)
def test_an_import_error_names_the_plugin_and_the_line(tmp_path, source, message):
    name = f"broken_{len(source) % 10}.py"
    (tmp_path / name).write_text(source)
    recipe = _recipe(tmp_path, f"plugins: [{name}]", "seed: 0")
    with pytest.raises(ConfigError, match=f"plugins: .*{name}: cannot import: {message}"):
        load_config(str(recipe))


def test_a_missing_plugin_file_or_module_is_named(tmp_path):
    with pytest.raises(ConfigError, match="plugins: .*nowhere.py: no such file"):
        load_config(None, [], ["nowhere.py"])
    with pytest.raises(ConfigError, match="plugins: no_such_pkg.rewards: cannot import: ModuleNotFoundError"):
        load_config(None, [], ["no_such_pkg.rewards"])
    with pytest.raises(ConfigError, match="plugins: expected a list"):
        load_config(None, ["plugins=not_a_list.py"])
    with pytest.raises(ConfigError, match="tools.modules is now `plugins:`"):
        load_config(None, ["tools.modules=[x]"])


def test_the_plugin_option_reaches_the_config_on_the_command_line(tmp_path, monkeypatch):
    (tmp_path / "cli_broken.py").write_text("raise ValueError('from the plugin')\n")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["train", "--plugin", "cli_broken.py", "--set", "name=x"])
    assert result.exit_code == 2
    assert "cli_broken.py: cannot import: ValueError: from the plugin" in " ".join(result.output.split())


def test_scoring_workers_import_the_plugins_too(tmp_path):
    """Workers are spawned fresh: the rubric they unpickle names the plugin's verifier, which they import first."""
    (tmp_path / "worker_verifier.py").write_text(
        "from rlvr.rewards import register_verifier\n"
        "@register_verifier('starts_with_answer')\n"
        "def check(text, problem):\n    return float(text.startswith(problem.answer))\n"
    )
    load_config(None, [], [str(tmp_path / "worker_verifier.py")])
    assert str(tmp_path / "worker_verifier.py") in loaded_plugins()
    problem = Problem(question="q", answer="yes", verifier="starts_with_answer")
    with Scorer(Rubric({"correct": 1.0}), workers=1, timeout_seconds=60) as scorer:
        scores = scorer.score(["yes indeed", "no"], [problem, problem])
    assert [s.error for s in scores] == [None, None] and [s.total for s in scores] == [1.0, 0.0]


def test_the_example_plugin_trains_end_to_end(tiny_model_dir, tmp_path):
    """examples/plugin: a custom environment, verifier and reward, trained and evaluated by the usual run."""
    from rlvr.run import train

    settings = {
        "model.path": str(tiny_model_dir),
        "output_dir": str(tmp_path),
        "train.steps": 2,
        "train.prompts_per_step": 2,
        "train.group_size": 4,
        "sampling.max_new_tokens": 8,
        "env.eval_size": 4,
        "rollout.engine": "transformers",
    }
    config = load_config(str(EXAMPLE), [f"{key}={value}" for key, value in settings.items()])
    environment = make_env(config.env)
    held_out = environment.eval_problems()
    assert len(held_out) == 4 and all(p.verifier == "larger" for p in held_out)
    assert not {p.question for p in held_out} & {p.question for p in environment.train_problems(0, 200)}
    problem = held_out[0]
    small, large = sorted(int(n) for n in problem.question.rstrip("?").split(": ")[1].split(" or "))
    right, hedged = f"Answer: {large}", f"Answer: {small} or {large}"
    assert [environment.rubric.score(t, problem).components for t in (right, hedged)] == [
        {"correct": 1.0, "format": 1.0, "one_number": 1.0},
        {"correct": 0.0, "format": 1.0, "one_number": 0.0},
    ]
    summary = train(config)
    rows = [json.loads(line) for line in (tmp_path / "larger" / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2] and all("reward/one_number" in row for row in rows)
    assert summary["eval_after"]["n"] == 4 and all(row["score_errors"] == 0 for row in rows)
    with pytest.raises(ConfigError, match="env.options.max_value: Input should be greater than or equal to 2"):
        make_env(load_config(str(EXAMPLE), ["env.options={max_value: 1}"]).env)
