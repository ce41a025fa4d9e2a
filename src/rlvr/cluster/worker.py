"""A rollout worker: its own copy of the policy, its own engine and sampler, generating whole training steps.

It is a plain class: the pool (`rlvr.cluster.pool`) runs it as a Ray actor, one process per worker, and tests can
call it directly. It never scores (the learner's scoring pool does) and never trains: it loads the versions of the
learner's weights it is handed, and says which version sampled each episode.

With `rollout.in_flight: continue`, new weights offered while a call runs are loaded between chunks of
`rollout.chunk_tokens` tokens, and the unfinished completions continue on them (`ContinuingEngine`): each token's
version is recorded, and an episode counts as old as its oldest token.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

import torch

from rlvr.cluster.records import Published, RolloutRequest, RolloutResult
from rlvr.cluster.weight_group import GroupAddress, TensorSpec, WeightGroup, allocate
from rlvr.config import RunConfig
from rlvr.envs import make_env
from rlvr.hardware import resolve_device
from rlvr.models import load_policy, load_tokenizer
from rlvr.plugins import load_plugins
from rlvr.rollout import RolloutEngine, SamplingParams, make_engine
from rlvr.rollout.sampler import make_sampler
from rlvr.seeds import derive_seed
from rlvr.types import Episode

# `episode.meta` keys: the oldest version among an episode's tokens, and (in_flight: continue) each token's.
POLICY_VERSION = "policy_version"
TOKEN_VERSIONS = "token_versions"


@dataclass
class _Partial:
    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)


class ContinuingEngine(RolloutEngine):
    """An engine that generates in chunks and, between chunks, asks `refresh()` to load any newer weights (it returns
    the version now loaded): completions unfinished at a chunk's end continue from their tokens so far on the new
    weights. Each chunk's tokens keep the log-probs of the version that sampled them (the behaviour policy's, which
    the decoupled objective corrects for). A stop string split across a chunk boundary is not seen; stop tokens are.
    """

    def __init__(self, engine: RolloutEngine, refresh: Callable[[], int], chunk_tokens: int, decode: Callable) -> None:
        self.engine = engine
        self.refresh = refresh
        self.chunk_tokens = chunk_tokens
        self.decode = decode
        self.precision = engine.precision

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingParams) -> list[Episode]:
        partial = [_Partial() for _ in prompts]
        episodes: list[Episode | None] = [None] * len(prompts)
        active, done, chunk = list(range(len(prompts))), 0, 0
        while active:
            version = self.refresh()
            length = min(self.chunk_tokens, sampling.max_new_tokens - done)
            params = replace(
                sampling,
                max_new_tokens=length,
                min_new_tokens=max(0, sampling.min_new_tokens - done),
                seed=derive_seed(sampling.seed, chunk),
            )
            produced = self.engine.generate([list(prompts[i]) + partial[i].ids for i in active], params)
            still = []
            for index, episode in zip(active, produced):
                part = partial[index]
                part.ids += episode.completion_ids
                part.logprobs += episode.logprobs
                part.versions += [version] * episode.num_tokens
                if episode.truncated and done + length < sampling.max_new_tokens:
                    still.append(index)  # every unfinished row has exactly done + length tokens
                    continue
                episodes[index] = Episode(
                    list(prompts[index]),
                    part.ids,
                    part.logprobs,
                    [1] * len(part.ids),
                    truncated=episode.truncated,
                    text=self.decode(part.ids),
                    meta={TOKEN_VERSIONS: part.versions},
                )
            active, done, chunk = still, done + length, chunk + 1
        return episodes  # type: ignore[return-value]

    def update_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        self.engine.update_weights(weights)


class RolloutWorker:
    """One worker: `generate(request, published)` loads `published` if it is newer than what it holds, then samples
    the request's prompts. `offer(published)` (from another thread of the actor) hands over a version to load at the
    next chunk boundary of a running call (in_flight: continue). With `cluster.weight_sync: collective`, `join`
    makes it a member of the learner's weight group and `receive` (another thread) takes each version's broadcast
    into its buffers, from which the next load point loads."""

    def __init__(self, config: RunConfig, index: int, cpus: Sequence[int] | None = None) -> None:
        if cpus:  # pinned: on a small machine the learner and each worker get cores of their own
            os.sched_setaffinity(0, set(cpus))
            os.environ["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(map(str, cpus))  # vLLM binds its threads by this
        torch.set_num_threads(max(1, int(config.rollout.worker_cpus)))
        load_plugins(config.plugins)  # what the recipe's plugins register (tools, environments) exists here too
        self.index = index
        self.version = -1  # no weights of the learner's yet: the starting model's, loaded from disk
        self._offered: Published | None = None
        self._lock = threading.Lock()
        self.timeout_seconds = config.cluster.timeout_seconds
        self.group: WeightGroup | None = None  # cluster.weight_sync: collective
        self.buffers: dict[str, torch.Tensor] = {}
        self.staged = -1  # the version in the buffers
        self._buffers_lock = threading.Lock()  # a broadcast never lands in the buffers while a load reads them
        self.tokenizer = load_tokenizer(config.model.path)
        self.device = resolve_device(config.train.device, 0)  # Ray shows a GPU worker only the GPUs it reserved
        # The plain model: every load brings the learner's weights with any LoRA adapters merged in.
        model = load_policy(config.model.path).to(self.device)
        self.engine = make_engine(config.rollout, model, self.tokenizer)
        self.engine.shares_weights = False  # its own copy: loads go through the engine's checked update
        engine: RolloutEngine = self.engine
        if config.rollout.in_flight == "continue":
            decode = lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
            engine = ContinuingEngine(self.engine, self._refresh, config.rollout.chunk_tokens, decode)
        self.sampler, _, _ = make_sampler(engine, self.tokenizer, config, make_env(config.env))
        self.load_seconds = 0.0
        self.loads = 0

    def ready(self) -> int:
        """The worker's process id, once its model and engine are loaded (the pool's startup check)."""
        return os.getpid()

    def join(self, address: GroupAddress, specs: list[TensorSpec], device_type: str) -> int:
        """Become rank `index + 1` of the weight group at `address` (a new one replaces any before it), with
        buffers for `specs` on this worker's GPU when the group is NCCL's, else on the CPU."""
        device = self.device if device_type == "cuda" else torch.device("cpu")
        if self.group is not None:  # the old group's sockets (NCCL: communicators) go now, not with the process
            self.group.close()
        with self._buffers_lock:
            self.group, self.buffers, self.staged = None, allocate(specs, device), -1
        self.group = WeightGroup(address, self.index + 1, device, self.timeout_seconds)
        return os.getpid()

    def receive(self, version: int) -> None:
        """Take part in the broadcast of `version` (the learner sends it now), then offer it to the next load point."""
        with self._buffers_lock:
            self.group.broadcast(list(self.buffers.values()))
            self.staged = version
        self.offer(Published(version, None))

    def offer(self, published: Published) -> None:
        with self._lock:
            if self._offered is None or published.version > self._offered.version:
                self._offered = published

    def _refresh(self) -> int:
        """Load the newest version offered, if newer than the one held; the version now held."""
        with self._lock:
            offered, self._offered = self._offered, None
        if offered is not None and offered.version > self.version:
            self.load(offered)
        return self.version

    def load(self, published: Published) -> None:
        started = time.perf_counter()
        weights = published.weights
        if weights is None:  # broadcast into the buffers (cluster.weight_sync: collective)
            with self._buffers_lock:
                if self.staged < published.version:
                    raise RuntimeError(f"rollout worker {self.index}: holds version {self.staged}, not {published.version}")
                self.engine.update_weights(self.buffers.items())  # raises if the engine does not serve what it was sent
                self.version = self.staged  # a newer broadcast may have landed since: the buffers' version is loaded
        else:
            if not isinstance(weights, dict):  # a Ray object reference: fetched here, only when newer
                import ray

                weights = ray.get(weights)
            self.engine.update_weights(weights.items())  # raises if the engine does not serve what it was sent
            self.version = published.version
        self.load_seconds += time.perf_counter() - started
        self.loads += 1

    def generate(self, request: RolloutRequest, published: Published) -> RolloutResult:
        began = time.time()
        self.load_seconds, self.loads = 0.0, 0
        self.offer(published)
        self._refresh()
        oldest = self.version  # versions only grow during a call: every episode starts on this one
        started, loaded_before = time.perf_counter(), self.load_seconds
        prompts = [p for p in request.prompts for _ in range(request.group_size)]
        episodes = self.sampler.generate(prompts, request.sampling)
        for episode in episodes:
            episode.meta[POLICY_VERSION] = oldest
        seconds = time.perf_counter() - started - (self.load_seconds - loaded_before)
        loads = self.load_seconds, self.loads
        return RolloutResult(request.step, episodes, self.index, oldest, seconds, *loads, began, time.time())
