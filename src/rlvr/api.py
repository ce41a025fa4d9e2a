"""The Python API: what `rlvr train` and `rlvr eval` run, callable from a script or a notebook.

    import rlvr

    config = rlvr.load_config("default", ["train.steps=10", "name=short"])
    summary = rlvr.train(config, overwrite=True)         # runs/short/, as `rlvr train` writes it
    result = rlvr.evaluate("runs/short", data="test.jsonl", n=4, k=(1, 4))

Heavy modules (torch, transformers, vLLM) are imported on use, so `import rlvr` and `rlvr --help` stay fast.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlvr.config import RunConfig, load_config
from rlvr.errors import EngineError
from rlvr.jobs import (
    distill_overrides,
    eval_settings,
    load_engine,
    rejection_job_of,
    run_rejection,
    sft_overrides,
    with_sft_steps,
)

if TYPE_CHECKING:
    from rich.console import Console

    from rlvr.eval import EvalSettings
    from rlvr.eval.suite import SuiteRow
    from rlvr.rejection import RejectionJob, RejectionSummary

Progress = Callable[[int, int, int], None]  # (samples done now, samples in all, new tokens)


def train(
    config: RunConfig | str | None = None,
    *,
    overrides: Sequence[str] = (),
    plugins: Sequence[str] = (),
    resume: bool = False,
    overwrite: bool = False,
    console: Console | None = None,
) -> dict:
    """A whole run (evaluate, train, evaluate) of a config, or of a recipe (a file or a packaged name) with
    `--set`-style overrides; returns what `runs/<name>/summary.json` holds."""
    from rlvr.run import train as run_train

    if not isinstance(config, RunConfig):
        config = load_config(config, list(overrides), plugins)
    elif overrides or plugins:
        raise ValueError("overrides and plugins apply to a recipe; a RunConfig is used as it is")
    if config.stages:  # a pipeline: its stages in order, in one run folder (rlvr.pipeline)
        from rlvr.pipeline import run_pipeline

        return run_pipeline(config, resume=resume, overwrite=overwrite, console=console)
    return run_train(config, resume=resume, overwrite=overwrite, console=console)


def _override_keys(overrides: Sequence[str]) -> set[str]:
    return {assignment.partition("=")[0].strip() for assignment in overrides}


def _derived_name(recipe: str | None, overrides: Sequence[str], plugins: Sequence[str], suffix: str) -> list[str]:
    """`name=<the recipe's run name>-<suffix>` as an override, unless the overrides name the run themselves."""
    if "name" in _override_keys(overrides):
        return []
    return [f"name={load_config(recipe, list(overrides), plugins).name}-{suffix}"]


def sft_config(
    data: str | Path,
    recipe: str | None = None,
    *,
    model: str | None = None,
    overrides: Sequence[str] = (),
    plugins: Sequence[str] = (),
) -> RunConfig:
    """The config of `rlvr sft DATA [RECIPE]`: the recipe's model, prompt, devices and evaluation, `sft.data`, one
    trace per group and the loss per token; the run is `<recipe name>-sft` unless `name` is set, and `train.steps`
    follows from `sft.epochs` unless it is set."""
    named = _derived_name(recipe, overrides, plugins, "sft")
    config = load_config(recipe, [*named, *overrides, *sft_overrides(data), *([f"model.path={model}"] if model else [])], plugins)
    return config if "train.steps" in _override_keys(overrides) else with_sft_steps(config)


def distill_config(
    recipe: str | None,
    teacher: str,
    *,
    with_reward: bool = False,
    overrides: Sequence[str] = (),
    plugins: Sequence[str] = (),
) -> RunConfig:
    """`rlvr distill --teacher T RECIPE`: on-policy distillation. The student (the recipe's model) samples as in RL;
    the teacher scores each of its tokens, and the loss is the per-token reverse KL (student || teacher), the k2
    estimator, whose gradient on the student's own samples is that of the reverse KL. Without `with_reward` it is the
    only signal (the recipe's reward is measured, not paid); with it the KL is added to the RL loss. The run is
    `<recipe name>-distill` unless `name` is set; `--set algo.kl.coef=...` weighs the KL."""
    named = _derived_name(recipe, overrides, plugins, "distill")
    weighted = "algo.kl.coef" in _override_keys(overrides)
    return load_config(recipe, [*named, *overrides, *distill_overrides(teacher, with_reward, weighted)], plugins)


def sft(config: RunConfig, *, resume: bool = False, overwrite: bool = False, console: Console | None = None) -> dict:
    """Supervised fine-tuning of `sft_config`'s config: `runs/<name>/` as `rlvr train` writes it."""
    from rlvr.run import train as run_train
    from rlvr.sft.trainer import SFTTrainer

    return run_train(config, resume=resume, overwrite=overwrite, console=console, trainer_type=SFTTrainer)


def eval_config(
    model: str,
    *,
    data: str | Path | None = None,
    env: str | None = None,
    recipe: str | None = None,
    overrides: Sequence[str] = (),
    plugins: Sequence[str] = (),
) -> RunConfig:
    """The recipe's config with the model, and the environment replaced by `data` (every row held out) or `env`
    (as `--set env.name=...` would: the settings every environment shares stay, and the overrides after it)."""
    switch = []
    if data is not None:  # a JSON string is a YAML string: any path, quoted
        switch = ["env.name=mixture", f"env.sources=[{{path: {json.dumps(str(data))}, use: eval}}]"]
    elif env is not None:
        switch = [f"env.name={env}"]
    return load_config(recipe, [*switch, *overrides, f"model.path={model}"], plugins)


def run_evaluation(
    config: RunConfig, settings: EvalSettings, data_label: str, out: Path | None = None, progress: Progress | None = None
) -> dict:
    """The summary of evaluating `config`'s model on its environment's held-out split; with `out`, also the report
    files. An engine failure raises EngineError, the samples generated before it kept in `out`."""
    from rlvr.envs import make_env
    from rlvr.eval.runner import run_eval
    from rlvr.rollout.judge import make_judge
    from rlvr.rollout.sampler import make_sampler
    from rlvr.scoring import Scorer

    tokenizer, engine, provenance = load_engine(config)
    environment = make_env(config.env)
    sampler, chat, _ = make_sampler(engine, tokenizer, config, environment)
    provenance["data"] = data_label
    scoring, judge = config.scoring, make_judge(config, engine, tokenizer)
    with Scorer(environment.rubric, scoring.workers, scoring.timeout_seconds, scoring.on_hack, judge) as scorer:
        try:
            summary, samples = run_eval(sampler, environment, tokenizer, scorer, settings, provenance, progress, chat)
        except EngineError as error:
            failure = EngineError(f"{error}{_keep_partial(out, error.partial)}")
            failure.partial = error.partial  # a caller without `out` keeps them too
            raise failure from error
    if out is not None:
        from rlvr.eval.report import write_report

        write_report(out, summary, samples)
    return summary


def rejection_job(
    model: str,
    *,
    data: str | Path | None = None,
    env: str | None = None,
    recipe: str | None = None,
    overrides: Sequence[str] = (),
    plugins: Sequence[str] = (),
    split: str | None = None,
    **options: Any,
) -> RejectionJob:
    """What `rlvr rejection-sample` does, every option checked (a bad one is a ConfigError naming it) and the questions
    chosen before any model loads: the environment's training split (`split="eval"`: its held-out one; with `data`,
    every row of the file; `limit`: the first L questions), sampled with the recipe's prompt, tools and verifiers.
    `options` are RejectionOptions' fields: n, keep, max_per_question, limit, temperature, max_new_tokens, seed."""
    from pydantic import ValidationError

    from rlvr.errors import ConfigError
    from rlvr.rejection import sampled_split
    from rlvr.stage_config import RejectionOptions

    try:
        chosen_options = RejectionOptions(**options)
    except ValidationError as error:
        problems = (f"--{'.'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}" for e in error.errors())
        raise ConfigError("; ".join(problems)) from None
    chosen = sampled_split(split, data is not None)
    config = eval_config(model, data=data, env=env, recipe=recipe, overrides=overrides, plugins=plugins)
    label = str(data) if data is not None else config.env.label
    return rejection_job_of(config, label, chosen, chosen_options)


def rejection_sample(model: str, out: str | Path, *, progress: Progress | None = None, **options: Any) -> RejectionSummary:
    """`rlvr rejection-sample` in Python: `options` are those of `rejection_job` (data, env, recipe, overrides,
    plugins, split, and RejectionOptions' n, keep, max_per_question, limit, temperature, max_new_tokens, seed)."""
    return run_rejection(rejection_job(model, **options), out, progress)


def run_suite(
    model: str,
    *,
    suite: str | None = None,
    base: str | None = None,
    recipe: str | None = None,
    overrides: Sequence[str] = (),
    plugins: Sequence[str] = (),
    out: str | Path | None = None,
    progress: Callable[[str], Progress] | None = None,
) -> list[SuiteRow]:
    """`rlvr eval MODEL --suite`: every evaluation of the suite (default: the packaged `regression`) on `model`, and
    on `base` (default: the model a run started from), compared on the same questions; a drop whose paired 95%
    interval lies below zero is flagged. With `out`: `out/model/<eval>/` and `out/base/<eval>/` hold each report,
    `out/suite.json` and `out/suite.md` the table. A base model's results already in `out/base/` are reused when
    they measured the same weights."""
    from rlvr.eval.suite import compare_results, evaluate_suite, load_suite, read_results, starting_model, suite_configs
    from rlvr.eval.suite import write_suite as write_table

    chosen = load_suite(suite)
    base = base or starting_model(model)
    folder = Path(out) if out is not None else None
    results = {}
    for role, name in (("model", model), ("base", base)):
        if name is None:
            continue
        configs = suite_configs(chosen, name, recipe, overrides, plugins)
        first = next(iter(configs.values()))
        where = folder / role if folder is not None else None
        cached = read_results(where, list(configs)) if where is not None and role == "base" else None
        if cached is not None and _same_measurement(where, chosen, configs, first.model.path):
            results[role] = cached
            continue
        tokenizer, engine, provenance = load_engine(first)
        labelled = (lambda name, role=role: progress(f"{role}: {name}")) if progress is not None else None
        results[role] = evaluate_suite(engine, tokenizer, chosen, configs, where, labelled, provenance)
        del engine  # the next model's engine must not share the memory with this one
        gc.collect()
    rows = compare_results(results["model"], results.get("base"))
    if folder is not None:
        write_table(folder, rows, model, base)
    return rows


def _same_measurement(folder: Path, suite: Any, configs: dict[str, RunConfig], model: str) -> bool:
    """Whether results in `folder` measured these weights on these questions with this decoding: only then are they
    this model's results (a changed limit, task or generation length is a new measurement)."""
    from rlvr.envs import make_env
    from rlvr.eval.provenance import data_hash, model_hash
    from rlvr.eval.suite import suite_settings
    from rlvr.models import resolve_model_path

    wanted = model_hash(resolve_model_path(model))
    for name, config in configs.items():
        summary = json.loads((folder / name / "summary.json").read_text())
        settings = suite_settings(config, suite.evals[name], config.seed)
        problems = make_env(config.env).eval_problems()[: settings.limit]
        measured = (summary.get("model_hash"), summary.get("data_hash"), summary.get("decoding"))
        if measured != (wanted, data_hash(problems), json.loads(json.dumps(settings.decoding()))):
            return False
    return True


def _keep_partial(out: Path | None, samples: list[dict]) -> str:
    """Write the samples generated before a failure (unverified) next to where the results would have gone."""
    if out is None or not samples:
        return ""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "samples.partial.jsonl"
    path.write_text("".join(json.dumps(s) + "\n" for s in samples))
    return f"; the {len(samples)} samples generated before it are in {path}"


def evaluate(
    model: str,
    *,
    data: str | Path | None = None,
    env: str | None = None,
    recipe: str | None = None,
    overrides: Sequence[str] = (),
    plugins: Sequence[str] = (),
    out: str | Path | None = None,
    **settings,
) -> dict:
    """`rlvr eval` in Python: avg@n, pass@k, maj@k, best-of-k with 95% intervals of `model` (a run, a checkpoint, a
    model folder or `smollm2-135m`) on `data`, `env` or the recipe's held-out split. `settings` are those of
    `eval_settings` (n, k, limit, temperature, max_new_tokens, seed, budgets, effort, reasoning, min_thinking)."""
    config = eval_config(model, data=data, env=env, recipe=recipe, overrides=overrides, plugins=plugins)
    label = str(data) if data is not None else config.env.label
    return run_evaluation(config, eval_settings(config, **settings), label, Path(out) if out is not None else None)
