"""Several learner processes on gloo: the same update as one process, checkpoints across rank counts, a hung rank
named within its timeout, and `rlvr train --nproc 2` end to end."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys

import pytest
import torch

from ranks import assert_same_weights, errors, finish, one_rank_here, running, start, start_steps, wait_for


@pytest.fixture(scope="module")
def runs(tiny_model_dir, tmp_path_factory) -> dict[str, dict]:
    """Two updates (a checkpoint between them) on one rank and on two, and each checkpoint resumed on the other
    number of ranks."""
    folder = tmp_path_factory.mktemp("ranks")
    model, one_checkpoint, two_checkpoint = str(tiny_model_dir), str(folder / "one.pt.run"), str(folder / "two.pt.run")
    one_ready = folder / "one.ready"
    # One 2-rank launch runs two steps, while this process runs the 1-rank ones beside it: the two runs, then each
    # one's checkpoint resumed on the other number of ranks (each side waits for the other's checkpoint).
    steps = (
        ["ranked_update.py", model, str(folder / "two.pt"), "run"],
        ["--after", str(one_ready), "ranked_update.py", model, str(folder / "one_resumed_on_two.pt"), "resume", one_checkpoint],
    )
    with running(start_steps(2, *steps)) as launch:
        one_rank_here("ranked_update.py", model, str(folder / "one.pt"), "run")
        one_ready.touch()
        wait_for(folder / "two.pt", launch)  # written after two.pt.run's checkpoint
        one_rank_here("ranked_update.py", model, str(folder / "two_resumed_on_one.pt"), "resume", two_checkpoint)
        done = finish(launch, 300)
    assert done.returncode == 0, f"2 ranks: {errors(done.stderr)}"
    names = ("one", "two", "one_resumed_on_two", "two_resumed_on_one")
    return {name: torch.load(folder / f"{name}.pt", weights_only=False) for name in names}


def test_two_ranks_make_the_update_of_one(runs):
    one, two = runs["one"], runs["two"]
    for step_one, step_two in zip(one["metrics"], two["metrics"], strict=True):
        for key in ("loss", "grad_norm", "entropy", "ratio"):
            if key in step_one:
                assert step_two[key] == pytest.approx(step_one[key], rel=1e-5, abs=1e-7), key
    assert_same_weights(one["weights"], two["weights"])
    # and the weights moved by far more than the tolerance: an update that did nothing would pass the comparison too
    moved = max((one["weights"][name] - one["start"][name]).abs().max().item() for name in one["weights"])
    assert moved > 1e-4


def test_a_checkpoint_resumes_on_another_number_of_ranks(runs):
    assert_same_weights(runs["two_resumed_on_one"]["weights"], runs["one"]["weights"])
    assert_same_weights(runs["one_resumed_on_two"]["weights"], runs["one"]["weights"])
    for resumed in ("two_resumed_on_one", "one_resumed_on_two"):
        moments = runs[resumed]["moments"]
        for name, state in runs["one"]["moments"].items():
            torch.testing.assert_close(moments[name]["exp_avg_sq"], state["exp_avg_sq"], rtol=1e-5, atol=1e-9)
        assert runs[resumed]["metrics"][0]["loss"] == pytest.approx(runs["one"]["metrics"][1]["loss"], rel=1e-5)


def test_a_rank_that_hangs_is_named_within_the_timeout():
    done = finish(start(2, "rank_hangs.py"), 60)
    assert done.returncode != 0
    assert "not every rank reached 'step 1: rollouts' within 3 s" in done.stderr
    assert "Rank 1" in done.stderr or "rank 1" in done.stderr.lower()


def test_rlvr_train_nproc_2_end_to_end(tiny_model_dir, tmp_path):
    """Full fine-tuning and LoRA, each `rlvr train --nproc 2` launched at once: one run's start-up and waits overlap
    the other's work."""
    launches = {}
    for lora_rank in (0, 4):
        settings = {
            "model.lora.rank": lora_rank,
            "name": "ranks",
            "output_dir": str(tmp_path / f"lora{lora_rank}"),
            "model.path": str(tiny_model_dir),
            "rollout.engine": "transformers",
            "scoring.workers": 0,
            "train.steps": 3,
            "train.save_every": 2,
            "train.prompts_per_step": 3,  # 2 prompts on rank 0, 1 on rank 1
            "train.group_size": 4,
            "sampling.max_new_tokens": 12,
            "env.eval_size": 4,
            "eval.before": False,
        }
        args = [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]
        command = [sys.executable, "-m", "rlvr", "train", *args, "--nproc", "2"]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        pipe = subprocess.PIPE
        # In a process group of its own, with its ranks: killed whole if the test fails or times out.
        launches[lora_rank] = subprocess.Popen(command, stdout=pipe, stderr=pipe, text=True, env=env, start_new_session=True)
    with contextlib.ExitStack() as stack:
        for process in launches.values():
            stack.enter_context(running(process))
        done = {lora_rank: finish(process, 300) for lora_rank, process in launches.items()}
    for lora_rank, run in done.items():
        assert run.returncode == 0, f"model.lora.rank={lora_rank}: {errors(run.stderr)}"
        folder = tmp_path / f"lora{lora_rank}" / "ranks"
        rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        assert [row["step"] for row in rows] == [1, 2, 3]  # written once, by rank 0
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["steps"] == 3 and summary["eval_after"]["n"] == 4
        assert "2 ranks" in summary["precision"]["device"]
        assert all(row["memory/train_peak_rss_gb"] > 0 for row in rows)
        saved = "adapter_config.json" if lora_rank else "config.json"  # the adapter alone, or the whole model
        assert (folder / "final" / saved).exists(), lora_rank


def test_shares_of_a_step_cover_every_prompt_once_in_order():
    from rlvr.distributed import Ranks

    for world in (1, 2, 3, 4):
        for count in (1, 3, 8, 13):
            shares = [Ranks(rank, world).share(count) for rank in range(world)]
            assert [i for share in shares for i in share] == list(range(count))
            assert max(map(len, shares)) - min(map(len, shares)) <= 1
            assert all(Ranks(0, world).owner(i, count) == r for r, share in enumerate(shares) for i in share)
