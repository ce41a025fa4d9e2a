"""The guard's rollback on 2 gloo ranks when only one of them holds the NaN: both roll back together, to the
checkpoint one rank would, and end where one rank ends (tests/scripts/ranked_rollback.py runs it)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

from ranks import assert_same_weights, errors, finish, one_rank_here, running, start

TIMEOUT = 240  # seconds per launch: a rank left waiting for the other fails the test instead of hanging it


@pytest.fixture(scope="module")
def runs(tiny_model_dir, tmp_path_factory) -> dict[int, dict[str, Any]]:
    folder = tmp_path_factory.mktemp("rollback")
    data = folder / "problems.jsonl"
    data.write_text("".join(json.dumps({"question": f"What is {i} plus {i}?", "answer": str(2 * i)}) + "\n" for i in range(60)))
    args = {nproc: (str(tiny_model_dir), str(data), str(folder / f"run{nproc}"), str(folder / f"{nproc}.pt")) for nproc in (1, 2)}
    with running(start(2, "ranked_rollback.py", *args[2])) as launch:  # the 2 ranks, beside the 1-rank reference here
        one_rank_here("ranked_rollback.py", *args[1])
        done = finish(launch, TIMEOUT)
    assert done.returncode == 0, f"2 ranks: {errors(done.stderr)}"
    return {nproc: torch.load(folder / f"{nproc}.pt", weights_only=False) for nproc in (1, 2)}


def _events(rows: list[dict]) -> list[dict]:
    return [row for row in rows if "event" in row]


def test_one_rank_rolls_back_as_test_guard_expects(runs):
    """The reference: the single-process rollback tests/test_guard.py checks, at 4 prompts a step."""
    one = runs[1]
    assert one["local_bad"] == [[1]]
    (event,) = _events(one["whole"]["rows"])
    assert (event["check"], event["step"], event["diverged_at_step"], event["skipped_prompts"]) == (
        "non_finite_weights",
        2,
        3,
        [8, 12],
    )
    assert [row["step"] for row in one["whole"]["rows"]] == [1, 2, 2, 3, 4]
    assert one["whole"]["positions"] == [0, 4, 8, 12, 16]  # prompts 8-11, step 3's first try, never come back


def test_a_nan_on_one_rank_rolls_both_back_to_where_one_rank_goes(runs):
    one, two = runs[1]["whole"], runs[2]["whole"]
    # The hard case: only the last rank's shard held the NaN; rank 0's own weights were finite.
    assert runs[2]["local_bad"] == [[0, 1]]
    events = _events(two["rows"])
    assert len(events) == 1
    keys = ("check", "detail", "step", "diverged_at_step", "skipped_prompts", "guard/rollbacks", "guard/lr_scale")
    assert {k: events[0][k] for k in keys} == {k: _events(one["rows"])[0][k] for k in keys}
    assert [row["step"] for row in two["rows"]] == [row["step"] for row in one["rows"]]  # written once, by rank 0
    assert two["positions"] == one["positions"]  # rank 0's draws; the data skip is the same on both ranks
    for row_one, row_two in zip(one["rows"], two["rows"], strict=True):
        for key in ("loss", "grad_norm", "lr", "guard/nonfinite_weights", "episodes_trained"):
            if key in row_one:
                assert row_two[key] == pytest.approx(row_one[key], rel=1e-5, abs=1e-7), (row_one["step"], key)
    # Checkpoints are written whole once (no stray partial folder), kept and pruned as on one rank.
    assert two["checkpoints"] == one["checkpoints"] == ["latest", "step-000003", "step-000004"]
    assert all(torch.isfinite(weight).all() for weight in two["weights"].values())
    assert_same_weights(one["weights"], two["weights"])


def test_the_weights_moved_beyond_the_tolerance(runs):
    """Otherwise final weights equal to the start's (an update that did nothing) would pass the comparison too."""
    one = runs[1]
    assert max((one["whole"]["weights"][name] - one["start"][name]).abs().max().item() for name in one["start"]) > 1e-4


@pytest.mark.parametrize("nproc", [1, 2])
def test_a_resume_after_the_rollback_reproduces_the_run(runs, nproc):
    run = runs[nproc]
    step, data_skip, rollbacks, lr_scale = run["resumed_from"]
    assert (step, data_skip, rollbacks, lr_scale) == (3, 1, 1, pytest.approx(0.1))
    assert run["resumed"]["rows"] == run["whole"]["rows"]
    assert run["resumed"]["positions"] == run["whole"]["positions"][-1:]  # step 4 only, from prompt 16
    for name, weight in run["whole"]["weights"].items():
        assert torch.equal(run["resumed"]["weights"][name], weight), name
