"""Experiment trackers (`report_to`) log exactly what metrics.jsonl holds, at its steps, plus the resolved config."""

from __future__ import annotations

import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import yaml

from rlvr.config import ConfigError, load_config
from rlvr.metrics import MetricsLog
from rlvr.run import train
from rlvr.trackers import TrackedRun, Trackers, flat_config, scalars, values

pytest.importorskip("tensorboard", reason="the tensorboard test reads event files with tensorboard (the test extra)")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.plugins.hparams import plugin_data_pb2  # noqa: E402


def _events(folder: Path) -> EventAccumulator:
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events


def _assert_logged(events: EventAccumulator, rows: list[dict]) -> None:
    """Every number of every row at its step, and nothing else (float32: what an event file stores)."""
    expected = {key for row in rows for key in scalars(row)}
    assert set(events.Tags()["scalars"]) == expected
    for key in expected:
        logged = [(event.step, event.value) for event in events.Scalars(key)]  # a list: a step logged twice would show
        wanted = [(row["step"], float(np.float32(row[key]))) for row in rows if key in scalars(row)]
        assert [step for step, _ in logged] == [step for step, _ in wanted], key
        for (step, got), (_, value) in zip(logged, wanted):
            assert got == value or (math.isnan(value) and math.isnan(got)), (key, step)


def test_tensorboard_logs_every_metrics_row_and_the_config(tiny_model_dir, tmp_path):
    settings = {
        "name": "tb",
        "output_dir": str(tmp_path),
        "model.path": str(tiny_model_dir),
        "rollout.engine": "transformers",  # a tiny random model: vLLM has no kernels for its head size
        "report_to": "[tensorboard]",
        "seed": 0,
        "train.steps": 3,
        "train.prompts_per_step": 2,
        "train.group_size": 4,
        "train.micro_batch_size": 8,
        "train.lr": 1e-3,
        "sampling.max_new_tokens": 8,
        "sampling.temperature": 1.0,
        "scoring.workers": 0,
        "env.eval_size": 2,
        "eval.before": False,
        "eval.after": False,
    }
    train(load_config(None, [f"{key}={value}" for key, value in settings.items()]))
    run_dir = tmp_path / "tb"
    rows = MetricsLog(run_dir / "metrics.jsonl").read()
    assert [row["step"] for row in rows] == [1, 2, 3]
    events = _events(run_dir / "tensorboard")
    _assert_logged(events, rows)

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert yaml.safe_load(text.removeprefix("```yaml\n").removesuffix("```")) == config
    start = plugin_data_pb2.HParamsPluginData.FromString(events.PluginTagToContent("hparams")["_hparams_/session_start_info"])
    hparams = {key: value.string_value or value.number_value for key, value in start.session_start_info.hparams.items()}
    assert hparams["train.steps"] == 3 and hparams["report_to"] == '["tensorboard"]' and hparams["env.name"] == "gym"
    assert hparams.keys() == flat_config(config).keys()


def _rows(first: int, last: int, offset: float = 0.0) -> list[dict]:
    """Rows like the trainer's, with the values only some trackers take: a string, None, a list, a bool."""
    return [
        {"step": step, "reward": 0.5 + offset + step / 8, "accuracy": step / 4, "episodes_trained": 8, "lr_warm": True}
        | {"warnings": ["tool-use collapse"], "subset": "a", "kl": None}
        for step in range(first, last + 1)
    ]


def _tracked(run_dir: Path, first_step: int = 1) -> TrackedRun:
    run_dir.mkdir(parents=True, exist_ok=True)
    return TrackedRun("run", run_dir, {"name": "run", "train": {"steps": 4, "betas": [0.9, 0.99]}}, first_step)


def _log(names: list[str], run: TrackedRun, rows: list[dict]) -> list[dict]:
    """Rows written through MetricsLog, as the trainer writes them, and what metrics.jsonl holds afterwards."""
    log = MetricsLog(run.run_dir / "metrics.jsonl")
    log.truncate_after(run.first_step - 1)
    with Trackers(names, run) as trackers:
        log.tracker = trackers
        for row in rows:
            log.write(row)
    return log.read()


