"""Rollout workers as Ray actors: requests in, results out, and no call without a deadline.

The learner submits whole steps (`submit`) and takes them back by step (`take`); the pool hands each request to an
idle worker together with the newest published weights, which the worker fetches from Ray's object store only when
it holds an older version. Every call to a worker has a deadline: `cluster.startup_timeout_seconds` for a worker to
start and load its model, `cluster.timeout_seconds` for a step's generation. A worker that dies (its process
killed) or misses a deadline (hung: stopped, deadlocked, stuck in a collective) is killed and replaced, and its
request is queued again; after `cluster.max_restarts` replacements of one worker the run stops with a `WorkerError`
that names the worker, the call and the deadline. `take` never waits longer than that.

With `cluster.weight_sync: collective` each version is broadcast to every worker over a group of their own
(`rlvr.cluster.weight_group`) instead of put in the object store. Each worker's receive has the same deadline; a
member that dies or misses it is replaced as above, and the group is formed again and the version sent again.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from rlvr.cluster.records import Published, RolloutRequest, RolloutResult
from rlvr.cluster.weight_group import GroupAddress, TensorSpec, WeightGroup, free_port
from rlvr.cluster.worker import RolloutWorker
from rlvr.config import RunConfig
from rlvr.errors import ConfigError, WorkerError
from rlvr.rollout_config import ClusterConfig

logger = logging.getLogger(__name__)

# How long one wait for results lasts at most, so that deadlines are checked at least this often.
_POLL_SECONDS = 1.0


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("cluster.backend: ray needs Ray: pip install 'rlvr[ray]'") from None
    return ray


def connect_ray(cluster: ClusterConfig) -> bool:
    """Join `cluster.address`, or start a local cluster of `cluster.num_cpus`; True when this call started the
    connection (its caller shuts it down), False when the process was connected already (a learner actor's pool)."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
    if cluster.address:
        ray.init(address=cluster.address, **options)
    else:
        ray.init(num_cpus=cluster.num_cpus or os.cpu_count(), **options)
    return True


def plan_cores(workers: int, worker_cpus: float, available: list[int]) -> tuple[list[int], list[list[int]]]:
    """`cluster.pin_cpus`: the learner's cores and each worker's, from this machine's. The workers take the last
    cores, `worker_cpus` (rounded up) each, and the learner keeps the rest, so that no two compete for one."""
    each = max(1, int(-(-worker_cpus // 1)))
    if len(available) < workers * each + 1:
        raise ConfigError(
            f"cluster.pin_cpus: {workers} workers of {each} cores and the learner need {workers * each + 1} cores; "
            f"this machine gives {len(available)}"
        )
    learner = available[: len(available) - workers * each]
    rest = available[len(learner) :]
    return learner, [rest[i * each : (i + 1) * each] for i in range(workers)]


@dataclass
class _Slot:
    """One worker position: the actor in it now, and how often it was replaced."""

    index: int
    actor: Any = None
    pid: int = 0
    restarts: int = 0
    busy_since: float | None = None  # when its running call was sent, wall clock (None: idle)


@dataclass
class _Running:
    slot: _Slot
    request: RolloutRequest
    sent: float
    ignored: bool = False  # its step was withdrawn (a rollback): the result is dropped when it comes


@dataclass
class PoolStats:
    restarts: int = 0
    weight_sync_seconds: float = 0.0
    events: list[str] = field(default_factory=list)


class RolloutPool:
    def __init__(self, config: RunConfig, worker_cores: list[list[int]] | None = None) -> None:
        self.ray = import_ray()
        self.config = config
        self.owns_ray = connect_ray(config.cluster)
        rollout = config.rollout
        self.actor_type = self.ray.remote(
            num_cpus=rollout.worker_cpus,
            num_gpus=rollout.worker_gpus,
            max_restarts=0,  # the pool replaces a lost worker itself: it knows which request to queue again
            max_concurrency=3,  # `offer` (in_flight: continue) and `receive` (collective) reach it while it generates
        )(RolloutWorker)
        self.cores = worker_cores or [None] * rollout.workers
        self.slots = [_Slot(i) for i in range(rollout.workers)]
        self.queue: deque[RolloutRequest] = deque()
        self.running: dict[Any, _Running] = {}
        self.results: dict[int, RolloutResult] = {}
        self.published: Published | None = None
        self.collective = config.cluster.weight_sync == "collective"
        self.group: WeightGroup | None = None  # formed at the first broadcast, and again after a member is lost
        self.generation = 0
        self.last: tuple[int, dict] | None = None  # the version broadcast last: sent again to a group formed anew
        self.stats = PoolStats()
        self.last_read = time.time()  # wall clock, as the workers' own spans of work are
        self.spans: list[tuple[float, float]] = []  # the finished calls' (start, end), as the workers measured them
        pending = {self._start(slot): slot for slot in self.slots}  # started together, checked together
        self._await_ready(pending)
        # A watcher collects each finished call as it finishes and hands the worker its next queued step at once,
        # while the learner trains; the learner's calls and the watcher share the pool's state under this lock.
        self._changed = threading.Condition(threading.RLock())
        self._failure: BaseException | None = None
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="rollout-pool-watcher", daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            with self._changed:
                refs = list(self.running)
            if not refs:
                self._stop.wait(0.05)
                continue
            ready, _ = self.ray.wait(refs, num_returns=1, timeout=0.2)
            with self._changed:
                try:
                    for ref in ready:
                        if ref in self.running:  # not already collected, or given up on, by the learner's thread
                            self._collect(ref)
                except BaseException as error:  # noqa: BLE001 - handed to the learner's next call, which raises it
                    self._failure = error
                    return
                finally:
                    self._changed.notify_all()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    # ---- workers --------------------------------------------------------
    def _start(self, slot: _Slot) -> Any:
        slot.actor = self.actor_type.remote(self.config, slot.index, self.cores[slot.index])
        slot.busy_since = None
        return slot.actor.ready.remote()

    def _await_ready(self, pending: dict[Any, _Slot]) -> None:
        deadline = self.config.cluster.startup_timeout_seconds
        ready, late = self.ray.wait(list(pending), num_returns=len(pending), timeout=deadline)
        for ref in ready:
            slot = pending[ref]
            try:
                slot.pid = self.ray.get(ref)
            except self.ray.exceptions.RayError as error:
                raise WorkerError(f"rollout worker {slot.index}: failed to start: {last_line(error)}") from error
        if late:
            names = ", ".join(f"rollout worker {pending[ref].index}" for ref in late)
            raise WorkerError(f"{names}: did not start (load its model) within cluster.startup_timeout_seconds={deadline:g} s")

    def _replace(self, slot: _Slot, call: str, reason: str) -> None:
        """Kill the worker in `slot` and start another; beyond `cluster.max_restarts` the run stops instead."""
        limit = self.config.cluster.max_restarts
        failed = f"rollout worker {slot.index} (pid {slot.pid}): {call}: {reason}"
        if slot.restarts >= limit:
            raise WorkerError(f"{failed}; cluster.max_restarts={limit} restarts spent")
        slot.restarts += 1
        self.stats.restarts += 1
        self.stats.events.append(f"{failed}; replaced ({slot.restarts} of {limit} restarts)")
        logger.warning(self.stats.events[-1])
        try:
            self.ray.kill(slot.actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone: nothing to kill
            pass
        for ref, running in list(self.running.items()):  # its other running call is lost with it: queued again now
            if running.slot is slot:
                del self.running[ref]
                self._requeue(running)
        self._await_ready({self._start(slot): slot})
        self.group = None  # a member is new: the weight group is formed again before the next call (collective)

    # ---- weights --------------------------------------------------------
    def publish(self, version: int, weights: dict) -> None:
        """Make `version` of the learner's weights the one every request from now on is generated with (and, with
        in_flight: continue, the one running calls switch to at their next chunk)."""
        started = time.perf_counter()
        with self._changed:
            if self.collective:  # every worker holds it once this returns, and offers it to its running call itself
                self.last = (version, weights)
                self._broadcast()
                self.published = Published(version, None)
            else:
                self.published = Published(version, self.ray.put(weights))
                if self.config.rollout.in_flight == "continue":
                    for slot in self.slots:
                        if slot.busy_since is not None:  # not awaited: a hung worker is caught by its call's deadline
                            slot.actor.offer.remote(self.published)
            self.stats.weight_sync_seconds += time.perf_counter() - started

    def _broadcast(self) -> None:
        """Send the last version to every worker over the weight group (formed first if it is not), until each
        worker has taken it; a member that dies or misses the deadline is replaced (or the run stops, past
        `cluster.max_restarts`), and the group is formed again with its replacement."""
        version, weights = self.last
        while True:
            if self.group is None and not self._form_group(weights):
                continue
            sent_at = time.monotonic()
            receiving = {slot.actor.receive.remote(version): slot for slot in self.slots}
            try:
                self.group.broadcast(list(weights.values()))
                sent = None
            except RuntimeError as error:  # a member never took its part: which one, its receive tells
                sent = error
                # Closed now: the members still waiting for the rest of the version fail at once, not at their
                # own timeout (they are not replaced for it: they only lost their peer).
                self.group.close()
                self.group = None
            call = f"receive weights (version {version})"
            if self._settle(receiving, call, "cluster.timeout_seconds", self.config.cluster.timeout_seconds, sent_at):
                if sent is None:
                    return
                raise WorkerError(f"weight broadcast of version {version}: {last_line(sent)}")

    def _form_group(self, weights: dict) -> bool:
        """A new weight group of the learner (rank 0) and every worker; False when a member was lost (replaced)."""
        self.generation += 1
        address = GroupAddress(self.ray.util.get_node_ip_address(), free_port(), len(self.slots) + 1)
        specs = [TensorSpec(name, tuple(t.shape), t.dtype) for name, t in weights.items()]
        device = next(iter(weights.values())).device
        sent_at = time.monotonic()
        joining = {slot.actor.join.remote(address, specs, device.type): slot for slot in self.slots}
        deadline = self.config.cluster.startup_timeout_seconds
        failure = None
        try:
            self.group = WeightGroup(address, 0, device, deadline)
        except RuntimeError as error:  # a member did not come: named by its join below
            self.group, failure = None, error
        joined = self._settle(joining, "join the weight group", "cluster.startup_timeout_seconds", deadline, sent_at)
        if joined and failure is not None:  # every worker joined, yet the learner's side failed: no one to replace
            raise WorkerError(f"weight group {self.generation} at {address.host}:{address.port}: {last_line(failure)}")
        if not joined:
            self.group = None
        return joined

    def _settle(self, calls: dict[Any, _Slot], call: str, key: str, deadline: float, since: float) -> bool:
        """Wait for one call to every worker (a group's), sent at `since`; replace those that died or missed
        `deadline` (and, when none did, those that failed: a member that fails when another hangs only lost its
        peer). True if all returned."""
        remaining = max(0.0, deadline - (time.monotonic() - since))
        ready, late = self.ray.wait(list(calls), num_returns=len(calls), timeout=remaining)
        lost = [(calls[ref], f"no answer within {key}={deadline:g} s") for ref in late]
        failed = []
        for ref in ready:
            try:
                self.ray.get(ref)
            except self.ray.exceptions.ActorDiedError as error:
                lost.append((calls[ref], f"the worker died ({last_line(error)})"))
            except self.ray.exceptions.RayTaskError as error:
                failed.append((calls[ref], f"failed ({last_line(error)})"))
        for slot, reason in lost or failed:
            self._replace(slot, call, reason)
        return not (lost or failed)

    # ---- requests -------------------------------------------------------
    def submit(self, request: RolloutRequest) -> None:
        with self._changed:
            self._raise_failure()
            self.queue.append(request)
            self._dispatch()

    def withdraw(self, steps: set[int]) -> None:
        """Forget the requests of `steps` (a rollback abandoned the weights they were asked for): queued ones are
        dropped, running ones' results are ignored when they come, finished ones are discarded."""
        with self._changed:
            self.queue = deque(r for r in self.queue if r.step not in steps)
            for running in self.running.values():
                if running.request.step in steps:
                    running.ignored = True
            for step in steps:
                self.results.pop(step, None)

    def outstanding(self) -> set[int]:
        """Steps submitted and not yet taken."""
        with self._changed:
            queued = {r.step for r in self.queue} | set(self.results)
            return queued | {r.request.step for r in self.running.values() if not r.ignored}

    def _dispatch(self) -> None:
        if self.published is None:
            raise RuntimeError("RolloutPool: publish the learner's weights before submitting requests")
        if self.collective and self.group is None:  # a worker was replaced: it gets the weights before any call
            self._broadcast()
        idle = [slot for slot in self.slots if slot.busy_since is None]
        while idle and self.queue:
            slot, request = idle.pop(0), self.queue.popleft()
            now = time.time()
            ref = slot.actor.generate.remote(request, self.published)
            slot.busy_since = now
            self.running[ref] = _Running(slot, request, now)

    def take(self, step: int) -> RolloutResult:
        """The result of `step`'s request, waiting for it (never longer than the deadlines allow)."""
        timeout = self.config.cluster.timeout_seconds
        with self._changed:
            while step not in self.results:
                self._raise_failure()
                if step not in self.outstanding():
                    raise RuntimeError(f"RolloutPool.take: step {step + 1} was never submitted")
                self._dispatch()
                self._changed.wait(timeout=_POLL_SECONDS)  # the watcher wakes it when a call finishes
                self._raise_failure()
                now = time.time()
                for ref, running in list(self.running.items()):
                    if now - running.sent > timeout:
                        del self.running[ref]
                        running.slot.busy_since = None
                        call = f"generate (step {running.request.step + 1})"
                        self._replace(running.slot, call, f"no answer within cluster.timeout_seconds={timeout:g} s")
                        self._requeue(running)
            return self.results.pop(step)

    def _collect(self, ref: Any) -> None:
        running = self.running.pop(ref)
        running.slot.busy_since = None
        try:
            result = self.ray.get(ref)
        except self.ray.exceptions.ActorDiedError as error:
            call = f"generate (step {running.request.step + 1})"
            self._replace(running.slot, call, f"the worker died ({last_line(error)})")
            self._requeue(running)
            return
        except self.ray.exceptions.RayTaskError as error:  # the worker raised: its own error, not a lost process
            raise WorkerError(
                f"rollout worker {running.slot.index}: generate (step {running.request.step + 1}): {last_line(error)}"
            ) from error
        self.spans.append((result.started_at, result.finished_at))
        if not running.ignored:
            self.results[result.step] = result
        self._dispatch()  # the freed worker starts on a queued step at once, not when the learner next asks

    def _requeue(self, running: _Running) -> None:
        if not running.ignored:
            running.request.attempt += 1
            self.queue.appendleft(running.request)

    # ---- visibility -----------------------------------------------------
    def read_metrics(self) -> dict[str, float]:
        """Since the last read: the workers' idle share, restarts, weight-sync seconds, results waiting."""
        with self._changed:
            return self._read_metrics()

    def _read_metrics(self) -> dict[str, float]:
        self._raise_failure()
        now, since = time.time(), self.last_read
        busy = sum(max(0.0, min(end, now) - max(start, since)) for start, end in self.spans)
        busy += sum(now - max(slot.busy_since, since) for slot in self.slots if slot.busy_since is not None)
        span = max(now - since, 1e-9) * len(self.slots)
        self.spans = [(start, end) for start, end in self.spans if end > now]
        self.last_read = now
        metrics = {
            "async/rollout_idle_fraction": max(0.0, 1.0 - busy / span),
            "async/worker_restarts": float(self.stats.restarts),
            "async/weight_sync_seconds": self.stats.weight_sync_seconds,
            "async/queue_depth": float(len(self.results) + len(self.queue)),
        }
        self.stats.weight_sync_seconds = 0.0
        return metrics

    def take_events(self) -> list[str]:
        """The restarts' messages since the last call (for the step's warnings)."""
        with self._changed:
            events, self.stats.events = self.stats.events, []
            return events

    def worker_pids(self) -> dict[int, int]:
        return {slot.index: slot.pid for slot in self.slots}

    def close(self) -> None:
        self._stop.set()
        self._watcher.join(timeout=5.0)
        for slot in self.slots:
            try:
                self.ray.kill(slot.actor, no_restart=True)
            except Exception:  # noqa: BLE001 - a worker already gone
                pass
        if self.owns_ray:
            self.ray.shutdown()


def last_line(error: BaseException) -> str:
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(error).__name__
