"""Asynchronous RL: rollout workers generate the coming steps while the learner trains, within a bounded lag.

`cluster.backend: ray` runs this trainer. It is the local trainer with its rollout moved into a pool of Ray workers
(`rlvr.cluster.pool`): each step's prompts are drawn and sent as one request, so a worker samples exactly what the
local trainer would (the same prompts, the same seed, the same weights when synchronous). What changes is when:

- **Bounded staleness.** Step s is sent once the learner has made s - k updates (`rollout.max_staleness: k`), with
  the newest weights; it is trained at update s, so its episodes lag by at most k versions. k = 0 is synchronous
  and gives the local trainer's numbers. An episode that lags more (weights a rollback abandoned, a result that
  waited) is dropped, counted, and its prompts are sent again. Each episode's lag reaches the objective as its
  `version_gap`; the decoupled objective corrects for the behaviour policy (`algo.correction`).
- **Lossless resume.** The checkpoint holds the prompts in flight (sent, not yet trained) with the data position
  after them: a resumed run sends those prompts again and draws on from there, so every training prompt is trained
  on exactly once across a kill and a resume, as in an uninterrupted run.
- **Visibility.** Each step's row has its staleness, the learner's and the workers' idle shares, the weight-sync
  seconds, the results waiting, the dropped episodes and the worker restarts (`async/...`).
- **Several learner ranks** (torchrun's, or `cluster.learners` Ray actors: `rlvr.cluster.learners`). Rank 0 owns the
  pool: it sends the steps, takes each result and scores it; the episodes then reach every rank as the local
  trainer's gathered rollouts do, and each rank trains on its share of the groups. Every rank takes part in
  gathering the sharded weights whole for each publication.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from rlvr.cluster.pool import RolloutPool, plan_cores
from rlvr.cluster.records import RolloutRequest, RolloutResult
from rlvr.cluster.weight_group import broadcast_device
from rlvr.cluster.worker import POLICY_VERSION
from rlvr.config import RunConfig
from rlvr.curriculum import Draw, prompt_key
from rlvr.distributed import Ranks, full_tensor
from rlvr.errors import ConfigError
from rlvr.eval.suite import suite_due
from rlvr.metrics import MetricsLog
from rlvr.models import inference_weights
from rlvr.rollout import SamplingParams
from rlvr.rollout.judge import POLICY
from rlvr.seeds import derive_seed
from rlvr.trainer import Trainer
from rlvr.types import STALENESS, Episode, Problem

WORKERS_FILE = "workers.json"  # in the run folder: which process each worker is (to watch, or to stop, one)


@dataclass
class InFlight:
    """A step whose prompts were drawn and sent, and not yet trained on."""

    problems: list[Problem]
    draw: Draw | None


def prompts_digest(problems: list[Problem]) -> str:
    """One step's prompts as a short hash: equal digests, the same prompts in the same order (metrics.jsonl carries
    it, so two runs' data orders can be compared line by line)."""
    return prompt_key(Problem("\x00".join(prompt_key(p) for p in problems), ""))


