"""A whole run: evaluate before, train, evaluate after, write the run folder."""

from __future__ import annotations

import json
import shutil
import time
from contextlib import ExitStack
from functools import partial
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

from rlvr.config import ConfigError, RunConfig, parse_config
from rlvr.distributed import Ranks
from rlvr.eval import evaluate
from rlvr.eval.suite import SuiteDuringTraining, suite_due
from rlvr.hardware import resolve_device
from rlvr.metrics import MetricsLog
from rlvr.models import resolve_model_path
from rlvr.report import plot_curves
from rlvr.trackers import TrackedRun, Trackers, check_installed
from rlvr.trainer import Trainer


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def _evaluate(trainer: Trainer, path: Path, console: Console, label: str) -> dict:
    """Held-out accuracy; the per-question samples go next to the summary."""
    sampling = trainer.config.eval_sampling()
    with console.status(f"evaluating {label} on {trainer.config.env.eval_size} held-out problems"):
        diagnostics = trainer.config.diagnostics
        result = evaluate(trainer.sampler, trainer.env, trainer.tokenizer, sampling, trainer.scorer, trainer.chat, diagnostics)
    samples = result.pop("samples")
    path.with_suffix(".samples.jsonl").write_text("".join(json.dumps(s.to_dict()) + "\n" for s in samples))
    _write_json(path, result)
    return result


def _suite_during_training(trainer: Trainer, run_dir: Path, console: Console) -> SuiteDuringTraining:
    """The regression suite of `train.eval_every`, its starting-model results measured (or read back) now."""
    suite = SuiteDuringTraining(trainer.config, trainer.engine, trainer.tokenizer, run_dir / "suite")
    with console.status("regression suite on the starting model") as status:

        def bar(name: str):
            return lambda done, total, new_tokens: status.update(f"regression suite on the starting model: {name} {done}/{total}")

        suite.baseline(bar)
    return suite


def _suite_callback(suite: SuiteDuringTraining | None, trainer: Trainer, console: Console):
    """`evaluate(step)` for `Trainer.fit`: rank 0 runs the suite on a step that is due; every rank meets after it."""

    def evaluate(step: int) -> dict:
        metrics: dict = {}
        if not suite_due(trainer.config.train.eval_every, step):
            return metrics
        if suite is not None:  # rank 0's
            # A line, not a spinner: the training bar is the live display now.
            console.print(f"step {step}: regression suite ({', '.join(suite.configs)})", highlight=False)
            metrics = suite(step)
        trainer.ranks.barrier(f"step {step}: regression suite")
        return metrics

    return evaluate


def prepare_run_dir(config: RunConfig, resume: bool, overwrite: bool) -> Path:
    run_dir = config.run_dir
    if run_dir.exists() and any(run_dir.iterdir()):
        if overwrite:
            shutil.rmtree(run_dir)
        elif not resume:
            raise ConfigError(f"{run_dir}: run folder exists; pass --resume to continue it or --overwrite to start again")
    run_dir.mkdir(parents=True, exist_ok=True)
    saved = run_dir / "config.yaml"
    if resume and saved.exists():
        try:
            previous = parse_config(yaml.safe_load(saved.read_text()) or {}, source=str(saved))
        except ConfigError as error:  # written by a version of rlvr whose config keys differ
            raise ConfigError(f"--resume: the saved config does not load with this version of rlvr: {error}") from None
        if previous != config:
            raise ConfigError(f"{saved}: --resume with a different config; start a new run name instead")
    return run_dir


