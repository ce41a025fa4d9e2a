"""The spike and divergence guard: the median/MAD estimator by hand, the divergence checks on hand-made rows, and
rollbacks through a real trainer on a tiny model (a NaN injected into the weights)."""

from __future__ import annotations

import io
import json
import math

import pytest
import torch
from rich.console import Console

from rlvr.config import GuardConfig, load_config
from rlvr.errors import DivergenceError
from rlvr.guard import Guard, RobustWindow
from rlvr.metrics import MetricsLog
from rlvr.trainer import Trainer

TIMING = ("seconds", "tokens_per_second", "memory/")


def test_median_and_mad_by_hand():
    window = RobustWindow(5)
    for value in [1.0, 2.0, 3.0, 4.0, 5.0]:
        window.push(value)
    assert (window.median(), window.mad()) == (3.0, 1.0)  # |x - 3| = 2, 1, 0, 1, 2
    assert window.excess(9.0, min_history=5) == 6.0 and window.excess(9.0, min_history=6) is None
    window.push(100.0)  # the window slides: 2, 3, 4, 5, 100
    assert (window.median(), window.mad()) == (4.0, 1.0)  # one outlier moves neither
    flat = RobustWindow(4, [2.0, 2.0, 2.0, 2.0])
    assert flat.excess(50.0, min_history=2) is None  # no spread, no scale to judge by


def test_a_spike_in_a_hand_made_grad_norm_series_is_skipped():
    guard = Guard(GuardConfig(window=5, min_history=5, spike_mads=3.0))
    decisions = [guard.spike({"grad_norm": g, "loss": 0.1}) for g in [1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 4.5]]
    # After 1..5 (median 3, MAD 1), 10 is 7 MADs above; then over 2, 3, 4, 5, 10 (median 4, MAD 1) 4.5 is 0.5.
    assert decisions[:5] == [None] * 5 and decisions[6] is None
    assert decisions[5] == "grad_norm 10 is 7.0 MADs above its median 3"
    assert guard.metrics()["guard/skipped"] == 1
    assert guard.spike({"grad_norm": float("nan"), "loss": 0.1}) is None  # a divergence, not a spike


def test_the_default_guard_never_fires_on_recorded_healthy_runs():
    """Grad norms and losses of the default recipe (fp32, 25 steps): its largest excess is 6.9 MADs."""
    grad_norms = [1.532, 1.958, 1.98, 0.769, 2.139, 3.582, 1.745, 2.819, 4.248, 3.162, 1.883, 3.338, 1.879, 0.718, 3.254,
                  2.062, 5.669, 1.555, 3.011, 0.952, 2.648, 1.507, 1.918, 3.057, 3.95]  # fmt: skip
    losses = [-0.0348, 0.0614, 0.1037, -0.0388, -0.0321, 0.144, 0.0275, -0.0279, -0.0317, 0.0, -0.055, 0.0322, 0.0,
              -0.0256, 0.0082, -0.0317, 0.0, 0.0, 0.0047, 0.0, 0.0122, 0.0, 0.0, 0.0429, -0.0162]  # fmt: skip
    guard = Guard(GuardConfig())
    assert all(guard.spike({"grad_norm": g, "loss": loss}) is None for g, loss in zip(grad_norms, losses))


def test_a_loss_near_zero_is_measured_against_a_spread_of_at_least_a_hundredth():
    """Losses of the reasoning recipe (fp32, a sharp cold-started policy): on-policy they sit within 1e-4 of 0, so
    their MAD is ~1e-5, and without the floor the 0.0019 of step 12 read as a 157-MAD spike and skipped its update."""
    losses = [1.02e-05, 2.947e-05, 5.546e-05, 1.957e-05, 3.038e-05, 1.058e-05, -2.15e-07, -0.001229, 5.067e-05,
              1.815e-05, -0.0005719, 0.001939, -0.001848, -0.01435, -0.01365, 0.0012, -0.007894, 2.223e-05]  # fmt: skip
    guard = Guard(GuardConfig())
    assert all(guard.spike({"grad_norm": 1.0 + i % 3 / 10, "loss": loss}) is None for i, loss in enumerate(losses))
    window = RobustWindow(20, losses[:10])
    assert window.excess(0.001939, min_history=8) > 100  # what the bare MAD made of it
    assert window.excess(0.001939, min_history=8, min_spread=0.01) == pytest.approx((0.001939 - window.median()) / 0.01)
    spike = guard.spike({"grad_norm": 1.1, "loss": 0.5})
    assert spike is not None and spike.startswith("loss 0.5 is 50.0 MADs above its median")  # a real one still is


