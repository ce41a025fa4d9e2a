"""Experiment trackers (`report_to`): each gets the resolved config once and every metrics.jsonl row as it was
written, at its step, so what a dashboard shows is what the run folder holds.

A backend imports its library only when a run asks for it; `check_installed` turns a missing one into a one-line
error before anything loads. Trackers that take only numbers (tensorboard, mlflow, trackio) skip the other values
of a row (strings, None, lists such as `warnings`); wandb takes every JSON value. `step` is the axis every tracker
logs a row at, not a value of its own.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import yaml

from rlvr.errors import ConfigError
from rlvr.registry import Registry

log = logging.getLogger("rlvr")

Row = Mapping[str, Any]


@dataclass(frozen=True)
class TrackedRun:
    """What a tracker starts with."""

    name: str
    run_dir: Path
    config: dict[str, Any]  # the resolved config, as config.yaml holds it (JSON values)
    first_step: int = 1  # the first step this process logs: after a resume, the one after the checkpoint

    @property
    def resumed(self) -> bool:
        return self.first_step > 1

    @property
    def _ids(self) -> Path:
        return self.run_dir / "trackers.json"

    def saved_id(self, tracker: str) -> str | None:
        """The id a tracker's service gave this run before a resume (so the resumed process continues that run)."""
        return json.loads(self._ids.read_text()).get(tracker) if self.resumed and self._ids.exists() else None

    def save_id(self, tracker: str, run_id: str) -> None:
        ids = json.loads(self._ids.read_text()) if self._ids.exists() else {}
        self._ids.write_text(json.dumps({**ids, tracker: run_id}, indent=2) + "\n")


class Tracker(Protocol):
    def log(self, step: int, row: Row) -> None: ...

    def finish(self, failed: bool) -> None: ...


@dataclass(frozen=True)
class Backend:
    """A tracker's constructor and the library it needs: `module` to import, `package` to pip install."""

    start: Callable[[TrackedRun], Tracker]
    module: str
    package: str

    def __call__(self, run: TrackedRun) -> Tracker:
        return self.start(run)

    def installed(self) -> bool:
        # A module already imported counts even without a spec (e.g. a stand-in placed in sys.modules).
        return sys.modules.get(self.module) is not None or importlib.util.find_spec(self.module) is not None


TRACKERS: Registry[Backend] = Registry("tracker")


def tracker(name: str, module: str, package: str | None = None) -> Callable[[Callable[[TrackedRun], Tracker]], Any]:
    def add(start: Callable[[TrackedRun], Tracker]) -> Callable[[TrackedRun], Tracker]:
        TRACKERS.register(name)(Backend(start, module, package or module))
        return start

    return add


def check_installed(names: Sequence[str]) -> None:
    for name in names:
        backend = TRACKERS[name]
        if not backend.installed():
            raise ConfigError(f"report_to: {name} needs the {backend.package} package: pip install {backend.package}")


def values(row: Row) -> dict[str, Any]:
    return {key: value for key, value in row.items() if key != "step"}


def scalars(row: Row) -> dict[str, float]:
    """The numbers of a row (a bool counts as 0 or 1), for the trackers that take nothing else."""
    return {key: float(value) for key, value in values(row).items() if isinstance(value, int | float)}


