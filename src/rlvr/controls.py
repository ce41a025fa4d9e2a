"""`rlvr controls RECIPE`: is a gain real? The recipe trained with its own reward and with two controls.

RL can lift held-out accuracy without learning from the reward's signal: the update sharpens what the model
already prefers, and the answer format alone lifts what a verifier can read. Each control keeps everything of
the recipe (model, data, steps, seed, algorithm) and changes only what the reward pays for; accuracy is measured
the same way in all three, by the task's own verifier:

| control | reward |
| --- | --- |
| `real` | the recipe's own |
| `random` | a coin flip per completion (`rewards.controls.random`), unrelated to correctness |
| `format_only` | 1 for a well-formed answer line, whatever it says |

A gain is real when the real run's held-out accuracy beats both controls on the same questions: each control is
compared with the real run by a paired bootstrap interval (`eval.compare.paired_accuracy`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from rich.console import Console
from rich.table import Table

from rlvr.api import train
from rlvr.config import RunConfig, load_config
from rlvr.eval.compare import paired_accuracy, sample_accuracy

# control -> the overrides that make it (after the recipe's and the user's own). Only the reward changes.
CONTROLS: dict[str, tuple[str, ...]] = {
    "real": (),
    "random": ("env.correct_weight=0", "env.format_reward=0", "env.rewards={random: 1.0}"),
    "format_only": ("env.correct_weight=0", "env.format_reward=1.0", "env.rewards={}"),
}


@dataclass(frozen=True)
class ControlResult:
    """One control's held-out accuracy after training, and (for a control) its difference from the real run."""

    control: str
    run: str
    accuracy: float
    ci95: tuple[float, float]
    questions: int
    # This control's accuracy minus the real run's, paired on the distinct questions both answered (a question the
    # held-out split draws twice counts once: its two answers are not independent evidence).
    minus_real: float | None = None
    minus_real_ci95: tuple[float, float] | None = None
    p_value: float | None = None
    paired_questions: int | None = None


def control_configs(recipe: str | None, overrides: Sequence[str], plugins: Sequence[str]) -> dict[str, RunConfig]:
    """The three runs: `<name>-real`, `<name>-random`, `<name>-format_only`. The controls skip the evaluation
    before training: it is the real run's (the same model on the same questions)."""
    base = load_config(recipe, list(overrides), plugins)
    configs = {}
    for control, changes in CONTROLS.items():
        before = () if control == "real" else ("eval.before=false",)
        configs[control] = load_config(
            recipe, [*overrides, *changes, *before, f"name={base.name}-{control}", "eval.after=true"], plugins
        )
    return configs


def _finished(config: RunConfig) -> bool:
    return (config.run_dir / "summary.json").exists() and (config.run_dir / "eval_after.samples.jsonl").exists()


def run_controls(
    recipe: str | None,
    overrides: Sequence[str] = (),
    plugins: Sequence[str] = (),
    overwrite: bool = False,
    console: Console | None = None,
) -> list[ControlResult]:
    """Train the recipe and its controls (a run already finished is kept, unless `overwrite`), then compare them;
    writes `<output_dir>/<name>-controls.json` and returns the table's rows."""
    console = console or Console(stderr=True)
    configs = control_configs(recipe, overrides, plugins)
    for control, config in configs.items():
        if _finished(config) and not overwrite:
            console.print(f"{control}: {config.run_dir} is finished, kept (--overwrite trains it again)")
            continue
        console.print(f"[bold]{control}[/bold]: training {config.run_dir}")
        train(config, overwrite=True, console=console)
    accuracy = {
        control: sample_accuracy(config.run_dir / "eval_after.json", config.run_dir / "eval_after.samples.jsonl")
        for control, config in configs.items()
    }
    results = []
    for control, config in configs.items():
        summary = json.loads((config.run_dir / "eval_after.json").read_text())
        low, high = summary["avg@n"]["ci95"]
        row = ControlResult(control, str(config.run_dir), summary["avg@n"]["value"], (low, high), summary["questions"])
        if control != "real":
            paired = paired_accuracy(accuracy["real"], accuracy[control], ("real", control), seed=config.seed)
            row = replace(
                row,
                minus_real=paired["difference"],
                minus_real_ci95=tuple(paired["ci95"]),
                p_value=paired["p_value"],
                paired_questions=paired["questions"],
            )
        results.append(row)
    out = Path(configs["real"].output_dir) / f"{configs['real'].name.removesuffix('-real')}-controls.json"
    out.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    console.print(controls_table(results))
    console.print(f"wrote {out}")
    return results


def controls_table(results: Sequence[ControlResult]) -> Table:
    table = Table(title="held-out accuracy after training: the real reward against its controls (95% CIs)")
    for column in ("reward", "accuracy", "95% CI", "n", "minus real (paired)", "distinct questions", "p"):
        table.add_column(column)
    for r in results:
        difference = ""
        if r.minus_real is not None and r.minus_real_ci95 is not None:
            difference = f"{r.minus_real:+.1%} [{r.minus_real_ci95[0]:+.1%}, {r.minus_real_ci95[1]:+.1%}]"
        p = "" if r.p_value is None else f"{r.p_value:.3f}" if r.p_value >= 0.001 else "< 0.001"  # a bootstrap's floor
        paired = "" if r.paired_questions is None else str(r.paired_questions)
        interval = f"[{r.ci95[0]:.1%}, {r.ci95[1]:.1%}]"
        table.add_row(r.control, f"{r.accuracy:.1%}", interval, str(r.questions), difference, paired, p)
    return table