def write_config(run_dir: Path, config: RunConfig, precision: dict[str, str]) -> None:
    """The full config, headed by what `auto` chose on this machine (comments: a resume on another machine may
    choose differently, and the config it is compared with stays the one that was asked for)."""
    header = "".join(f"# {name}: {choice}\n" for name, choice in precision.items())
    # Through a temporary file: a kill mid-write must not leave a config that no resume can read.
    tmp = run_dir / ".config.yaml.tmp"
    tmp.write_text(header + yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    tmp.replace(run_dir / "config.yaml")


def train(
    config: RunConfig,
    resume: bool = False,
    overwrite: bool = False,
    console: Console | None = None,
    trainer_type: type[Trainer] = Trainer,
) -> dict:
    """The whole run. With several ranks every rank calls this; rank 0 writes the run folder, evaluates and prints,
    the others train alongside it and wait for it at the named meeting points."""
    console = console or Console(stderr=True)
    started = time.perf_counter()
    check_installed(config.report_to)  # a tracker's missing library fails before anything loads
    resolve_model_path(config.model.path)  # a bad path or a missing device fails before anything is written
    if trainer_type is Trainer and config.cluster.backend == "ray":  # RL with rollout workers beside the learner
        from rlvr.cluster import AsyncTrainer

        if config.cluster.learners:  # this process only controls: the learner ranks are Ray actors, each runs this
            from rlvr.cluster.learners import train_on_learners

            return train_on_learners(config, resume, overwrite, console, partial(train, trainer_type=AsyncTrainer))
        trainer_type = AsyncTrainer
    ranks = Ranks.from_environment(config.train.rank_timeout_seconds)
    resolve_device(config.train.device, ranks.local_rank)
    run_dir = prepare_run_dir(config, resume, overwrite) if ranks.main else config.run_dir
    trainer = trainer_type(config, ranks)  # RL's, or supervised fine-tuning's (rlvr.sft)
    ranks.barrier("run folder ready")
    precision = trainer.precision()
    if ranks.main:
        write_config(run_dir, config, precision)
        for name, choice in precision.items():
            console.print(f"{name}: {choice}", highlight=False)
    # The process group is left to end with the process: an in-process vLLM engine tears down its own groups at
    # exit, which fails once the default group is gone.
    with trainer.scorer, ExitStack() as closing:  # stops the scoring workers and finishes the trackers however the run ends
        resumed = resume and trainer.resume()
        if resumed and ranks.main:
            console.print(f"resumed {run_dir} at step {trainer.step}")
        # Started before the evaluation: a tracker that cannot start (a login, a server) fails before minutes are spent.
        tracked = TrackedRun(config.name, run_dir, config.model_dump(mode="json"), first_step=trainer.step + 1)
        trackers = closing.enter_context(Trackers(config.report_to, tracked)) if ranks.main else None
        before_path = run_dir / "eval_before.json"
        before = None
        if config.eval.before and ranks.main:
            before = json.loads(before_path.read_text()) if resumed and before_path.exists() else None
            before = before or _evaluate(trainer, before_path, console, "the starting model")
        suite = _suite_during_training(trainer, run_dir, console) if config.train.eval_every and ranks.main else None
        ranks.barrier("evaluation before training")
        log = MetricsLog(run_dir / "metrics.jsonl", console, trackers) if ranks.main else None
        trainer.fit(log, _suite_callback(suite, trainer, console) if config.train.eval_every else None)
        final = run_dir / "final"
        trainer.save_final(final)
        after = None
        if config.eval.after and ranks.main:
            after = _evaluate(trainer, run_dir / "eval_after.json", console, "the trained model")
        ranks.barrier("evaluation after training")
    summary = {
        "model": config.model.path,
        "env": config.env.label,
        "precision": precision,
        "steps": trainer.step,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "eval_before": before,
        "eval_after": after,
        "final_checkpoint": str(final),
    }
    if ranks.main:
        plot_curves(log.read(), run_dir / "curves.png")
        _write_json(run_dir / "summary.json", summary)
        console.print(summary_table(summary))
    return summary


def summary_table(summary: dict) -> Table:
    table = Table(title=f"{summary['env']} held-out accuracy (greedy, 95% bootstrap CI)")
    for column in ("model", "accuracy", "95% CI", "n", "mean tokens"):
        table.add_column(column)
    for label in ("eval_before", "eval_after"):
        result = summary.get(label)
        if not result:
            continue
        name = label.removeprefix("eval_")
        rows = [(name, result), *((f"{name} {subset}", part) for subset, part in result.get("subsets", {}).items())]
        for row_label, row in rows:
            low, high = row["avg@n"]["ci95"]
            tokens = f"{row['mean_tokens']:.1f}" if "mean_tokens" in row else ""
            table.add_row(row_label, f"{row['avg@n']['value']:.1%}", f"[{low:.1%}, {high:.1%}]", str(row["questions"]), tokens)
    return table
