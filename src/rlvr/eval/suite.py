"""The regression suite: fixed held-out evaluations across domains, each compared with the base model.

RL on one task can lift it and quietly break others (R1 was worse than V3 in places). A suite file names the
evaluations (math word problems, reasoning-gym tasks, search QA, HumanEval, instruction following: the packaged
`regression` suite), each a set of recipe sections as `--set` would write them. `rlvr eval MODEL --suite` runs them
all on one loaded model, runs the base model on the same questions, and flags each evaluation whose paired
difference has a 95% interval below zero; `train.eval_every` runs the same during training (`rlvr.suite_tracker`).

Every evaluation is greedy, so a model's result is a function of its weights and the questions: the base model's
can be computed once and reused.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rlvr.config import (
    RECIPES_DIR,
    ConfigError,
    RunConfig,
    anchor_source_paths,
    load_config,
    packaged_or_file,
    read_yaml_mapping,
)
from rlvr.eval.compare import paired_accuracy, question_accuracy
from rlvr.eval.sample import Sample
from rlvr.eval.settings import EvalSettings
from rlvr.step_metrics import SUITE_PREFIX, suite_key

SUITES_DIR = RECIPES_DIR / "suites"
DEFAULT_SUITE = "regression"
# The sections an evaluation may set; the rest (model, algorithm, training) are not the evaluation's to change.
SECTIONS = ("env", "tools", "eval", "sampling", "scoring")

Progress = Callable[[int, int, int], None]
Verdict = Literal["drop", "gain", "same", ""]


class SuiteEval(BaseModel):
    """One evaluation: recipe sections (each key as `--set section.key=value` would set it), and a question cap."""

    model_config = ConfigDict(extra="forbid")

    env: dict[str, Any]
    tools: dict[str, Any] = {}
    eval: dict[str, Any] = {}
    sampling: dict[str, Any] = {}
    scoring: dict[str, Any] = {}
    limit: int | None = Field(None, ge=1, description="evaluate the first L held-out questions only")

    def overrides(self) -> list[str]:
        # JSON is YAML, so each value reaches the config exactly as written in the suite.
        return [f"{section}.{key}={json.dumps(value)}" for section in SECTIONS for key, value in getattr(self, section).items()]


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    recipe: str = Field("default", description="the recipe every evaluation starts from: prompt, format, engine")
    evals: dict[str, SuiteEval]
    source: str = Field("", exclude=True)  # the file it was read from, for messages

    @field_validator("evals")
    @classmethod
    def _not_empty(cls, evals: dict[str, SuiteEval]) -> dict[str, SuiteEval]:
        if not evals:
            raise ValueError("a suite needs at least one evaluation")
        return evals


def suite_path(suite: str | None) -> Path:
    """A suite file, or the name of a packaged suite (`regression`)."""
    return packaged_or_file(suite or DEFAULT_SUITE, SUITES_DIR, "suite")


def load_suite(suite: str | None = None) -> Suite:
    path = suite_path(suite)
    data = read_yaml_mapping(path, "a suite is a mapping with `recipe` and `evals`")
    recipe = data.get("recipe")
    if isinstance(recipe, str) and Path(recipe).suffix in (".yaml", ".yml") and not Path(recipe).is_absolute():
        data["recipe"] = str((path.parent / recipe).resolve())
    for entry in (data.get("evals") or {}).values() if isinstance(data.get("evals"), dict) else ():
        if isinstance(entry, dict) and isinstance(entry.get("env"), dict):
            holder = {"env": copy.deepcopy(entry["env"])}
            anchor_source_paths(holder, path.parent)  # data paths are relative to the suite file
            entry["env"] = holder["env"]
    try:
        return Suite.model_validate({**data, "source": str(path)})
    except ValidationError as error:
        details = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise ConfigError(f"{path}: {details}") from None


def suite_configs(
    suite: Suite, model: str, recipe: str | None = None, overrides: Sequence[str] = (), plugins: Sequence[str] = ()
) -> dict[str, RunConfig]:
    """Each evaluation's config: the suite's recipe (or `recipe`), the evaluation's sections, then `overrides`."""
    configs = {}
    for name, entry in suite.evals.items():
        try:
            configs[name] = load_config(recipe or suite.recipe, [*entry.overrides(), *overrides, f"model.path={model}"], plugins)
        except ConfigError as error:
            raise ConfigError(f"{suite.source}: evals.{name}: {error}") from None
    return configs


def suite_settings(config: RunConfig, entry: SuiteEval, seed: int = 0) -> EvalSettings:
    """Greedy, one answer per question: deterministic, so the base model's results can be reused."""
    sampling, diagnostics = config.eval_sampling(), config.diagnostics
    return EvalSettings(n=1, ks=(1,), limit=entry.limit, greedy=True, sampling=sampling, seed=seed, diagnostics=diagnostics)


