"""Run by tests/test_distributed.py, alone or under torchrun: updates on fixed batches, then a dump to compare.

    python ranked_update.py MODEL OUT run             two updates, a checkpoint between them
    python ranked_update.py MODEL OUT resume CKPT_RUN  resume CKPT_RUN's checkpoint, then the second update

Rank 0 writes OUT (torch.save): each update's metrics and the final full weights and optimiser moments.
"""

from __future__ import annotations

import os
import random
import sys

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

from rlvr.config import load_config
from rlvr.trainer import Trainer
from rlvr.types import Episode

PROMPTS, GROUP = 4, 4


def batch(seed: int, vocab: int) -> list[Episode]:
    """A step's worth of made-up episodes: 4 groups of 4, lengths and advantages drawn from `seed`."""
    rng = random.Random(seed)
    episodes = []
    for group in range(PROMPTS):
        prompt = [rng.randrange(2, vocab) for _ in range(rng.randint(3, 6))]
        for _ in range(GROUP):
            length = rng.randint(2, 7)
            episodes.append(
                Episode(
                    prompt_ids=prompt,
                    completion_ids=[rng.randrange(2, vocab) for _ in range(length)],
                    logprobs=[-rng.uniform(1.0, 6.0) for _ in range(length)],
                    loss_mask=[1] * length,
                    group=group,
                    advantage=rng.uniform(-1.0, 1.0),
                )
            )
    # Three episodes of group 0 filtered out: rank 0 of 2 then has fewer micro-batches than rank 1.
    return episodes[3:]


def _full_weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return get_model_state_dict(trainer.policy, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def main() -> None:
    model, out, mode = sys.argv[1:4]
    run_dir = sys.argv[4] if mode == "resume" else out + ".run"
    settings = {
        "model.path": model,
        "output_dir": run_dir.rsplit("/", 1)[0],
        "name": run_dir.rsplit("/", 1)[1],
        "rollout.engine": "transformers",
        "scoring.workers": 0,
        "train.prompts_per_step": PROMPTS,
        "train.group_size": GROUP,
        "train.micro_batch_size": 3,
        "train.epochs": int(os.environ.get("EPOCHS", "2")),
        # Adam scales each step to the learning rate whatever the gradient's size, so fp32 noise in a tiny gradient
        # entry moves its weight by a share of the rate: small enough here that two runs agree to 1e-6.
        "train.lr": 1e-4,
        "train.rank_timeout_seconds": 120,
        "model.autocast_bf16": False,  # fp32: bf16 rounds differently in differently packed rows
        "algo.kl.coef": 0.1,  # the reference model's path too
    }
    trainer = Trainer(load_config(None, [f"{key}={value}" for key, value in settings.items()]))
    vocab = trainer.policy.config.vocab_size
    metrics = []
    start = {name: tensor.clone() for name, tensor in _full_weights(trainer).items()}
    if mode == "run":
        metrics.append(trainer.update(batch(1, vocab)))
        trainer.step = 1
        trainer.save()
    else:
        assert trainer.resume(), "no checkpoint to resume"
    metrics.append(trainer.update(batch(2, vocab)))
    weights = _full_weights(trainer)
    moments = get_optimizer_state_dict(
        trainer.policy, trainer.optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    if trainer.ranks.main:
        torch.save({"metrics": metrics, "start": start, "weights": weights, "moments": moments["state"]}, out)
    trainer.ranks.leave()


if __name__ == "__main__":
    main()
