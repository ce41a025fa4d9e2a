"""The guard's rollback on 2 gloo ranks when only one of them holds the NaN: both roll back together, to the
checkpoint one rank would, and end where one rank ends (tests/scripts/ranked_rollback.py runs it)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

SCRIPT = Path(__file__).parent / "scripts" / "ranked_rollback.py"
TIMEOUT = 240  # seconds per launch: a rank left waiting for the other fails the test instead of hanging it


def _launch(nproc: int, *args: str) -> subprocess.CompletedProcess:
    """The script alone (1 rank) or under torchrun; on a timeout the whole process group is killed, torchrun's
    workers included, so no rank outlives the test."""
    command = [sys.executable, str(SCRIPT), *args]
    if nproc > 1:
        command[1:1] = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    pipe = subprocess.PIPE
    process = subprocess.Popen(command, stdout=pipe, stderr=pipe, text=True, env=env, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"{nproc} ranks did not finish within {TIMEOUT} s (a rank stuck waiting?):\n{_errors(stderr)}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _errors(stderr: str) -> str:
    """stderr without torchrun's own warning lines (`W1201 12:59:48 ...`) and progress bars."""
    lines = [line for line in stderr.splitlines() if not re.match(r"[WI]\d{4} |Writing model|Loading weights", line)]
    return "\n".join(lines)[-4000:]


@pytest.fixture(scope="module")
def runs(tiny_model_dir, tmp_path_factory) -> dict[int, dict[str, Any]]:
    folder = tmp_path_factory.mktemp("rollback")
    data = folder / "problems.jsonl"
    data.write_text("".join(json.dumps({"question": f"What is {i} plus {i}?", "answer": str(2 * i)}) + "\n" for i in range(60)))
    results = {}
    for nproc in (1, 2):
        out = folder / f"{nproc}.pt"
        done = _launch(nproc, str(tiny_model_dir), str(data), str(folder / f"run{nproc}"), str(out))
        assert done.returncode == 0, f"{nproc} ranks: {_errors(done.stderr)}"
        results[nproc] = torch.load(out, weights_only=False)
    return results


def _events(rows: list[dict]) -> list[dict]:
    return [row for row in rows if "event" in row]


def _assert_close_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """1 vs 2 ranks: equal to fp32 noise, the tolerance tests/test_distributed.py uses."""
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-5, msg=name)


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
    _assert_close_weights(one["weights"], two["weights"])


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