class AsyncTrainer(Trainer):
    def __init__(self, config: RunConfig, ranks: Ranks | None = None) -> None:
        self.worker_cores: list[list[int]] | None = None
        if config.cluster.pin_cpus:
            if (ranks or Ranks.from_environment()).distributed:  # the ranks would share the learner's cores
                raise ConfigError("cluster.pin_cpus: pins one learner process; it cannot under several ranks")
            if config.cluster.address:
                raise ConfigError("cluster.pin_cpus: pins to this machine's cores; it cannot with cluster.address")
            learner, self.worker_cores = plan_cores(
                config.rollout.workers, config.rollout.worker_cpus, sorted(os.sched_getaffinity(0))
            )
            os.sched_setaffinity(0, set(learner))
            torch.set_num_threads(config.train.threads or len(learner))
        super().__init__(config, ranks)
        self.pool: RolloutPool | None = None  # rank 0's, while it fits
        self.fitting = False
        self.version = 0  # weight versions published: one per update (and per load, as a rollback's)
        self.local_version = 0  # the version this process's own engine holds
        self.in_flight: dict[int, InFlight] = {}
        self.dropped = 0  # the step's episodes dropped as too stale
        self.learner_wait = 0.0
        self.last_result: RolloutResult | None = None

    # ---- the pool -------------------------------------------------------
    def fit(self, log: MetricsLog | None, evaluate: Callable[[int], dict[str, Any]] | None = None) -> None:
        learners = self.ranks.gather(os.getpid())
        if self.ranks.main:
            self.pool = RolloutPool(self.config, self.worker_cores)
        self.fitting = True
        try:
            if self.ranks.main:
                ranked = {f"learner rank {rank}": pid for rank, pid in enumerate(learners)}
                names = {"learner": learners[0]} if len(learners) == 1 else ranked
                pids = {f"rollout worker {i}": pid for i, pid in self.pool.worker_pids().items()}
                (self.config.run_dir / WORKERS_FILE).write_text(json.dumps({**names, **pids}, indent=2) + "\n")
            self._publish()

            def evaluate_fresh(step: int) -> dict[str, Any]:  # the regression suite generates with the learner's engine
                if suite_due(self.config.train.eval_every, step):
                    self.refresh_local_engine()
                return evaluate(step)

            super().fit(log, evaluate_fresh if evaluate is not None else None)
            self.refresh_local_engine()  # the evaluation after training, and whatever runs next, see the trained weights
        finally:
            self.fitting = False
            if self.pool is not None:
                self.pool.close()
                self.pool = None

    def _publish(self) -> None:
        """The weights gathered whole (every rank takes part), and published to the workers by rank 0: copies on the
        CPU for the object store, on the device the broadcast group uses for a collective."""
        device = torch.device("cpu")
        if self.config.cluster.weight_sync == "collective":
            device = broadcast_device(self.device, self.config.rollout.worker_gpus)
        weights = {
            name: full_tensor(tensor).detach().to(device, copy=True).contiguous()
            for name, tensor in inference_weights(self.policy)
        }
        if self.pool is not None:
            self.pool.publish(self.version, weights)

    def sync_weights(self) -> None:
        """The workers get every version; this process's own engine (evaluation, the suite, a policy judge) only
        when it next generates (`refresh_local_engine`): a load per step would cost the learner's time for nothing."""
        self.version += 1
        if self.fitting:  # before `fit` (a resume's load) the pool gets the weights it starts with
            self._publish()

    def refresh_local_engine(self) -> None:
        """Load the newest weights into this process's engine (every rank calls it: sharded weights are gathered)."""
        if self.local_version != self.version:
            super().sync_weights()
            self.local_version = self.version

    def sampling(self, step: int) -> SamplingParams:
        """One request a step, sampled by one worker with the step's seed: what one local rank would draw."""
        return SamplingParams.from_config(self.config.sampling, derive_seed(self.config.seed, step))

    # ---- requests -------------------------------------------------------
    def _request(self, step: int, attempt: int = 0) -> RolloutRequest:
        flight = self.in_flight[step]
        prompts = self.prompt_ids(flight.problems)
        return RolloutRequest(step, flight.problems, prompts, self.config.train.group_size, self.sampling(step), attempt)

    def _send_ahead(self, step: int) -> None:
        """Send every step from `step` to `step + k` not sent yet: the learner has made `step` updates, so each of
        them is trained at most k versions after the weights it is sent with."""
        last = min(step + self.config.rollout.max_staleness, self.config.train.steps - 1)
        for ahead in range(step, last + 1):
            if ahead not in self.in_flight:
                self.in_flight[ahead] = InFlight(*self.draw_problems(ahead))
                self.pool.submit(self._request(ahead))
            elif ahead not in self.pool.outstanding():  # restored from a checkpoint: sent again as it was
                self.pool.submit(self._request(ahead))

    def rollout(self, step: int) -> list[Episode]:
        """Rank 0: the step's result from the pool, scored; every rank: the step's prompts and what the curriculum
        skipped (the episodes reach the others with the gathered batch)."""
        if self.config.judge.model == POLICY:  # the judge is the policy as it is now, generating in this process
            self.refresh_local_engine()
        episodes = self._take(step) if self.ranks.main else []
        self.step_problems, self.draw = self.ranks.gather((self.step_problems, self.draw))[0]
        return episodes

    def _take(self, step: int) -> list[Episode]:
        self._send_ahead(step)
        waited, self.dropped = time.perf_counter(), 0
        limit = self.config.rollout.max_staleness
        while True:
            result = self.pool.take(step)
            if self.version - result.version <= limit:
                break
            self.dropped += len(result.episodes)  # too old: the same prompts, generated again on newer weights
            self.pool.submit(self._request(step, attempt=1))
        self.learner_wait = time.perf_counter() - waited
        self.last_result = result
        flight = self.in_flight.pop(step)
        self.step_problems, self.draw = flight.problems, flight.draw
        episodes = result.episodes
        for index, episode in enumerate(episodes):
            episode.group = index // self.config.train.group_size
            episode.meta[STALENESS] = self.version - episode.meta[POLICY_VERSION]
        self.score(episodes, flight.problems)  # meanwhile the workers generate the steps sent ahead
        return episodes

    def train_step(self, step: int) -> dict[str, float]:
        metrics = super().train_step(step)
        if not self.ranks.main:  # rank 0 logs the step
            return metrics
        staleness = [e.meta[STALENESS] for e in self.last_result.episodes]
        counts = Counter(staleness)
        metrics |= {
            "async/staleness_mean": sum(staleness) / len(staleness),
            "async/staleness_max": float(max(staleness)),
            **{f"async/staleness/{lag}": counts[lag] / len(staleness) for lag in range(self.config.rollout.max_staleness + 1)},
            "async/learner_idle_fraction": self.learner_wait / metrics["step_seconds"],
            "async/dropped_stale": float(self.dropped),
            "async/weight_load_seconds": self.last_result.load_seconds,
            "async/worker_generate_seconds": self.last_result.generate_seconds,
            "async/worker": float(self.last_result.worker),
            "data/prompts_digest": prompts_digest(self.step_problems),
            **self.pool.read_metrics(),
        }
        events = self.pool.take_events()
        if events:
            metrics["warnings"] = metrics.get("warnings", []) + events
        return metrics

    # ---- checkpoints and rollbacks -----------------------------------------
    def extra_state(self) -> dict[str, Any]:
        return {"in_flight": {step: (f.problems, f.draw) for step, f in self.in_flight.items()}}

    def load_extra_state(self, state: dict[str, Any], rollback: bool) -> None:
        if rollback:  # sent for weights the rollback abandoned: their windows are skipped, as the local trainer's are
            if self.pool is not None:
                self.pool.withdraw(set(self.in_flight))
            self.in_flight = {}
            return
        saved = state.get("in_flight", {})
        self.in_flight = {step: InFlight(problems, draw) for step, (problems, draw) in saved.items()}
