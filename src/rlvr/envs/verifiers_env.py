"""Environments written for the `verifiers` package (`env.name: verifiers`), adapted to rlvr's Environment.

`verifiers.load_environment(id, **args)` imports the environment's module and calls its `load_environment()`. Its
`dataset` becomes the training stream and its `eval_dataset` the held-out split (without one, the held-out split is
carved off the dataset, so rlvr never evaluates on training questions). Each row's prompt (system prompt and
few-shot included) is kept as the messages the model sees, and the whole row travels in the problem, so the rubric
sees what it would in a verifiers rollout: prompt, completion, answer, info, task and the row's other columns.

Scoring runs the environment's own Rubric (`score_rollout`: every reward function, sync or async, with its weight)
in rlvr's scoring workers, under `scoring.timeout_seconds`. Reward functions are often closures inside
`load_environment()` and do not pickle, so a worker loads the environment itself, once, from the same id and args.
The function named by `env.correct` (default: the rubric's first with a positive weight) is reported as `correct`,
which is what accuracy counts; the others keep their names.

This targets the classic verifiers API (`vf.SingleTurnEnv`, `vf.Rubric`). Multi-turn and tool environments
(`MultiTurnEnv`, `ToolEnv`, ...) run their own turn loop against an API client, which rlvr's token-in/token-out
rollouts cannot stand in for, and are refused with their type named.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import inspect
import json
import math
import sys
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlvr.data import Mixture, Source, split_held_out
from rlvr.env_config import VerifiersEnvConfig
from rlvr.envs.base import Environment, load_demos
from rlvr.errors import ConfigError
from rlvr.rewards.rubric import Rubric, Score
from rlvr.types import Problem

# verifiers 0.3.1 pins mcp<2, which vLLM and tools.mcp cannot share: beside them, install it as `make setup` does.
INSTALL_HINT = (
    "pip install 'rlvr[verifiers]', or beside vLLM or tools.mcp: pip install --no-deps verifiers==0.3.1 "
    "and its other requirements"
)
# Problem.meta keys: the verifiers row (what its rubric reads) and the prompt as plain chat messages.
ROW = "verifiers_row"
PROMPT = "verifiers_prompt"


@dataclass(frozen=True)
class VerifiersSpec:
    """What loads one verifiers environment, in any process: plain data, so it pickles to the scoring workers."""

    id: str
    args_json: str = "{}"  # the load_environment() arguments as sorted JSON: hashable, so loaded environments cache by spec
    path: str | None = None  # a folder to import the module from, when it is not installed

    @classmethod
    def of(cls, config: VerifiersEnvConfig) -> VerifiersSpec:
        try:
            args_json = json.dumps(config.args, sort_keys=True)
        except TypeError as error:
            raise ConfigError(f"env.args: expected plain YAML values ({error})") from None
        return cls(config.id, args_json, str(Path(config.path).resolve()) if config.path else None)

    @property
    def module(self) -> str:
        # verifiers' own rule: `owner/vf-name` is the module `vf_name`.
        return self.id.replace("-", "_").split("/")[-1]


# One loaded environment per spec and process (the trainer's, and each scoring worker's).
_LOADED: dict[VerifiersSpec, Any] = {}


def _run_coroutine(coroutine: Any) -> Any:
    """Run an async rubric to completion, also from code that already runs an event loop (a notebook calling
    `rlvr.evaluate` with `scoring.workers: 0`), where `asyncio.run` refuses: then on a fresh loop in a thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def import_verifiers() -> Any:
    try:
        import verifiers
    except ImportError:
        raise ConfigError(f"env.name: verifiers: the verifiers package is not installed ({INSTALL_HINT})") from None
    return verifiers


def load_verifiers_env(spec: VerifiersSpec) -> Any:
    """The environment `spec` names, loaded once per process and checked to be one rlvr can adapt."""
    if spec in _LOADED:
        return _LOADED[spec]
    vf = import_verifiers()
    if spec.path and spec.path not in sys.path:
        sys.path.insert(0, spec.path)
    if importlib.util.find_spec(spec.module) is None:
        where = f"in {spec.path}" if spec.path else "installed (or set env.path to its folder)"
        raise ConfigError(f"env.id: {spec.id!r}: no environment module {spec.module!r} is {where}")
    args = json.loads(spec.args_json)
    _check_args(importlib.import_module(spec.module), spec, args)
    try:
        env = vf.load_environment(spec.id, **args)
    except Exception as error:
        cause = error.__cause__ or error
        reason = " ".join(f"{type(cause).__name__}: {cause}".split())
        raise ConfigError(f"env.id: {spec.id!r}: load_environment() failed: {reason}") from error
    _check_adaptable(vf, env, spec)
    _LOADED[spec] = env
    return env