def flat_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, str | int | float | bool]:
    """`a.b.c: value` for every leaf, for hyperparameter tables that take no nesting; lists and None as JSON text."""
    flat: dict[str, str | int | float | bool] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            flat.update(flat_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value if isinstance(value, str | int | float | bool) else json.dumps(value)
    return flat


class Trackers:
    """The trackers a run reports to, as one: started together on entry, finished together on exit however the run
    ends (a failed run is marked failed where the tracker knows the notion)."""

    def __init__(self, names: Sequence[str], run: TrackedRun) -> None:
        self.names, self.run = list(names), run
        self.started: list[tuple[str, Tracker]] = []

    def __enter__(self) -> Trackers:
        try:
            for name in self.names:
                self.started.append((name, TRACKERS[name](self.run)))
        except BaseException as error:
            self.__exit__(type(error), error, error.__traceback__)
            raise
        return self

    def log(self, step: int, row: Row) -> None:
        for _, started in self.started:
            started.log(step, row)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        for name, started in reversed(self.started):
            try:
                started.finish(failed=kind is not None)
            except Exception as failure:  # metrics.jsonl is complete either way: a tracker that fails to close is a warning
                log.warning("report_to: %s did not finish cleanly: %s", name, failure)
        self.started.clear()


@tracker("tensorboard", module="tensorboard")
class TensorBoard:
    """Event files under `<run_dir>/tensorboard`; the config as hyperparameters and as YAML text."""

    def __init__(self, run: TrackedRun) -> None:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        # purge_step: TensorBoard hides what a killed process logged after the checkpoint a resume redoes.
        self.writer = SummaryWriter(str(run.run_dir / "tensorboard"), purge_step=run.first_step)
        if not run.resumed:
            for summary in hparams(flat_config(run.config), {}):
                self.writer.file_writer.add_summary(summary)
            self.writer.add_text("config", f"```yaml\n{yaml.safe_dump(run.config, sort_keys=False)}```", global_step=0)
            self.writer.flush()

    def log(self, step: int, row: Row) -> None:
        for key, value in scalars(row).items():
            self.writer.add_scalar(key, value, global_step=step)
        self.writer.flush()  # like metrics.jsonl's line: a killed run keeps every step it finished

    def finish(self, failed: bool) -> None:
        self.writer.close()


@tracker("wandb", module="wandb")
class Wandb:
    """A wandb run in `<run_dir>/wandb`, in the mode WANDB_MODE says (offline: nothing is sent; disabled: nothing is
    written). A resume continues the same run; wandb ignores a step it already has, so steps a killed process logged
    after its checkpoint keep their first values."""

    def __init__(self, run: TrackedRun) -> None:
        import wandb

        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "rlvr"),
            name=run.name,
            dir=str(run.run_dir),
            config=run.config,
            id=run.saved_id("wandb"),
            resume="allow",
            mode=os.environ.get("WANDB_MODE"),  # None: wandb's own default (its settings, else online)
        )
        run.save_id("wandb", self.run.id)

    def log(self, step: int, row: Row) -> None:
        self.run.log(values(row), step=step)

    def finish(self, failed: bool) -> None:
        self.run.finish(exit_code=1 if failed else 0)


@tracker("mlflow", module="mlflow")
class MLflow:
    """An MLflow run in `<run_dir>/mlruns` unless MLFLOW_TRACKING_URI names a server or store; the config as
    params. A resume continues the same run."""

    def __init__(self, run: TrackedRun) -> None:
        import mlflow

        self.mlflow = mlflow
        mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI") or (run.run_dir / "mlruns").resolve().as_uri())
        mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", "rlvr"))
        saved = run.saved_id("mlflow")
        active = mlflow.start_run(run_id=saved, run_name=None if saved else run.name)
        run.save_id("mlflow", active.info.run_id)
        if saved is None:
            mlflow.log_params(flat_config(run.config))

    def log(self, step: int, row: Row) -> None:
        self.mlflow.log_metrics(scalars(row), step=step)

    def finish(self, failed: bool) -> None:
        self.mlflow.end_run(status="FAILED" if failed else "FINISHED")


@tracker("trackio", module="trackio")
class Trackio:
    """A trackio run, local (trackio's own folder) unless TRACKIO_SPACE_ID names a Space; a resume continues it."""

    def __init__(self, run: TrackedRun) -> None:
        import trackio

        self.trackio = trackio
        trackio.init(
            project=os.environ.get("TRACKIO_PROJECT", "rlvr"),
            name=run.name,
            config=run.config,
            resume="allow" if run.resumed else "never",
        )

    def log(self, step: int, row: Row) -> None:
        self.trackio.log(scalars(row), step=step)

    def finish(self, failed: bool) -> None:
        self.trackio.finish()