def _row(step: int, reward: float, **extra: float) -> dict:
    return {"step": step, "reward": reward, "loss": 0.0, "grad_norm": 1.0, "guard/nonfinite_weights": 0, **extra}


def test_a_reward_collapse_names_the_first_weights_that_showed_it():
    guard = Guard(GuardConfig(collapse_steps=3, armed_reward=0.05))
    assert guard.check(_row(1, 0.0)) is None and guard.check(_row(2, 0.0)) is None  # not armed: never above 0.05
    assert guard.check(_row(3, 0.2)) is None
    assert [guard.check(_row(step, 0.0)) for step in (4, 5)] == [None, None]
    assert guard.suspect_from() == 3  # weights of 3 updates sampled step 4, the first collapsed one
    verdict = guard.check(_row(6, 0.0))
    assert (verdict.check, verdict.bad_weights) == ("reward_collapse", 3)
    assert "since step 4" in verdict.detail


@pytest.mark.parametrize(
    ("row", "check", "bad_weights"),
    [
        (_row(4, 0.5, **{"guard/nonfinite_weights": 7}), "non_finite_weights", 4),
        (_row(4, 0.5, loss=math.nan), "non_finite_loss", 3),
        (_row(4, 0.5, entropy=9.0), "entropy", 3),
        (_row(4, 0.5, kl=2.0), "kl", 3),
        (_row(4, 0.5, logprob_mismatch=1.5), "logprob_mismatch", 3),
    ],
)
def test_each_divergence_check(row, check, bad_weights):
    verdict = Guard(GuardConfig(max_entropy=5.0, max_kl=1.0)).check(row)
    assert (verdict.check, verdict.bad_weights) == (check, bad_weights)
    assert Guard(GuardConfig(max_entropy=5.0, max_kl=1.0)).check(_row(4, 0.5, entropy=1.0, kl=0.1)) is None


def test_guard_state_round_trips_and_a_rollback_keeps_what_outlives_it():
    guard = Guard(GuardConfig())
    guard.spike({"grad_norm": 2.0, "loss": 0.5})
    saved = guard.state_dict()
    guard.rolled_back()
    guard.state.data_skip = 3
    guard.spike({"grad_norm": 9.0, "loss": 0.5})
    guard.load_state_dict(saved, keep_persistent=True)
    assert guard.state.windows["grad_norm"].values == [2.0]
    assert (guard.state.rollbacks, guard.state.lr_scale, guard.state.data_skip) == (1, 0.1, 3)
    guard.load_state_dict(saved)
    assert (guard.state.rollbacks, guard.state.lr_scale, guard.state.data_skip) == (0, 1.0, 0)


# ---- through the trainer ------------------------------------------------------------------------------------------


def _trainer(tiny_model_dir, out, *overrides: str) -> Trainer:
    settings = [
        f"model.path={tiny_model_dir}",
        "rollout.engine=transformers",
        f"output_dir={out}",
        "train.prompts_per_step=2",
        "train.group_size=4",
        "train.micro_batch_size=8",
        "train.lr=1e-2",
        "train.save_every=1",
        "sampling.max_new_tokens=6",
        "sampling.temperature=1.0",
        "env.eval_size=2",
        "algo.overlong_filter=false",
        "scoring.workers=0",
    ]
    torch.manual_seed(0)
    return Trainer(load_config(None, [*settings, *overrides]))


def _poison_after(trainer: Trainer, updates: set[int], every_time: bool = False) -> list[int]:
    """NaN into a weight right after the update that makes `updates` updates (the first time only, unless
    `every_time`), and record the data position of every step the trainer samples."""
    positions: list[int] = []
    update, problems = trainer.update, trainer.env.train_problems
    poisoned: set[int] = set()

    def poisoning_update(episodes):
        stats = update(episodes)
        done = trainer.step + 1  # inside the step, before `step` counts it
        if done in updates and (every_time or done not in poisoned):
            poisoned.add(done)
            with torch.no_grad():
                trainer.params[0].view(-1)[0] = float("nan")
        return stats

    def train_problems(start: int, count: int):
        positions.append(start)
        return problems(start, count)

    trainer.update, trainer.env.train_problems = poisoning_update, train_problems
    return positions