def test_a_resumed_run_replaces_the_steps_it_redoes_in_tensorboard(tmp_path):
    """Killed after step 4 with its checkpoint at step 2: the resumed process logs 3 and 4 again, and TensorBoard
    shows those, not the ones the killed process logged."""
    _log(["tensorboard"], _tracked(tmp_path), _rows(1, 4))
    rows = _log(["tensorboard"], _tracked(tmp_path, first_step=3), _rows(3, 4, offset=1.0))
    assert [row["step"] for row in rows] == [1, 2, 3, 4] and rows[2]["reward"] == 1.5 + 3 / 8
    _assert_logged(_events(tmp_path / "tensorboard"), rows)


class FakeLibrary(types.ModuleType):
    """A tracker's library stand-in that records every call; its run objects are itself (with an id)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.calls: list[tuple[str, tuple, dict]] = []
        self.id = "run-7"
        self.info = types.SimpleNamespace(run_id="run-7")

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)

        def call(*args, **kwargs):
            self.calls.append((attr, args, kwargs))
            return self

        return call

    def called(self, attr: str) -> list[tuple[tuple, dict]]:
        return [(args, kwargs) for name, args, kwargs in self.calls if name == attr]


@pytest.fixture
def fake(monkeypatch, request):
    library = FakeLibrary(request.param)
    monkeypatch.setitem(sys.modules, request.param, library)
    for variable in ("WANDB_MODE", "WANDB_PROJECT", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "TRACKIO_PROJECT"):
        monkeypatch.delenv(variable, raising=False)
    return library


@pytest.mark.parametrize("fake", ["wandb"], indirect=True)
def test_wandb_gets_every_value_offline_and_resumes_its_run(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    run = _tracked(tmp_path)
    rows = _log(["wandb"], run, _rows(1, 2))
    ((_, init),) = fake.called("init")
    assert init["mode"] == "offline" and init["dir"] == str(tmp_path) and init["config"] == run.config and init["id"] is None
    assert fake.called("log") == [((values(row),), {"step": row["step"]}) for row in rows]
    assert fake.called("finish") == [((), {"exit_code": 0})]

    fake.calls.clear()
    with pytest.raises(RuntimeError), Trackers(["wandb"], _tracked(tmp_path, first_step=2)):
        raise RuntimeError("the run fails")
    ((_, init),) = fake.called("init")
    assert init["id"] == "run-7" and init["resume"] == "allow"  # the same run, continued
    assert fake.called("finish") == [((), {"exit_code": 1})]  # closed, and marked failed


@pytest.mark.parametrize("fake", ["mlflow"], indirect=True)
def test_mlflow_gets_the_numbers_in_the_run_folder(fake, tmp_path):
    rows = _log(["mlflow"], _tracked(tmp_path), _rows(1, 2))
    assert fake.called("set_tracking_uri") == [(((tmp_path / "mlruns").resolve().as_uri(),), {})]
    assert fake.called("log_params") == [(({"name": "run", "train.steps": 4, "train.betas": "[0.9, 0.99]"},), {})]
    assert fake.called("log_metrics") == [((scalars(row),), {"step": row["step"]}) for row in rows]
    assert scalars(rows[0]) == {"reward": 0.625, "accuracy": 0.25, "episodes_trained": 8.0, "lr_warm": 1.0}
    assert fake.called("end_run") == [((), {"status": "FINISHED"})]


@pytest.mark.parametrize("fake", ["trackio"], indirect=True)
def test_trackio_gets_the_numbers_locally(fake, tmp_path):
    run = _tracked(tmp_path)
    rows = _log(["trackio"], run, _rows(1, 2))
    ((_, init),) = fake.called("init")
    assert "space_id" not in init and init["config"] == run.config and init["resume"] == "never"
    assert fake.called("log") == [((scalars(row),), {"step": row["step"]}) for row in rows]
    assert len(fake.called("finish")) == 1


def test_a_tracker_that_is_not_installed_stops_the_run_before_it_starts(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # not importable, whatever is installed
    config = load_config(None, [f"output_dir={tmp_path}", "report_to=[tensorboard, wandb]", "model.path=/no/such/model"])
    with pytest.raises(ConfigError) as error:
        train(config)
    assert str(error.value) == "report_to: wandb needs the wandb package: pip install wandb"
    assert not list(tmp_path.iterdir())


def test_an_unknown_tracker_is_a_config_error_naming_the_choices():
    with pytest.raises(ConfigError) as error:
        load_config(None, ["report_to=[tensorbord]"])
    assert "report_to.0: unknown tracker 'tensorbord' (choices: mlflow, tensorboard, trackio, wandb)" in str(error.value)
