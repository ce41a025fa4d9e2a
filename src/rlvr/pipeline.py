"""A recipe's `stages:` run in order, in one run folder, and a report of what each stage bought.

Each stage is a whole run of its kind (`rl`, `sft`, `distill`: `rlvr.run.train`; `rejection_sample`:
`rlvr.rejection`) in `runs/<pipeline>/<i>-<stage>/`, built from the recipe with the stage's `set:` overrides. The
pipeline decides what the recipe cannot say: each stage starts from the model the last training stage wrote
(`<i>-<stage>/final`), an `sft` stage reads the traces a `rejection_sample` stage wrote, and only the first
training stage evaluates the starting model (each later one starts from a model the stage before it evaluated).

Resume: `--resume` skips a stage whose folder says it finished (a `summary.json`, or complete provenance for
traces), continues a training stage from its last checkpoint, and samples an unfinished rejection stage again (its
samples are seeded, so the traces are the same). `pipeline.json` and `pipeline.md` are rewritten after every stage:
held-out accuracy after each stage with its 95% interval, its paired difference from the starting model, and the
compute the stage spent (tokens generated and trained on, seconds); `pipeline.png` plots it at the end.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from rlvr.config import RunConfig, apply_overrides, parse_config
from rlvr.errors import ConfigError
from rlvr.metrics import MetricsLog
from rlvr.registry import Registry
from rlvr.stage_config import DistillStage, RejectionStage, RLStage, SFTStage


@dataclass(frozen=True)
class Accuracy:
    """Held-out accuracy (greedy avg@1 over the environment's held-out questions) with its 95% bootstrap interval."""

    value: float
    ci95: tuple[float, float]
    questions: int

    @staticmethod
    def of(evaluation: dict) -> Accuracy:
        return Accuracy(evaluation["avg@n"]["value"], tuple(evaluation["avg@n"]["ci95"]), evaluation["questions"])


@dataclass(frozen=True)
class Compute:
    """What a stage spent: tokens the model generated (rollouts, rejection samples), tokens trained on, the
    seconds of its training steps and of the whole stage (evaluations and loading included)."""

    generated_tokens: int = 0
    trained_tokens: int = 0
    train_seconds: float = 0.0
    wall_seconds: float = 0.0

    def __add__(self, other: Compute) -> Compute:
        return Compute(*(a + b for a, b in zip(asdict(self).values(), asdict(other).values())))


@dataclass(frozen=True)
class StageOutcome:
    """One finished stage, as `pipeline.json` records it."""

    index: int
    name: str
    kind: str
    folder: str
    model: str  # the model after the stage: its final/ folder, or the one it sampled from
    compute: Compute
    accuracy: Accuracy | None = None  # after the stage; None for a stage that trains nothing
    versus_start: dict | None = None  # paired difference from the starting model on the same questions
    traces: dict | None = None  # a rejection stage's file, traces kept, pass rate and yield


@dataclass
class Pipeline:
    """A pipeline in progress: the model so far, the traces the stages wrote and what each stage did."""

    config: RunConfig
    run_dir: Path
    console: Console
    resume: bool
    model: str = ""
    start: Accuracy | None = None  # the starting model's, measured by the first training stage
    start_samples: Path | None = None
    traces: dict[str, str] = field(default_factory=dict)  # rejection stage -> its traces file
    trained: dict[str, str] = field(default_factory=dict)  # training stage -> its final model
    outcomes: list[StageOutcome] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.model = self.model or self.config.model.path

    def folder(self, index: int, name: str) -> Path:
        return self.run_dir / f"{index}-{name}"

    def stage_config(self, stage: Any, index: int, extra: list[str]) -> RunConfig:
        """The recipe with the stage's overrides, then `extra` (what its kind needs), then what the pipeline decides:
        the stage's run folder and the model it starts from."""
        data = self.config.model_dump(mode="json")
        data["stages"] = []
        own = [f"{key}={json.dumps(value)}" for key, value in getattr(stage, "set", {}).items()]
        evaluated = self.start is not None or any(o.accuracy for o in self.outcomes)
        before = ["eval.before=false"] if evaluated and "eval.before" not in getattr(stage, "set", {}) else []
        fixed = [
            f"name={index}-{stage.name}",
            f"output_dir={json.dumps(str(self.run_dir))}",
            f"model.path={json.dumps(self.model)}",
        ]
        apply_overrides(data, [*own, *extra, *before, *fixed])
        return parse_config(data, source=f"{self.config.name}: stage {index} ({stage.name})")

    def train(self, stage: Any, index: int, config: RunConfig, trainer: str) -> StageOutcome:
        """A training stage: run it (or read back the run a resumed pipeline finished), then its numbers."""
        from rlvr.run import train as run_train
        from rlvr.sft.trainer import SFTTrainer
        from rlvr.trainer import Trainer

        folder = config.run_dir
        finished = folder / "summary.json"
        started = time.perf_counter()
        if finished.exists():
            summary = json.loads(finished.read_text())
        else:
            kind = {"rl": Trainer, "sft": SFTTrainer}[trainer]
            summary = run_train(config, resume=self.resume, console=self.console, trainer_type=kind)
        rows = [row for row in MetricsLog(folder / "metrics.jsonl").read() if "step_seconds" in row]
        compute = Compute(
            generated_tokens=int(sum(row.get("generated_tokens", 0) for row in rows)),
            trained_tokens=int(sum(row.get("trained_tokens", 0) for row in rows)),
            train_seconds=round(sum(row["step_seconds"] for row in rows), 1),
            wall_seconds=summary.get("wall_seconds", round(time.perf_counter() - started, 1)),
        )
        if self.start is None and summary.get("eval_before"):
            self.start, self.start_samples = Accuracy.of(summary["eval_before"]), folder / "eval_before.samples.jsonl"
        accuracy = Accuracy.of(summary["eval_after"]) if summary.get("eval_after") else None
        self.model = self.trained[stage.name] = str(folder / "final")
        return StageOutcome(index, stage.name, stage.kind, str(folder), self.model, compute, accuracy, self._versus_start(folder))

    def _versus_start(self, folder: Path) -> dict | None:
        """The stage's held-out accuracy minus the starting model's, paired on the questions both answered."""
        from rlvr.eval.compare import paired_accuracy, sample_accuracy

        after = folder / "eval_after.samples.jsonl"
        if self.start_samples is None or not after.exists() or not self.start_samples.exists():
            return None
        start = sample_accuracy(self.start_samples.with_name("eval_before.json"), self.start_samples)
        paired = paired_accuracy(start, sample_accuracy(folder / "eval_after.json", after), ("start", folder.name))
        return {key: paired[key] for key in ("questions", "difference", "ci95", "p_value")}

    def record(self, outcome: StageOutcome) -> None:
        self.outcomes.append(outcome)
        write_report(self)


def sft_data(pipeline: Pipeline, stage: SFTStage) -> str:
    """The stage's traces: a file, an earlier rejection stage's (by name), or by default the latest one's."""
    if stage.data is None:
        return list(pipeline.traces.values())[-1]
    return pipeline.traces.get(stage.data, stage.data)


def _sft_extra(pipeline: Pipeline, stage: SFTStage) -> list[str]:
    from rlvr.jobs import sft_overrides

    return sft_overrides(sft_data(pipeline, stage))


def _distill_extra(pipeline: Pipeline, stage: DistillStage) -> list[str]:
    from rlvr.jobs import distill_overrides

    return distill_overrides(pipeline.trained.get(stage.teacher, stage.teacher), stage.with_reward, "algo.kl.coef" in stage.set)


# What each kind adds to the recipe, after the stage's own overrides: (pipeline so far, stage) -> `--set` assignments.
STAGE_OVERRIDES: dict[str, Callable[[Pipeline, Any], list[str]]] = {
    "rl": lambda pipeline, stage: [],
    "sft": _sft_extra,
    "distill": _distill_extra,
    "rejection_sample": lambda pipeline, stage: [],
}


def traces_file(pipeline: Pipeline, index: int, stage: RejectionStage) -> Path:
    return pipeline.folder(index, stage.name) / "traces.jsonl"


StageRunner = Callable[[Pipeline, Any, int], StageOutcome]
STAGE_RUNNERS: Registry[StageRunner] = Registry("stage kind")


@STAGE_RUNNERS.register("rl")
@STAGE_RUNNERS.register("distill")
def rl_stage(pipeline: Pipeline, stage: RLStage | DistillStage, index: int) -> StageOutcome:
    return pipeline.train(stage, index, pipeline.stage_config(stage, index, STAGE_OVERRIDES[stage.kind](pipeline, stage)), "rl")


@STAGE_RUNNERS.register("sft")
def sft_stage(pipeline: Pipeline, stage: SFTStage, index: int) -> StageOutcome:
    from rlvr.jobs import with_sft_steps

    config = pipeline.stage_config(stage, index, _sft_extra(pipeline, stage))
    if "train.steps" not in stage.set and not (config.run_dir / "summary.json").exists():
        # The same traces give the same steps, so a resumed stage's config is the one it was started with.
        config = with_sft_steps(config)
    return pipeline.train(stage, index, config, "sft")


@STAGE_RUNNERS.register("rejection_sample")
def rejection_stage(pipeline: Pipeline, stage: RejectionStage, index: int) -> StageOutcome:
    from rlvr.jobs import rejection_job_of, run_rejection
    from rlvr.progress import sample_bars
    from rlvr.rejection import provenance_path

    config = pipeline.stage_config(stage, index, [])
    out = traces_file(pipeline, index, stage)
    done = provenance_path(out)
    summary = json.loads(done.read_text()) if done.exists() else None
    if summary is None or not summary.get("complete"):
        job = rejection_job_of(config, config.env.label, "train", stage.options())
        with sample_bars(pipeline.console) as bar:
            summary = run_rejection(job, out, bar(f"{stage.name}: sampling")).to_dict()
    overall = summary["overall"]
    if overall["traces"] == 0:
        raise ConfigError(f"stage {index} ({stage.name}): no verified answer among {overall['samples']} samples to train on")
    pipeline.traces[stage.name] = str(out)
    compute = Compute(generated_tokens=summary["generated_tokens"], wall_seconds=round(summary["seconds"], 1))
    kept = {key: overall[key] for key in ("traces", "samples", "pass_rate", "pass_rate_ci95", "coverage", "yield")}
    return StageOutcome(
        index, stage.name, stage.kind, str(out.parent), pipeline.model, compute, traces={"file": str(out), **kept}
    )


def check_stages(config: RunConfig, run_dir: Path, console: Console) -> None:
    """Every stage's config built before anything runs, with the paths the stages before it will write, so a bad
    `set:` key fails in seconds rather than after the stages before it."""
    dry = Pipeline(config, run_dir, console, resume=False)
    for index, stage in enumerate(config.stages, 1):
        dry.stage_config(stage, index, STAGE_OVERRIDES[stage.kind](dry, stage))
        if isinstance(stage, RejectionStage):
            dry.traces[stage.name] = str(traces_file(dry, index, stage))
        else:
            dry.model = dry.trained[stage.name] = str(dry.folder(index, stage.name) / "final")


def run_pipeline(config: RunConfig, resume: bool = False, overwrite: bool = False, console: Console | None = None) -> dict:
    """Every stage of `config.stages` in order (see the module's docstring); returns what `pipeline.json` holds."""
    from rlvr.run import prepare_run_dir, write_config

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Its data stages (rejection sampling) run in one process; run a training stage on ranks as its own run.
        raise ConfigError("stages: a pipeline runs in one process (no --nproc); its stages' run folders resume on ranks alone")
    console = console or Console(stderr=True)
    run_dir = prepare_run_dir(config, resume, overwrite)
    write_config(run_dir, config, {})
    check_stages(config, run_dir, console)
    pipeline = Pipeline(config, run_dir, console, resume)
    for index, stage in enumerate(config.stages, 1):
        console.rule(f"stage {index}/{len(config.stages)}: {stage.name} ({stage.kind}) from {pipeline.model}")
        pipeline.record(STAGE_RUNNERS[stage.kind](pipeline, stage, index))
    plot(pipeline, run_dir / "pipeline.png")
    console.print(report_table(pipeline))
    return report(pipeline)


# ---------------------------------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------------------------------


def report(pipeline: Pipeline) -> dict:
    total = sum((o.compute for o in pipeline.outcomes), Compute())
    return {
        "name": pipeline.config.name,
        "start": asdict(pipeline.start) if pipeline.start else None,
        "stages": [asdict(outcome) for outcome in pipeline.outcomes],
        "total": asdict(total),
        "final_model": pipeline.model,
    }


def _interval(accuracy: Accuracy | None) -> str:
    if accuracy is None:
        return ""
    low, high = accuracy.ci95
    return f"{accuracy.value:.1%} [{low:.1%}, {high:.1%}]"


def _rows(pipeline: Pipeline) -> list[tuple[str, ...]]:
    rows = [("0", "start", "", _interval(pipeline.start), "", "", "", "", pipeline.config.model.path)]
    for o in pipeline.outcomes:
        paired = ""
        if o.versus_start:
            low, high = o.versus_start["ci95"]
            paired = f"{o.versus_start['difference']:+.1%} [{low:+.1%}, {high:+.1%}]"
        note = (
            f"{o.traces['traces']} traces, pass rate {o.traces['pass_rate']:.1%}, yield {o.traces['yield']:.1%}"
            if o.traces
            else ""
        )
        c = o.compute
        rows.append(
            (str(o.index), o.name, o.kind, _interval(o.accuracy) or "(no training)", paired,
             f"{c.generated_tokens:,}", f"{c.trained_tokens:,}", f"{c.train_seconds:.0f} / {c.wall_seconds:.0f}", note)
        )  # fmt: skip
    return rows


COLUMNS = (
    "#",
    "stage",
    "kind",
    "held-out accuracy [95% CI]",
    "vs start (paired)",
    "generated",
    "trained",
    "seconds (train / all)",
    "",
)


def report_table(pipeline: Pipeline) -> Table:
    table = Table(title=f"{pipeline.config.name}: held-out accuracy after each stage ({pipeline.config.env.label})")
    for column in COLUMNS:
        table.add_column(column)
    for row in _rows(pipeline):
        table.add_row(*row)
    return table


def markdown(pipeline: Pipeline) -> str:
    total = sum((o.compute for o in pipeline.outcomes), Compute())
    lines = [
        f"# Pipeline {pipeline.config.name}",
        "",
        f"Held-out accuracy on {pipeline.config.env.label} after each stage (greedy, 95% bootstrap interval); the paired "
        "difference from the starting model is on the same questions. Compute: tokens the model generated and tokens "
        "trained on; seconds of training steps and of the whole stage.",
        "",
        "| " + " | ".join(COLUMNS[:-1]) + " | notes |",
        "|" + "---|" * len(COLUMNS),
        *("| " + " | ".join(row) + " |" for row in _rows(pipeline)),
        "",
        f"Total: {total.generated_tokens:,} tokens generated, {total.trained_tokens:,} trained on, "
        f"{total.train_seconds:.0f} s of training steps, {total.wall_seconds:.0f} s in all.",
        "",
        "![accuracy after each stage](pipeline.png)",
        "",
    ]
    return "\n".join(lines)


def plot(pipeline: Pipeline, path: Path) -> None:
    """Held-out accuracy after each stage with its interval, against the compute spent so far."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [("start", pipeline.start, 0.0)] if pipeline.start else []
    spent = 0.0
    for o in pipeline.outcomes:
        spent += o.compute.wall_seconds
        if o.accuracy:
            points.append((o.name, o.accuracy, spent))
    if not points:
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    minutes = [seconds / 60 for _, _, seconds in points]
    values = [accuracy.value for _, accuracy, _ in points]
    errors = [[a.value - a.ci95[0] for _, a, _ in points], [a.ci95[1] - a.value for _, a, _ in points]]
    ax.errorbar(minutes, values, yerr=errors, marker="o", capsize=4)
    for (label, accuracy, _), x in zip(points, minutes):
        ax.annotate(label, (x, accuracy.value), textcoords="offset points", xytext=(4, 6), fontsize="small")
    ax.set_xlabel("minutes spent (stages' wall time)")
    ax.set_ylabel("held-out accuracy")
    ax.set_title(f"{pipeline.config.name}: accuracy after each stage (95% CI)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(pipeline: Pipeline) -> None:
    """pipeline.json and pipeline.md, each written whole (a kill mid-write leaves the last one)."""
    for name, text in (("pipeline.json", json.dumps(report(pipeline), indent=2) + "\n"), ("pipeline.md", markdown(pipeline))):
        tmp = pipeline.run_dir / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(pipeline.run_dir / name)