def _rows(path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in row.items() if not any(t in k for t in TIMING)} for row in rows]


def _log(trainer: Trainer) -> MetricsLog:
    return MetricsLog(trainer.config.run_dir / "metrics.jsonl", Console(file=io.StringIO()))


def test_a_nan_rolls_back_skips_its_data_and_resumes_exactly(tiny_model_dir, tmp_path):
    steps = ("train.steps=4", "train.keep_checkpoints=2")
    whole = _trainer(tiny_model_dir, tmp_path / "whole", *steps)
    positions = _poison_after(whole, {3})
    whole.fit(_log(whole))
    assert all(torch.isfinite(p).all() for p in whole.params)
    rows = _rows(whole.config.run_dir / "metrics.jsonl")
    events = [row for row in rows if "event" in row]
    assert len(events) == 1
    event = events[0]
    assert (event["check"], event["step"], event["diverged_at_step"]) == ("non_finite_weights", 2, 3)
    assert (event["guard/rollbacks"], event["guard/lr_scale"], event["skipped_prompts"]) == (1, 0.1, [4, 6])
    assert [row["step"] for row in rows] == [1, 2, 2, 3, 4]  # step 3's first try is gone; the event sits after 2
    assert rows[-1]["lr"] == pytest.approx(1e-3) and rows[-1]["guard/lr_scale"] == pytest.approx(0.1)
    # Steps 1-3 drew prompts 0-5; after the rollback to step 2 the run goes on from prompt 6: 4-5 never come back.
    assert positions == [0, 2, 4, 6, 8]
    kept = sorted(p.name for p in (whole.config.run_dir / "checkpoints").glob("step-*"))
    assert kept == ["step-000003", "step-000004"]

    # Killed after the redone step 3 (its checkpoint written), then resumed: the same rows, the same weights.
    first = _trainer(tiny_model_dir, tmp_path / "resumed", "train.steps=3", "train.keep_checkpoints=2")
    _poison_after(first, {3})
    first.fit(_log(first))
    resumed = _trainer(tiny_model_dir, tmp_path / "resumed", *steps)
    assert resumed.resume() and resumed.step == 3 and resumed.guard.state.data_skip == 1
    resumed.fit(_log(resumed))
    assert _rows(resumed.config.run_dir / "metrics.jsonl") == rows
    assert all(torch.equal(a, b) for a, b in zip(whole.params, resumed.params))


def test_rollbacks_run_out_with_one_line_naming_the_check(tiny_model_dir, tmp_path):
    trainer = _trainer(tiny_model_dir, tmp_path, "train.steps=1", "train.guard.max_rollbacks=1")
    _poison_after(trainer, {1}, every_time=True)
    with pytest.raises(DivergenceError, match=r"^step 1: non_finite_weights: .*train\.guard\.max_rollbacks=1") as error:
        trainer.fit(None)
    assert "\n" not in str(error.value) and trainer.guard.state.rollbacks == 1


def test_the_default_guard_leaves_a_normal_run_as_it_was(tiny_model_dir, tmp_path):
    """Defaults never fire on a normal tiny run, and the run with them (its step-0 checkpoint included) is the run
    with every part of the guard off, step for step and weight for weight."""
    off = ("train.guard.max_rollbacks=0", "train.guard.spike_mads=null", "train.guard.collapse_steps=0")
    runs = [_trainer(tiny_model_dir, tmp_path / name, "train.steps=3", *extra) for name, extra in [("on", ()), ("off", off)]]
    for trainer in runs:
        trainer.fit(_log(trainer))
    on, plain = (_rows(trainer.config.run_dir / "metrics.jsonl") for trainer in runs)
    assert on == plain and all(row["guard/skipped"] == 0 and row["guard/rollbacks"] == 0 for row in on)
    assert all(torch.equal(a, b) for a, b in zip(runs[0].params, runs[1].params))
