"""`env.name: verifiers`: an environment written for the verifiers package (examples/verifiers/vf_arith) as an rlvr
environment. The oracle for every reward is verifiers itself: a full verifiers rollout of the same row with a client
that replays the same completion, scored by the environment's own rubric."""

from __future__ import annotations

import asyncio
import json
import math
import sys
from pathlib import Path

import pytest
import yaml

from rlvr.config import load_config
from rlvr.envs import make_env, verifiers_env
from rlvr.errors import ConfigError
from rlvr.run import train
from rlvr.scoring import Scorer

vf = pytest.importorskip("verifiers", reason="verifiers is not installed (pip install 'rlvr[verifiers]')")
if not hasattr(vf, "SingleTurnEnv"):
    pytest.skip(
        f"verifiers {vf.__version__} has no classic API (SingleTurnEnv); rlvr[verifiers] pins one that does",
        allow_module_level=True,
    )

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "verifiers" / "vf_arith"
ARGS = {"num_train": 40, "num_eval": 6}


def recipe(tmp_path: Path, **env) -> str:
    path = tmp_path / "recipe.yaml"
    settings = {"name": "verifiers", "id": "vf-arith", "path": str(EXAMPLE), "args": ARGS, "eval_size": 6, **env}
    path.write_text(yaml.safe_dump({"env": settings}))
    return str(path)


def environment(tmp_path: Path, **env):
    return make_env(load_config(recipe(tmp_path, **env)).env)


class Replay(vf.Client):
    """A verifiers client whose model answers every prompt with `text`."""

    def __init__(self, text: str) -> None:
        super().__init__(None)
        self.text = text

    def setup_client(self, config):
        return None

    async def to_native_tool(self, tool):
        return tool

    async def to_native_prompt(self, messages):
        return messages, {}

    async def get_native_response(self, prompt, model, sampling_args, tools=None, **kwargs):
        return self.text

    async def raise_from_native_response(self, response) -> None:
        return None

    async def from_native_response(self, response):
        message = vf.ResponseMessage(content=response, finish_reason="stop", is_truncated=False)
        return vf.Response(id="replay", created=0, model="replay", message=message)

    async def close(self) -> None:
        return None


def verifiers_score(env, row, text: str) -> tuple[float, dict[str, float]]:
    output = asyncio.run(env.run_rollout(row, Replay(text), "replay", {}))
    return output["reward"], output["metrics"]


def test_prompts_answers_and_the_held_out_split(tmp_path):
    env = environment(tmp_path)
    native = env.env
    eval_rows, train_rows = list(native.get_eval_dataset()), list(native.get_dataset())
    held_out = env.eval_problems()
    assert [(p.question, p.answer) for p in held_out] == [(r["question"], r["answer"]) for r in eval_rows]
    assert {p.subset for p in held_out} == env.subsets() == {"vf_arith"}
    # The prompt is the row's own: system prompt, few-shot, question.
    assert env.messages(held_out[0]) == eval_rows[0]["prompt"]
    assert env.messages(held_out[0])[1:3] == native.few_shot
    training = env.train_problems(0, 2 * len(train_rows))
    assert sorted(p.question for p in training) == sorted(2 * [r["question"] for r in train_rows])  # two epochs
    assert not {p.question for p in training} & {p.question for p in held_out}
    assert env.train_problems(7, 3) == training[7:10]  # a pure function of the index: resumable


def test_env_system_prompt_and_demos_replace_and_follow_the_system_message(tmp_path):
    demos = tmp_path / "demos.json"
    demos.write_text(json.dumps([{"role": "user", "content": "1 + 1?"}, {"role": "assistant", "content": "Answer: 2"}]))
    env = environment(tmp_path, system_prompt="Be brief.", demos=str(demos))
    messages = env.messages(env.eval_problems()[0])
    assert messages[0] == {"role": "system", "content": "Be brief."}
    assert messages[1:3] == json.loads(demos.read_text()) and messages[-1]["content"].startswith("What is")


def test_rewards_equal_the_verifiers_rubrics_own_scores(tmp_path):
    """Every component and the total are what verifiers' own rollout scores (in scoring workers too: the short run
    below checks its samples the same way)."""
    env = environment(tmp_path)
    rows = list(env.env.get_eval_dataset())
    problems = env.eval_problems()
    texts = [f"{r['question']} is\nAnswer: {r['answer']}" for r in rows[:3]]
    texts += ["Answer: 0", "no answer line", f"Answer: {rows[0]['answer']}\nAnswer: 1"]
    pairs = [(problems[i % len(rows)], rows[i % len(rows)]) for i in range(len(texts))]
    with Scorer(env.rubric, workers=0) as scorer:
        scores = scorer.score(texts, [problem for problem, _ in pairs])
    for text, (_, row), score in zip(texts, pairs, scores):
        reward, metrics = verifiers_score(env.env, row, text)
        assert score.error is None
        assert score.total == pytest.approx(reward)
        assert score.components == pytest.approx({"correct" if k == "correct_answer" else k: v for k, v in metrics.items()})
    assert [s.components["correct"] for s in scores] == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]


def test_rlvr_terms_add_to_the_rubric_and_correct_can_be_named(tmp_path):
    env = environment(tmp_path, format_reward=0.5, correct="answer_format")
    problem, row = env.eval_problems()[0], env.env.get_eval_dataset()[0]
    score = env.rubric.score("Answer: 0", problem)
    reward, metrics = verifiers_score(env.env, row, "Answer: 0")
    assert score.components["correct"] == metrics["answer_format"] == 1.0
    assert score.components["correct_answer"] == 0.0 and score.components["format"] == 1.0
    assert score.total == pytest.approx(reward + 0.5)
    failed = env.rubric.failed("timed out")
    assert set(failed.components) == set(score.components) and failed.total == 0.0