def _check_args(module: Any, spec: VerifiersSpec, args: dict[str, Any]) -> None:
    load = getattr(module, "load_environment", None)
    if not callable(load):
        raise ConfigError(f"env.id: {spec.id!r}: module {spec.module!r} has no load_environment()")
    parameters = inspect.signature(load).parameters
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return
    unknown = sorted(set(args) - set(parameters))
    if unknown:
        raise ConfigError(
            f"env.args: {unknown[0]!r}: {spec.module}.load_environment() takes no such argument "
            f"(it takes: {', '.join(parameters) or 'none'})"
        )


def _check_adaptable(vf: Any, env: Any, spec: VerifiersSpec) -> None:
    kind = type(env).__name__
    if not isinstance(env, vf.Environment):
        raise ConfigError(f"env.id: {spec.id!r}: load_environment() returned a {kind}, not a verifiers Environment")
    if not isinstance(env, vf.SingleTurnEnv):
        raise ConfigError(
            f"env.id: {spec.id!r} is a verifiers {kind}, a multi-turn environment that runs its own turn loop "
            "against an API client; rlvr adapts single-turn environments (SingleTurnEnv)"
        )
    if env.rubric.has_group_rewards:
        raise ConfigError(
            f"env.id: {spec.id!r}: its rubric has group reward functions (they score a whole group at once); "
            "rlvr scores each completion alone"
        )


def reward_functions(env: Any) -> list[tuple[str, float]]:
    """(name, weight) of each reward function of the environment's rubric. `_get_reward_func_names` and
    `_get_reward_weights` are the one interface that both `Rubric` and `RubricGroup` (its rubrics' functions
    together) answer, and the names are the keys of the rollout's `metrics`."""
    rubric = env.rubric
    return list(zip(rubric._get_reward_func_names(), rubric._get_reward_weights()))


def _text(content: Any) -> str:
    """A message's content as text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text") or "" for part in content if isinstance(part, Mapping) and part.get("type") == "text")
    return "" if content is None else str(content)


def chat_messages(prompt: Any) -> list[dict[str, str]]:
    """A verifiers prompt (a string, or messages as dicts or message objects) as plain chat messages."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [{"role": _get(m, "role"), "content": _text(_get(m, "content"))} for m in prompt]


def _get(message: Any, key: str) -> Any:
    return message.get(key) if isinstance(message, Mapping) else getattr(message, key, None)


def row_problem(row: Mapping[str, Any], default_subset: str) -> Problem:
    """One dataset row as a problem; the question is the last user message (what summaries show and dedupe by)."""
    prompt = chat_messages(row["prompt"])
    users = [m["content"] for m in prompt if m["role"] == "user"]
    task = row.get("task")
    return Problem(
        question=users[-1] if users else "",
        answer="" if row.get("answer") is None else str(row["answer"]),
        verifier="verifiers",
        subset=task if isinstance(task, str) and task else default_subset,
        meta={ROW: dict(row), PROMPT: prompt},
    )


@dataclass
class VerifiersRubric(Rubric):
    """The verifiers environment's rubric, plus rlvr's own terms (`weights`: env.format_reward, env.rewards)."""

    spec: VerifiersSpec = field(default_factory=lambda: VerifiersSpec(""))
    correct: str = ""  # the verifiers reward function reported as `correct`
    functions: tuple[str, ...] = ()  # every verifiers reward function, for the zero score of a failed completion

    def __post_init__(self) -> None:
        super().__post_init__()
        clash = sorted(set(self.weights) & (set(self.functions) | {"correct"}))
        if clash:
            raise ConfigError(f"env.rewards: {clash[0]!r} is also a reward function of {self.spec.id!r}; rename one")

    def _component(self, name: str) -> str:
        return "correct" if name == self.correct else name

    def score(self, text: str, problem: Problem) -> Score:
        vf = import_verifiers()
        env = load_verifiers_env(self.spec)
        # The state a single-turn verifiers rollout of this row ends with: its task, the prompt as message objects,
        # the completion as one assistant message, one turn in the trajectory (`num_turns`), truncated or not.
        state = vf.State.for_task(problem.meta[ROW])
        state["prompt"] = [_message(vf, m) for m in problem.meta[PROMPT]]
        state["completion"] = [vf.AssistantMessage(content=text)]
        state["is_truncated"] = problem.meta.get("completion_tokens", 0) >= problem.meta.get("max_tokens", math.inf)
        turn = {"prompt": state["prompt"], "completion": state["completion"], "is_truncated": state["is_truncated"]}
        step = {"response": None, "tokens": None, "reward": None, "advantage": None, "extras": {}}
        state["trajectory"] = [{**turn, **step, "trajectory_id": state["trajectory_id"]}]
        _run_coroutine(env.rubric.score_rollout(state))
        own = super().score(text, problem)  # rlvr's terms, if any
        components = {self._component(name): float(value) for name, value in state["metrics"].items()}
        return Score(float(state["reward"]) + own.total, {**components, **own.components}, own.info)

    def failed(self, reason: str) -> Score:
        names = [self._component(name) for name in self.functions] + list(self.weights)
        return Score(0.0, dict.fromkeys(names, 0.0), error=reason)


