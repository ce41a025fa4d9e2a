"""Supervised fine-tuning with the RL trainer's own parts: the same learner (packed, chunked vocabulary projection),
devices and ranks, optimiser, spike guard, checkpoints and exact resume, metrics, progress bar and run folder.

Only two things differ from an RL step: the episodes are the traces of the step's data window instead of sampled
answers, and the objective is their negative log-likelihood (per assistant token, at temperature 1) instead of a
policy-gradient loss. `train.prompts_per_step` traces make a step; `sft.epochs` passes over the data, each in its own
seeded order, so a step's window depends on the step alone and a resumed run trains on what an uninterrupted one
would.
"""

from __future__ import annotations

import logging
import math
import random
import time

import numpy as np
import torch

from rlvr.algos import Stat
from rlvr.algos.losses import LossOutputs, aggregate
from rlvr.config import RunConfig
from rlvr.distributed import Ranks
from rlvr.errors import ConfigError
from rlvr.seeds import derive_seed
from rlvr.sft.data import Trace, held_out_questions, tokenize, training_conversations
from rlvr.trainer import Trainer
from rlvr.types import Episode

logger = logging.getLogger(__name__)


class NegativeLogLikelihood:
    """The objective's interface (`rlvr.algos.Objective`) for supervised targets: no advantage, no importance ratio,
    no reference; the loss of a token is minus its log-prob, averaged over every trained token of the step."""

    kl = None
    needs_reference = False

    def __call__(self, logprobs: torch.Tensor, *unused: object) -> LossOutputs:
        return LossOutputs(-logprobs, {"nll": Stat(-logprobs.detach())})

    def reduce(self, per_token: torch.Tensor, mask: torch.Tensor, normalizer: float) -> torch.Tensor:
        return aggregate(per_token, mask, "token", normalizer)


def steps_for(config: RunConfig, examples: int) -> int:
    """Optimiser steps for `sft.epochs` passes over `examples` traces, `train.prompts_per_step` at a time."""
    return math.ceil(config.sft.epochs * examples / config.train.prompts_per_step)


class SFTTrainer(Trainer):
    def __init__(self, config: RunConfig, ranks: Ranks | None = None) -> None:
        super().__init__(config, ranks)
        if config.sft.data is None:
            raise ConfigError("sft.data: supervised fine-tuning needs a file of chat traces")
        if config.algo.aggregation != "token":
            raise ConfigError("rlvr sft: the likelihood is averaged per token: algo.aggregation must be token")
        held_out = held_out_questions(config, self.env)
        conversations, dropped = training_conversations(config.sft.data, self.env, held_out, config.sft.turns)
        if dropped and self.ranks.main:
            logger.warning("sft: left out %d traces of questions the recipe's evaluation holds out", dropped)
        self.traces: list[Trace] = [
            tokenize(where, messages, self.chat, config.sft.max_tokens, config.sft.turns) for where, messages in conversations
        ]
        self._orders: dict[int, list[int]] = {}
        self.objective = NegativeLogLikelihood()  # type: ignore[assignment]
        self.learner_temperature = 1.0  # the model's own distribution, not the sampler's

    def window(self, step: int) -> list[Trace]:
        """The step's traces: positions step*B .. step*B+B-1 of the epochs laid end to end, each epoch shuffled by
        its own seed; a window a guard rollback abandoned is skipped, as RL skips its prompts."""
        per_step, count = self.config.train.prompts_per_step, len(self.traces)
        start = (step + self.guard.state.data_skip) * per_step
        chosen = []
        for position in range(start, start + per_step):
            epoch, index = divmod(position, count)
            chosen.append(self.traces[self._order(epoch)[index]])
        return chosen

    def _order(self, epoch: int) -> list[int]:
        """The traces' order in `epoch`, shuffled by its own seed (kept: a step reads one epoch or two)."""
        if epoch not in self._orders:
            order = list(range(len(self.traces)))
            random.Random(derive_seed(self.config.seed, epoch)).shuffle(order)
            self._orders = {epoch: order}
        return self._orders[epoch]

    def train_step(self, step: int) -> dict[str, float]:
        started = time.perf_counter()
        traces = self.window(step)
        # Every rank builds the whole step (no sampling to share); each trains on the traces it owns.
        episodes = [
            Episode(trace.prompt_ids, trace.completion_ids, [0.0] * len(trace.completion_ids), trace.loss_mask, group=i)
            for i, trace in enumerate(traces)
        ]
        for episode in episodes:
            episode.advantage = 1.0
        with self.memory.phase("train"):
            stats = self.update(episodes)
        with self.memory.phase("sync"):
            self.sync_weights()
        finished = time.perf_counter()
        tokens = sum(sum(trace.loss_mask) for trace in traces)
        seconds = finished - started
        return {
            "step": step + 1,
            "epoch": (step + 1) * self.config.train.prompts_per_step / len(self.traces),
            **stats,
            "trained_tokens": tokens,
            "sequence_tokens": float(np.mean([len(t.prompt_ids) + len(t.completion_ids) for t in traces])),
            "response_length": tokens / len(traces),
            "lr": self.scheduler.get_last_lr()[0],
            "guard/nonfinite_weights": self._nonfinite_weights(),
            **self.guard.metrics(),
            "tokens_per_second": tokens / seconds,
            "train_seconds": seconds,
            "step_seconds": seconds,
            **self.memory.metrics(),
            **({"warnings": [f"step {step + 1}: update skipped: {spike}" for spike in self.spikes]} if self.spikes else {}),
        }