def test_without_an_eval_dataset_the_held_out_split_comes_from_the_dataset(tmp_path, monkeypatch):
    module = tmp_path / "vf_train_only.py"
    module.write_text(
        "import verifiers as vf\nfrom datasets import Dataset\n\n"
        "def load_environment(n=12):\n"
        "    rows = [{'question': f'{i} + 1?', 'answer': str(i + 1)} for i in range(n)]\n"
        "    return vf.SingleTurnEnv(dataset=Dataset.from_list(rows), rubric=vf.Rubric(funcs=[lambda completion: 1.0]))\n"
    )
    env = environment(tmp_path, id="vf-train-only", path=str(tmp_path), args={}, eval_size=4)
    held_out = {p.question for p in env.eval_problems()}
    assert len(held_out) == 4 and not held_out & {p.question for p in env.train_problems(0, 50)}
    with pytest.raises(ConfigError, match=r"^env\.eval_size: 'vf-train-only' has no eval_dataset, and held-out size 20"):
        environment(tmp_path, id="vf-train-only", path=str(tmp_path), args={}, eval_size=20)


MULTI_TURN = """
import verifiers as vf
from datasets import Dataset


def add(a: int, b: int) -> int:
    \"\"\"Add two numbers.\"\"\"
    return a + b


def load_environment():
    rows = [{"question": "1 + 2?", "answer": "3"}]
    return vf.ToolEnv(dataset=Dataset.from_list(rows), tools=[add], rubric=vf.Rubric(funcs=[lambda completion: 1.0]))
"""


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"id": "vf-no-such-env"}, r"^env\.id: 'vf-no-such-env': no environment module 'vf_no_such_env' is in "),
        ({"args": {"num_trains": 3}}, r"^env\.args: 'num_trains': vf_arith\.load_environment\(\) takes no such argument"),
        ({"args": {"digits": "x"}}, r"^env\.id: 'vf-arith': load_environment\(\) failed: TypeError: "),
        ({"correct": "nope"}, r"^env\.correct: 'nope' is not a reward function of 'vf-arith' \(it has: correct_answer, "),
        ({"rewards": {"format": 1.0}, "correct": "answer_format"}, None),
        ({"id": "vf-multi-turn"}, r"^env\.id: 'vf-multi-turn' is a verifiers ToolEnv, a multi-turn environment"),
    ],
)
def test_errors_are_one_line_naming_the_key(tmp_path, env, message):
    (tmp_path / "vf_multi_turn.py").write_text(MULTI_TURN)
    if env.get("id") == "vf-multi-turn":
        env = {**env, "path": str(tmp_path), "args": {}}
    if message is None:  # a valid combination: rlvr's format term next to the rubric's
        assert "format" in environment(tmp_path, **env).rubric.weights
        return
    with pytest.raises(ConfigError, match=message) as error:
        environment(tmp_path, **env)
    assert "\n" not in str(error.value)


def test_without_the_package_the_error_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "verifiers", None)  # `import verifiers` now raises ImportError
    monkeypatch.setattr(verifiers_env, "_LOADED", {})
    with pytest.raises(ConfigError, match=r"^env\.name: verifiers: the verifiers package is not installed \(pip install "):
        environment(tmp_path)


def test_the_config_needs_an_id(tmp_path):
    with pytest.raises(ConfigError, match=r"recipe\.yaml: env\.id: String should have at least 1 character"):
        load_config(recipe(tmp_path, id=""))


def test_a_verifiers_environment_used_in_a_short_run(tiny_model_dir, tmp_path):
    """`rlvr train` on it: scoring in worker processes (which load the environment themselves: its reward functions
    are closures that do not pickle), every step logs the rubric's components, and the held-out evaluation before
    and after covers its eval_dataset, each sample's reward the one verifiers gives its completion."""
    settings = {
        "output_dir": str(tmp_path / "runs"),
        "name": "vf",
        "seed": 0,
        "model.path": str(tiny_model_dir),
        "train.steps": 2,
        "train.prompts_per_step": 2,
        "train.group_size": 4,
        "train.micro_batch_size": 8,
        "sampling.max_new_tokens": 8,
        "rollout.engine": "transformers",
        "scoring.workers": 1,  # one process is enough to load the environment and score in; a second costs start-up
    }
    config = load_config(recipe(tmp_path), [f"{key}={value}" for key, value in settings.items()])
    assert config.scoring.workers > 0
    summary = train(config)
    rows = [json.loads(line) for line in (tmp_path / "runs" / "vf" / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2]
    for row in rows:
        for key in ("reward", "reward/correct", "reward/answer_format", "reward/carries", "accuracy"):
            assert math.isfinite(row[key]), key
        assert row["score_errors"] == 0
    assert summary["env"] == "verifiers:vf-arith"
    assert summary["eval_before"]["n"] == summary["eval_after"]["n"] == 6
    native = verifiers_env.load_verifiers_env(verifiers_env.VerifiersSpec.of(config.env))
    rows = {row["question"]: row for row in native.get_eval_dataset()}
    samples = [json.loads(line) for line in (tmp_path / "runs" / "vf" / "eval_after.samples.jsonl").read_text().splitlines()]
    assert {sample["question"] for sample in samples} == set(rows)
    for sample in samples:
        assert sample["reward"] == pytest.approx(verifiers_score(native, rows[sample["question"]], sample["completion"])[0])
