"""metrics.jsonl (one line per step) and the live progress bar."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from rlvr.step_metrics import call_rates
from rlvr.trackers import Tracker


class MetricsLog:
    def __init__(self, path: Path, console: Console | None = None, tracker: Tracker | None = None) -> None:
        self.path = path
        self.console = console or Console(stderr=True)
        self.tracker = tracker  # gets every row as written (report_to)
        path.parent.mkdir(parents=True, exist_ok=True)

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        text = self.path.read_text()
        if not text.endswith("\n"):  # a kill during the last write: that step's checkpoint was never written either
            text = text[: text.rfind("\n") + 1]
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def truncate_after(self, step: int) -> None:
        """Forget lines of steps after `step` (they are redone after a resume)."""
        kept = [row for row in self.read() if row["step"] <= step]
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text("".join(json.dumps(row) + "\n" for row in kept))
        tmp.replace(self.path)

    def write(self, metrics: dict) -> None:
        line = json.dumps(metrics)
        with open(self.path, "a") as handle:
            handle.write(line + "\n")
            handle.flush()
        if self.tracker is not None:  # the line read back: trackers log exactly the file's values, not the live objects
            row = json.loads(line)
            self.tracker.log(row["step"], row)

    def event(self, row: dict, message: str) -> None:
        """A line that is not a step's metrics (`row["event"]` says what happened), and its console line."""
        self.write(row)
        self.console.print(f"[red]{row['event']}:[/red] {message.removeprefix(row['event'] + ': ')}", highlight=False)

    @contextmanager
    def progress(self, total: int, completed: int = 0) -> Iterator[StepProgress]:
        columns = (
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[headline]}  {task.fields[tps]:.0f} tok/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("[yellow]{task.fields[notice]}"),
        )
        with Progress(*columns, console=self.console) as bar:
            task = bar.add_task("train", total=total, completed=completed, headline="", tps=0.0, notice="")
            yield StepProgress(bar, task)


def headline_of(metrics: dict) -> str:
    """What a step is judged by: reward and accuracy in RL, the loss in supervised fine-tuning."""
    if "reward" in metrics:
        return f"reward {metrics['reward']:.3f}  acc {metrics['accuracy']:.3f}"
    return f"loss {metrics['loss']:.4f}"


class StepProgress:
    def __init__(self, bar: Progress, task) -> None:
        self.bar, self.task = bar, task

    def rewind(self, completed: int) -> None:
        """Back to `completed` steps (a rollback)."""
        self.bar.update(self.task, completed=completed)

    def advance(self, metrics: dict, notice: str = "") -> None:
        """One finished step; `notice` stays on the bar (e.g. a tool-use collapse) until replaced."""
        headline = headline_of(metrics)
        self.bar.update(self.task, advance=1, headline=headline, tps=metrics["tokens_per_second"], notice=notice)
        tools = "".join(f"  {tool} {rate:.2f}" for tool, rate in call_rates(metrics).items())
        level = f"  difficulty {metrics['curriculum/difficulty']:g}" if "curriculum/difficulty" in metrics else ""
        lag = ""
        if "async/staleness_mean" in metrics:  # asynchronous: how old the samples were, and who waited for whom
            idle = metrics["async/learner_idle_fraction"], metrics["async/rollout_idle_fraction"]
            lag = f"  stale {metrics['async/staleness_mean']:.1f} (max {metrics['async/staleness_max']:.0f})"
            lag += f"  idle learner {idle[0]:.0%} rollout {idle[1]:.0%}"
        self.bar.console.print(
            f"step {metrics['step']:>4}  {headline}  len {metrics['response_length']:.1f}{tools}{level}{lag}  "
            f"{metrics['tokens_per_second']:.0f} tok/s  {metrics['step_seconds']:.1f} s"
        )
        for line in metrics.get("notices", []):
            logging.getLogger("rlvr").info(line)
            self.bar.console.print(f"[cyan]{line}[/cyan]")
        for warning in metrics.get("warnings", []):
            logging.getLogger("rlvr").warning(warning)
            self.bar.console.print(f"[yellow]warning:[/yellow] {warning}")
