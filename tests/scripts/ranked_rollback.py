"""Run by tests/test_distributed_guard.py, alone or under torchrun: the guard's NaN rollback on one rank or several.

    python ranked_rollback.py MODEL DATA RUN_DIR OUT

trains 4 steps on DATA's problems (a JSONL file of questions and answers) in RUN_DIR, with a NaN put into the last
rank's shard of a weight after update 3 (so the guard rolls back to step 2 and redoes 3 and 4), then resumes a copy
of RUN_DIR (RUN_DIR-resumed) from its step-3 checkpoint, as if the run had been killed just after the redone step 3,
and trains it to 4 steps again.

Only the last rank is poisoned: with two ranks the other one sees finite local weights, and both must still agree to
roll back, to the same checkpoint, together. Rank 0 writes OUT (torch.save): the weights before training; for both
runs the metrics.jsonl rows (without timing and memory keys), the data position of every step drawn, the
checkpoints left on disk and the final full weights; and each rank's count of non-finite local weights right after
the poisoning.

The episodes are made up, as in ranked_update.py: seeded by each prompt's place in the data stream, never by the rank
(the sampler seeds each rank's noise apart, so real sampling on 2 ranks draws other episodes than on 1), so 1 and 2
ranks train on the same batches and their weights can be compared. The data position, the gathering, the
advantages, the update, the weight sync, the guard, the checkpoints and the rollback are the trainer's own.
"""

from __future__ import annotations

import io
import json
import random
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.tensor import DTensor

from rlvr.config import load_config
from rlvr.metrics import MetricsLog
from rlvr.trainer import Trainer
from rlvr.types import Episode

STEPS, PROMPTS, GROUP = 4, 4, 4
POISON_AFTER = 3  # the update after which a weight turns NaN (the first time only: the redone update stays clean)
TIMING = ("seconds", "tokens_per_second", "memory/")


def made_up_rollout(trainer: Trainer, positions: list[int]) -> None:
    """Replace sampling and scoring by episodes drawn from each prompt's index in the stream; record positions."""
    t = trainer.config.train

    def rollout(step: int) -> list[Episode]:
        start = (step + trainer.guard.state.data_skip) * t.prompts_per_step  # as Trainer.rollout reads the stream
        positions.append(start)
        problems = trainer.env.train_problems(start, t.prompts_per_step)
        episodes = []
        for group in trainer.ranks.share(len(problems)):
            rng = random.Random(start + group)  # the prompt's place in the stream, whichever rank takes it
            prompt = trainer.chat.prompt_ids(trainer.env.messages(problems[group]))
            for _ in range(t.group_size):
                length = rng.randint(2, 7)
                reward = float(rng.random() < 0.5)
                episodes.append(
                    Episode(
                        prompt_ids=prompt,
                        completion_ids=[rng.randrange(2, trainer.policy.config.vocab_size) for _ in range(length)],
                        logprobs=[-rng.uniform(1.0, 6.0) for _ in range(length)],
                        loss_mask=[1] * length,
                        group=group,
                        reward=reward,
                        rewards={"correct": reward},
                    )
                )
        return episodes

    trainer.rollout = rollout


def poison_after(trainer: Trainer, update: int, local_bad: list[list[int]]) -> None:
    """NaN into the first element of the last rank's local shard of the first weight, right after `update`
    updates (the first time only), and record every rank's count of non-finite local weights then."""
    real_update, done = trainer.update, set()

    def poisoning_update(episodes: list[Episode]) -> dict[str, float]:
        stats = real_update(episodes)
        count = trainer.step + 1  # inside the step, before `step` counts it
        if count == update and count not in done:
            done.add(count)
            if trainer.ranks.rank == trainer.ranks.world_size - 1:
                weight = trainer.params[0]
                with torch.no_grad():
                    (weight.to_local() if isinstance(weight, DTensor) else weight).view(-1)[0] = float("nan")
            local = sum(int((~torch.isfinite(getattr(p, "_local_tensor", p).detach())).sum()) for p in trainer.params)
            local_bad.append(trainer.ranks.gather(local))
        return stats

    trainer.update = poisoning_update


