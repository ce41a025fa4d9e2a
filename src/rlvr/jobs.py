"""What the commands run, from a config: the overrides that make a recipe's config supervised fine-tuning or on-policy
distillation, what an evaluation samples, and rejection sampling with its engine. `rlvr.api` (the commands' entry
points) and `rlvr.pipeline` (a recipe's stages) both build on these.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlvr.config import RunConfig
from rlvr.errors import ConfigError

if TYPE_CHECKING:
    from rlvr.eval import EvalSettings
    from rlvr.progress import Advance
    from rlvr.rejection import RejectionJob, RejectionSummary
    from rlvr.stage_config import RejectionOptions


def sft_overrides(data: str | Path) -> list[str]:
    """What makes a recipe's config supervised fine-tuning on `data` (`rlvr sft`, and a pipeline's sft stage)."""
    return [
        f"sft.data={json.dumps(str(Path(data).resolve()))}",
        "train.group_size=1",
        "train.epochs=1",
        "algo.aggregation=token",  # what the likelihood objective's normaliser counts
        "algo.kl.coef=0",  # and it has no KL term: no reference model to load
        "stages=[]",  # a pipeline recipe's stages are not this run's
    ]


def with_sft_steps(config: RunConfig) -> RunConfig:
    """`train.steps` from `sft.epochs` over the traces of `sft.data` the run trains on (held-out questions left out)."""
    from rlvr.envs import make_env
    from rlvr.sft.data import held_out_questions, training_conversations
    from rlvr.sft.trainer import steps_for

    environment = make_env(config.env)
    held_out = held_out_questions(config, environment)
    conversations, _ = training_conversations(config.sft.data, environment, held_out, config.sft.turns)
    steps = steps_for(config, len(conversations))
    return config.model_copy(update={"train": config.train.model_copy(update={"steps": steps})})


def distill_overrides(teacher: str, with_reward: bool, weighted: bool) -> list[str]:
    """What makes a recipe's config on-policy distillation from `teacher` (`rlvr distill`, and a pipeline's distill
    stage), applied after the user's overrides; the KL's weight is 1 unless they set it (`weighted`)."""
    kl = [] if weighted else ["algo.kl.coef=1.0"]
    fixed = [f"algo.teacher={json.dumps(teacher)}", "algo.kl.estimator=k2", "algo.kl.in_reward=false", "stages=[]"]
    # Unpaid, every group's rewards are equal (0): dynamic sampling would drop every group and train nothing.
    unpaid = (
        [] if with_reward else ["env.correct_weight=0", "env.format_reward=0", "env.rewards={}", "algo.dynamic_sampling=false"]
    )
    return [*kl, *fixed, *unpaid]


def eval_settings(
    config: RunConfig,
    *,
    n: int = 1,
    k: Sequence[int] = (1,),
    limit: int | None = None,
    temperature: float | None = None,
    max_new_tokens: int | None = None,
    seed: int = 0,
    budgets: Sequence[int] = (),
    effort: str | None = None,
    reasoning: bool = True,
    min_thinking: int = 0,
) -> EvalSettings:
    """What to measure: the recipe's sampling with these changes. Temperature 0 is greedy decoding (the recipe's
    temperature stays in the record, unused). `effort` is a named thinking budget (low, medium, high) held by budget
    forcing; for a recipe with `length_control`, it is instead its own levels (comma-separated for a curve, `off`
    too with `no_reasoning`), stated in the prompt as in training, and `reasoning=False` states `off` the same way."""
    from rlvr.eval import EvalSettings
    from rlvr.eval.thinking import resolve_budget

    efforts = learned_efforts(config, effort, reasoning)
    if efforts:
        effort, reasoning = None, True

    sampling = config.eval_sampling()
    sampling = sampling.model_copy(
        update={"temperature": temperature or sampling.temperature, "max_new_tokens": max_new_tokens or sampling.max_new_tokens}
    )
    return EvalSettings(
        n=n,
        ks=tuple(k),
        limit=limit,
        greedy=True if temperature == 0 else None,
        sampling=sampling,
        seed=seed,
        budgets=tuple(budgets) or tuple(b for b in [resolve_budget(None, effort)] if b is not None),
        reasoning=reasoning,
        min_thinking=min_thinking,
        diagnostics=config.diagnostics,
        efforts=efforts,
    )


def learned_efforts(config: RunConfig, effort: str | None, reasoning: bool) -> tuple[tuple[str, int], ...]:
    """The (level, thinking tokens) the prompt states for `--effort` / `--no-reasoning` when the recipe trained
    with length control; () otherwise (budget forcing then holds the thinking)."""
    from rlvr.length_control import OFF

    control = config.length_control
    if not control.enabled or (effort is None and reasoning):
        return ()
    known = {**control.efforts, **({OFF: 0} if control.no_reasoning else {})}
    if effort is None:
        if OFF not in known:
            return ()  # trained without reasoning off: --no-reasoning forces an empty thinking block, as for any model
        return ((OFF, 0),)
    levels = [level.strip() for level in effort.split(",") if level.strip()]
    for level in levels:
        if level not in known:
            raise ConfigError(f"--effort: {level!r}: the recipe's length control trained {', '.join(known)}")
    if not reasoning:
        raise ConfigError("--effort and --no-reasoning: give one (off is an effort level of this recipe)")
    return tuple((level, known[level]) for level in levels)


def rejection_job_of(config: RunConfig, label: str, split: str, options: RejectionOptions) -> RejectionJob:
    """`rejection_job` of a config whose model and environment are chosen (a pipeline's rejection_sample stage)."""
    from dataclasses import replace

    from rlvr.envs import make_env
    from rlvr.rejection import RejectionJob, Selection, choose_problems

    selection = Selection(options.keep, options.max_per_question)
    temperature = options.temperature
    if temperature == 0 and options.n > 1:
        raise ConfigError("--temperature: 0 is greedy decoding, the same answer n times: give a temperature > 0 or --n 1")
    sampling = {"temperature": temperature, "max_new_tokens": options.max_new_tokens, "seed": options.seed}
    settings = eval_settings(config, n=options.n, **sampling)
    settings = replace(settings, greedy=temperature == 0)  # sampled, n = 1 included (evaluation's n = 1 is greedy)
    environment = make_env(config.env)
    problems = choose_problems(environment, split, options.limit)
    return RejectionJob(config, settings, selection, environment, problems, label, split)


def run_rejection(job: RejectionJob, out: str | Path, progress: Advance | None = None) -> RejectionSummary:
    """Sample the job's questions n times with the engine, tool loop and verifier of training and evaluation, and write
    the verified-correct answers its keep rule keeps to `out` as chat traces (`rlvr sft`'s input), the numbers to
    `<out>.provenance.json`. An engine failure raises EngineError, the traces written before it kept."""
    from rlvr.eval.generation import no_progress
    from rlvr.rejection import rejection_sample as sample_traces
    from rlvr.rollout.judge import make_judge
    from rlvr.rollout.sampler import make_sampler
    from rlvr.scoring import Scorer

    config = job.config
    tokenizer, engine, provenance = load_engine(config)
    sampler, chat, _ = make_sampler(engine, tokenizer, config, job.env)
    provenance.update(data=job.data, split=job.split)
    scoring, judge = config.scoring, make_judge(config, engine, tokenizer)
    with Scorer(job.env.rubric, scoring.workers, scoring.timeout_seconds, scoring.on_hack, judge) as scorer:
        return sample_traces(
            sampler,
            job.env,
            tokenizer,
            scorer,
            chat,
            job.problems,
            job.settings,
            job.selection,
            Path(out),
            provenance,
            progress or no_progress,
        )


def load_engine(config: RunConfig) -> tuple[Any, Any, dict[str, Any]]:
    """The config's model loaded into its engine: (tokenizer, engine, what a result records about them)."""
    from rlvr.eval.provenance import model_hash
    from rlvr.models import load_policy, load_tokenizer, resolve_model_path
    from rlvr.rollout import make_engine

    tokenizer = load_tokenizer(config.model.path)
    engine = make_engine(config.rollout, load_policy(config.model.path), tokenizer, config.eval.batch_size)
    provenance = {
        "model": config.model.path,
        "model_hash": model_hash(resolve_model_path(config.model.path)),
        "engine": f"{type(engine).__name__}, {engine.precision}",
    }
    return tokenizer, engine, provenance
