"""One worker thread owns the engine and the tokenizer, and generates concurrent requests together.

Engines and fast tokenizers are not thread-safe, and a batch of prompts costs little more than one on a CPU or GPU,
so requests wait in a queue, not yet rendered: the worker takes the first, keeps collecting for `window_s` (or until
`max_sequences` choices), renders each into a `Job`, then runs one engine call per group of jobs with equal settings
(`Job.key`). Results and failures go back through each request's future: a request that cannot be rendered fails
alone, a failing group fails only its own requests.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from itertools import count

from rlvr.serve.backend import Generated, Job

# (jobs of one key, the batch's number) -> each job's choices
GroupRunner = Callable[[list[Job], int], list[list[Generated]]]


@dataclass(eq=False)
class Pending:
    """A request waiting for the worker: how to render it, how many choices it asks for, where its answer goes."""

    build: Callable[[], Job]
    size: int
    future: Future[tuple[Job, list[Generated]]] = field(default_factory=Future)


class Batcher:
    def __init__(self, run: GroupRunner, window_s: float, max_sequences: int) -> None:
        self.run = run
        self.window_s = window_s
        self.max_sequences = max_sequences
        self.queue: queue.Queue[Pending | None] = queue.Queue()
        self.batches = count()
        self.carried: Pending | None = None  # taken from the queue but left for the next batch, which it would overfill
        self.thread: threading.Thread | None = None

    def submit(self, build: Callable[[], Job], size: int) -> Future[tuple[Job, list[Generated]]]:
        pending = Pending(build, size)
        self.queue.put(pending)
        return pending.future

    def start(self) -> None:
        """A fresh worker per start: an app's lifespan may run more than once (a second test client)."""
        self.thread = threading.Thread(target=self._work, name="rlvr-serve-engine", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.queue.put(None)
        if self.thread is not None and self.thread.is_alive():
            self.thread.join()
        self.thread = None

    def collect(self) -> list[Pending] | None:
        """The next batch: the first request waiting, and those that arrive within the window while there is room."""
        first, self.carried = self.carried or self.queue.get(), None
        if first is None:
            return None
        batch, size = [first], first.size
        deadline = time.monotonic() + self.window_s
        while size < self.max_sequences:
            try:
                pending = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if pending is None:  # stopping: finish this batch first
                self.queue.put(None)
                break
            if size + pending.size > self.max_sequences:
                self.carried = pending
                break
            batch.append(pending)
            size += pending.size
        return batch

    def _work(self) -> None:
        while (batch := self.collect()) is not None:
            number = next(self.batches)
            groups: dict[tuple, list[tuple[Pending, Job]]] = {}
            for pending in batch:
                # A request whose caller gave up (a cancelled task cancels its future) is skipped; a running future
                # can no longer be cancelled, so setting its result later cannot fail and kill this thread.
                if not pending.future.set_running_or_notify_cancel():
                    continue
                try:
                    job = pending.build()
                except Exception as error:  # a request the server cannot render: its own error, the batch goes on
                    pending.future.set_exception(error)
                    continue
                groups.setdefault(job.key, []).append((pending, job))
            for members in groups.values():
                self._run(members, number)

    def _run(self, members: list[tuple[Pending, Job]], number: int) -> None:
        try:
            results = self.run([job for _, job in members], number)
        except Exception as error:  # the worker lives on: the error is each waiting request's to report
            for pending, _ in members:
                pending.future.set_exception(error)
            return
        for (pending, job), result in zip(members, results):
            pending.future.set_result((job, result))