def make_trainer(model: str, data: str, run_dir: Path) -> Trainer:
    settings = {
        "model.path": model,
        # A local file, not the default reasoning-gym task: its import alone takes seconds, and the rewards are
        # made up here anyway.
        "env.name": "mixture",
        "env.sources": f"[{{path: {data}}}]",
        "output_dir": str(run_dir.parent),
        "name": run_dir.name,
        "seed": 7,
        "rollout.engine": "transformers",
        "scoring.workers": 0,
        "train.steps": STEPS,
        "train.prompts_per_step": PROMPTS,
        "train.group_size": GROUP,
        "train.micro_batch_size": 3,  # 16 episodes: ranks run several micro-batches, as in a real step
        "train.save_every": 1,
        "train.keep_checkpoints": 2,
        # Adam moves each weight by about the learning rate whatever its gradient's size: small enough here that fp32
        # noise between 1 and 2 ranks stays within 1e-5 after 4 updates (as in ranked_update.py).
        "train.lr": 1e-4,
        # A rank stuck waiting for the other fails in a collective or a meeting point within this, not in 600 s.
        "train.rank_timeout_seconds": 60,
        # The made-up sampler log-probs are far from the model's: the mismatch check would fire on every step.
        "train.guard.max_mismatch": "null",
        "model.autocast_bf16": False,  # fp32: bf16 rounds differently in differently packed rows
        "algo.overlong_filter": False,
        "env.eval_size": 2,
    }
    torch.manual_seed(0)
    return Trainer(load_config(None, [f"{key}={value}" for key, value in settings.items()]))


def full_weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    """The whole state dict, gathered as the final model's is (a collective: every rank calls it)."""
    return get_model_state_dict(trainer.policy, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def train(trainer: Trainer) -> dict[str, Any]:
    """fit, then what rank 0 reports of the run (an empty dict elsewhere); every rank helps gather the weights."""
    positions: list[int] = []
    made_up_rollout(trainer, positions)
    log = MetricsLog(trainer.config.run_dir / "metrics.jsonl", Console(file=io.StringIO())) if trainer.ranks.main else None
    trainer.fit(log)
    weights = full_weights(trainer)
    if not trainer.ranks.main:
        return {}
    lines = (trainer.config.run_dir / "metrics.jsonl").read_text().splitlines()
    rows = [{k: v for k, v in json.loads(line).items() if not any(t in k for t in TIMING)} for line in lines]
    folder = trainer.checkpoint_dir()
    checkpoints = sorted(path.name for path in folder.iterdir())
    return {"rows": rows, "positions": positions, "checkpoints": checkpoints, "weights": weights}


def main() -> None:
    model, data, run_dir, out = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4]
    whole = make_trainer(model, data, run_dir)
    start = {name: weight.clone() for name, weight in full_weights(whole).items()}  # one rank: the live tensors
    local_bad: list[list[int]] = []
    poison_after(whole, POISON_AFTER, local_bad)
    result = {"start": start, "whole": train(whole), "local_bad": local_bad}

    # Killed just after the redone step 3's checkpoint: a copy without step 4's, whose `latest` names step 3. Resumed
    # in these same processes (a fresh Trainer, its weights loaded from the checkpoint): a second launch costs seconds.
    copy = run_dir.with_name(run_dir.name + "-resumed")
    if whole.ranks.main:
        shutil.copytree(run_dir, copy)
        shutil.rmtree(copy / "checkpoints" / f"step-{STEPS:06d}")
        (copy / "checkpoints" / "latest").write_text(f"step-{STEPS - 1:06d}")
    whole.ranks.barrier("copied for the resume")
    resumed = make_trainer(model, data, copy)
    assert resumed.resume(), f"{copy}: no checkpoint to resume"
    state = resumed.guard.state
    result["resumed_from"] = (resumed.step, state.data_skip, state.rollbacks, state.lr_scale)
    result["resumed"] = train(resumed)
    if whole.ranks.main:
        torch.save(result, out)
    whole.ranks.leave()


if __name__ == "__main__":
    main()