@dataclass(frozen=True)
class SuiteResult:
    """One model's result on one evaluation."""

    name: str
    accuracy: float
    ci95: tuple[float, float]
    questions: int
    per_question: dict[str, float]  # question id -> correct (for the paired comparison)

    @classmethod
    def of(cls, name: str, summary: Mapping[str, Any], samples: Sequence[Sample]) -> SuiteResult:
        low, high = summary["avg@n"]["ci95"]
        return cls(name, summary["avg@n"]["value"], (low, high), summary["questions"], question_accuracy(samples))


def evaluate_suite(
    engine: Any,
    tokenizer: Any,
    suite: Suite,
    configs: Mapping[str, RunConfig],
    out: Path | None = None,
    progress: Callable[[str], Progress] | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> dict[str, SuiteResult]:
    """Every evaluation of the suite on one engine (the weights it holds now). With `out`, each evaluation's report
    goes to `out/<name>/` (summary.json, samples.jsonl, report.md, report.html)."""
    from rlvr.envs import make_env
    from rlvr.eval.generation import no_progress
    from rlvr.eval.report import write_report
    from rlvr.eval.runner import run_eval
    from rlvr.rollout.judge import make_judge
    from rlvr.rollout.sampler import make_sampler
    from rlvr.scoring import Scorer

    results = {}
    for name, config in configs.items():
        environment = make_env(config.env)
        sampler, chat, _ = make_sampler(engine, tokenizer, config, environment)
        settings = suite_settings(config, suite.evals[name], config.seed)
        scoring, judge = config.scoring, make_judge(config, engine, tokenizer)
        with Scorer(environment.rubric, scoring.workers, scoring.timeout_seconds, scoring.on_hack, judge) as scorer:
            summary, samples = run_eval(
                sampler,
                environment,
                tokenizer,
                scorer,
                settings,
                {**(provenance or {}), "data": f"suite:{name} ({config.env.label})"},
                progress(name) if progress else no_progress,
                chat,
            )
        if out is not None:
            write_report(out / name, summary, samples)
        results[name] = SuiteResult.of(name, summary, samples)
    return results


def read_results(folder: Path, names: Sequence[str]) -> dict[str, SuiteResult] | None:
    """The results a previous run of the suite wrote to `folder`, or None when any evaluation is missing."""
    results = {}
    for name in names:
        summary_path, samples_path = folder / name / "summary.json", folder / name / "samples.jsonl"
        if not (summary_path.exists() and samples_path.exists()):
            return None
        try:
            samples = [Sample.from_dict(json.loads(line)) for line in samples_path.read_text().splitlines()]
            summary = json.loads(summary_path.read_text())
        except json.JSONDecodeError:  # a kill while they were written: measured again
            return None
        if len(samples) != summary["questions"] * summary["samples_per_question"]:
            return None
        results[name] = SuiteResult.of(name, summary, samples)
    return results


@dataclass(frozen=True)
class SuiteRow:
    """One evaluation of a model beside the base model's, paired on the questions both answered."""

    name: str
    questions: int
    accuracy: float
    ci95: tuple[float, float]
    base_accuracy: float | None = None
    # Model minus base in per-question accuracy, on the distinct questions both answered: a question a held-out split
    # draws twice counts once (its two answers are not independent evidence).
    paired_questions: int | None = None
    difference: float | None = None
    difference_ci95: tuple[float, float] | None = None
    p_value: float | None = None
    verdict: Verdict = ""  # drop / gain: the paired interval lies below / above zero

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare_results(
    model: Mapping[str, SuiteResult], base: Mapping[str, SuiteResult] | None, resamples: int = 10_000
) -> list[SuiteRow]:
    rows = []
    for name, result in model.items():
        row = SuiteRow(name, result.questions, result.accuracy, result.ci95)
        if base is not None and name in base:
            paired = paired_accuracy(base[name].per_question, result.per_question, ("base", "model"), resamples)
            low, high = paired["ci95"]
            verdict: Verdict = "drop" if high < 0 else "gain" if low > 0 else "same"
            row = SuiteRow(
                name,
                result.questions,
                result.accuracy,
                result.ci95,
                base[name].accuracy,
                paired["questions"],
                paired["difference"],
                (low, high),
                paired["p_value"],
                verdict,
            )
        rows.append(row)
    return rows


def drops(rows: Sequence[SuiteRow]) -> list[str]:
    return [row.name for row in rows if row.verdict == "drop"]


def markdown_table(rows: Sequence[SuiteRow], model: str, base: str | None) -> str:
    """The suite's table: each evaluation's accuracy, the base model's, and the paired difference."""
    lines = [
        f"# Regression suite: {model}" + (f" against {base}" if base else ""),
        "",
        "Greedy, one answer per question; 95% bootstrap intervals. The difference is paired on the distinct questions",
        "both answered (a question drawn twice counts once); a drop is flagged when its interval lies below zero.",
        "",
        "| evaluation | questions | model | base | model - base (paired) | distinct | p | flag |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        model_cell = f"{row.accuracy:.1%} [{row.ci95[0]:.1%}, {row.ci95[1]:.1%}]"
        base_cell = f"{row.base_accuracy:.1%}" if row.base_accuracy is not None else ""
        diff = (
            f"{row.difference:+.1%} [{row.difference_ci95[0]:+.1%}, {row.difference_ci95[1]:+.1%}]"
            if row.difference is not None and row.difference_ci95 is not None
            else ""
        )
        p = f"{row.p_value:.3f}" if row.p_value is not None else ""
        flag = {"drop": "**DROP**", "gain": "gain"}.get(row.verdict, "")
        distinct = row.paired_questions if row.paired_questions is not None else ""
        lines.append(f"| {row.name} | {row.questions} | {model_cell} | {base_cell} | {diff} | {distinct} | {p} | {flag} |")
    flagged = drops(rows)
    lines += ["", f"Significant drops: {', '.join(flagged)}." if flagged else "No significant drop."]
    return "\n".join(lines) + "\n"


def write_suite(out: Path, rows: Sequence[SuiteRow], model: str, base: str | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    record = {"model": model, "base": base, "rows": [row.to_dict() for row in rows], "drops": drops(rows)}
    (out / "suite.json").write_text(json.dumps(record, indent=2) + "\n")
    (out / "suite.md").write_text(markdown_table(rows, model, base))


def starting_model(model: str) -> str | None:
    """The model a run started from (its config.yaml's model.path), for a run folder, its `final/` or one of its
    checkpoints; None for a model that is not part of a run."""
    path = Path(model).expanduser()
    if not path.exists():  # a model name (`smollm2-135m`) is no run: the working folder's files say nothing about it
        return None
    for folder in [path, *path.parents][:4]:
        saved = folder / "config.yaml"
        if saved.exists():
            data = yaml.safe_load(saved.read_text()) or {}
            start = (data.get("model") or {}).get("path") if isinstance(data, dict) else None
            return start if isinstance(start, str) else None
    return None


def suite_due(every: int, step: int) -> bool:
    """Whether `train.eval_every: every` runs the suite after `step` (0: never)."""
    return every > 0 and step % every == 0


class SuiteDuringTraining:
    """`train.eval_every`: the suite on the policy being trained, every N steps, against the starting model.

    The starting model's results are measured once, before the first step, into `<run>/suite/step-000000/`; a resumed
    run reads them back. Each later evaluation goes to `<run>/suite/step-NNNNNN/` and into the step's metrics row:
    `suite/<eval>/accuracy`, `suite/<eval>/delta` (minus the start, paired) and `suite/drops`; a significant drop is
    also a warning in the log."""

    def __init__(self, config: RunConfig, engine: Any, tokenizer: Any, folder: Path) -> None:
        self.every = config.train.eval_every
        self.suite = load_suite(config.eval.suite)
        self.configs = suite_configs(self.suite, config.model.path, plugins=config.plugins)
        self.engine, self.tokenizer, self.folder = engine, tokenizer, folder
        self.start: dict[str, SuiteResult] | None = None

    def due(self, step: int) -> bool:
        return suite_due(self.every, step)

    def baseline(self, progress: Callable[[str], Progress] | None = None) -> dict[str, SuiteResult]:
        folder = self.folder / "step-000000"
        self.start = read_results(folder, list(self.configs)) or self._run(folder, progress)
        return self.start

    def _run(self, folder: Path, progress: Callable[[str], Progress] | None) -> dict[str, SuiteResult]:
        return evaluate_suite(self.engine, self.tokenizer, self.suite, self.configs, folder, progress)

    def __call__(self, step: int, progress: Callable[[str], Progress] | None = None) -> dict[str, Any]:
        """The step's suite metrics (and warnings for its drops); empty on a step that is not due."""
        if not self.due(step):
            return {}
        start = self.start if self.start is not None else self.baseline(progress)
        folder = self.folder / f"step-{step:06d}"
        rows = compare_results(self._run(folder, progress), start)
        write_suite(folder, rows, f"step {step}", "the starting model")
        metrics: dict[str, Any] = {f"{SUITE_PREFIX}drops": len(drops(rows))}
        for row in rows:
            metrics[suite_key(row.name, "accuracy")] = row.accuracy
            metrics[suite_key(row.name, "delta")] = row.difference
        warnings = [
            f"step {step}: regression suite: {row.name} dropped {row.difference:+.1%} "
            f"[{row.difference_ci95[0]:+.1%}, {row.difference_ci95[1]:+.1%}] from the starting model"
            for row in rows
            if row.verdict == "drop" and row.difference is not None and row.difference_ci95 is not None
        ]
        if warnings:
            metrics["warnings"] = warnings
        return metrics