_MESSAGE_TYPES = {"system": "SystemMessage", "user": "UserMessage", "assistant": "AssistantMessage"}


def _message(vf: Any, message: dict[str, str]) -> Any:
    return getattr(vf, _MESSAGE_TYPES.get(message["role"], "UserMessage"))(content=message["content"])


class VerifiersEnvironment(Environment):
    def __init__(self, config: VerifiersEnvConfig) -> None:
        self.spec = VerifiersSpec.of(config)
        self.env = load_verifiers_env(self.spec)
        functions = reward_functions(self.env)
        names = [name for name, _ in functions]
        correct = config.correct or next((name for name, weight in functions if weight > 0), None)
        if correct not in names:
            what = f"{correct!r} is not a reward function of" if correct else "no reward function has a positive weight in"
            raise ConfigError(f"env.correct: {what} {config.id!r} (it has: {', '.join(names) or 'none'})")
        rlvr_terms = {"format": config.format_reward} if config.format_reward else {}
        self.rubric = VerifiersRubric({**rlvr_terms, **config.rewards}, self.spec, correct, tuple(names))
        self.system_prompt = config.system_prompt or self.env.system_prompt or ""
        self.override_system_prompt = config.system_prompt
        self.demos = load_demos(config.demos)
        self.subset = self.spec.module  # unless a row names its own `task`
        train, self._held_out = self._split(config)
        source = Source(path=f"verifiers:{config.id}", subset=self.subset)
        self._mixture = Mixture([(source, train)], seed=config.train_seed) if train else None

    def _split(self, config: VerifiersEnvConfig) -> tuple[list[Problem], list[Problem]]:
        """(training problems, held-out problems): the eval_dataset's first `eval_size` rows, and the dataset
        without their questions; without an eval_dataset, `eval_size` questions held out of the dataset."""
        dataset = self.env.build_dataset()
        train = [row_problem(row, self.subset) for row in dataset] if dataset is not None else []
        if self.env.build_eval_dataset() is None:
            if not train:
                raise ConfigError(f"env.id: {config.id!r} has neither a dataset nor an eval_dataset")
            try:
                return split_held_out(train, config.eval_size, config.eval_seed)
            except ConfigError as error:
                raise ConfigError(f"env.eval_size: {config.id!r} has no eval_dataset, and {error}") from None
        held_out = [row_problem(row, self.subset) for row in self.env.get_eval_dataset(n=config.eval_size)]
        questions = {problem.question for problem in held_out}
        return [problem for problem in train if problem.question not in questions], held_out

    def train_problems(self, start: int, count: int) -> list[Problem]:
        if self._mixture is None:
            raise ConfigError(f"env.id: {self.spec.id!r} has no training dataset (only an eval_dataset)")
        return self._mixture.rows(start, count)

    def eval_problems(self) -> list[Problem]:
        return list(self._held_out)

    def subsets(self) -> set[str]:
        return {self.subset} | super().subsets()

    def messages(self, problem: Problem) -> list[dict[str, Any]]:
        """The row's own prompt (its system prompt and few-shot included), with `env.system_prompt` (or the
        problem's, e.g. thinking mode's) in place of its system message and `env.demos` after it. A problem made
        from a bare question (`rlvr chat`) gets the environment's system prompt and few-shot."""
        prompt = problem.meta.get(PROMPT)
        if prompt is None:
            few_shot = chat_messages(self.env.few_shot or [])
            system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
            prompt = [*system, *few_shot, {"role": "user", "content": problem.question}]
        system_prompt = problem.system_prompt or self.override_system_prompt
        system = [m for m in prompt if m["role"] == "system"]
        if system_prompt:
            system = [{"role": "system", "content": system_prompt}]
        return [*system, *self.demos, *(m for m in prompt if m["role"] != "system")]
