"""Scoring a batch of completions in parallel worker processes, each completion under a hard timeout.

Verifiers run model-written text through SymPy, reasoning-gym scorers and a code sandbox: each is fast on
sane input, but one hostile completion can hang any of them (a tower of exponents, a pathological regex,
a program that waits forever). A hung verifier must not stall the run, so each completion is scored as a
separate task in a pool of processes (pebble's `ProcessPool`): a task that runs past `timeout_seconds` has
its worker killed and replaced, and the completion scores 0 with the reason logged and counted; so does
a worker that dies (killed for memory, a crash in C code). Workers start with `spawn`, not `fork`: the
trainer process holds torch's thread pools (and on a GPU, a CUDA context) that a forked child must not touch.

With `workers=0` the rubric runs in the calling process: no start-up cost, but no timeout either (math-verify
still bounds itself with its own alarm there); an exception still scores 0 with its reason.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import replace

from pebble import ProcessExpired, ProcessPool

from rlvr.envs.base import Problem, Rubric, Score
from rlvr.episode import Episode

logger = logging.getLogger(__name__)


def _warm_up() -> None:
    """Import the verifiers' heavy dependencies once per worker, so the first completion's timeout is not
    spent importing SymPy."""
    import math_verify  # noqa: F401
    import reasoning_gym  # noqa: F401

    import rlvr.rewards  # noqa: F401


def _score(rubric: Rubric, text: str, problem: Problem) -> Score:
    return rubric.score(text, problem)


class Scorer:
    def __init__(self, rubric: Rubric, workers: int = 2, timeout_seconds: float = 30.0) -> None:
        self.rubric = rubric
        self.timeout_seconds = timeout_seconds
        self._pool: ProcessPool | None = None
        if workers > 0:
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPool(max_workers=workers, initializer=_warm_up, context=context)

    def score(self, texts: Sequence[str], problems: Sequence[Problem]) -> list[Score]:
        """One Score per (text, problem); never raises because of what a completion contains."""
        if self._pool is None:
            return [self._inline(text, problem) for text, problem in zip(texts, problems)]
        futures = [
            self._pool.schedule(_score, args=(self.rubric, text, problem), timeout=self.timeout_seconds)
            for text, problem in zip(texts, problems)
        ]
        return [self._collect(future) for future in futures]

    def score_episodes(self, episodes: Sequence[Episode], problems: Sequence[Problem], max_tokens: int) -> list[Score]:
        """Score each episode against its problem and store the result on it (reward, components, diagnostics).

        Each problem gets the episode's own length and the generation limit in its meta, for length-aware
        rewards: the reward sees only text, and tokens are what the limit counts.
        """
        sized = [
            replace(problem, meta={**problem.meta, "max_tokens": max_tokens, "completion_tokens": episode.num_tokens})
            for episode, problem in zip(episodes, problems)
        ]
        scores = self.score([episode.text for episode in episodes], sized)
        for episode, problem, score in zip(episodes, problems, scores):
            episode.reward, episode.rewards = score.total, score.components
            episode.meta["subset"] = problem.subset
            episode.meta["score_info"] = score.info
            if score.error:
                episode.meta["score_error"] = score.error
        errors = [score.error for score in scores if score.error]
        if errors:
            logger.warning(
                "%d of %d completions could not be scored and got reward 0; first: %s", len(errors), len(scores), errors[0]
            )
        return scores

    def _inline(self, text: str, problem: Problem) -> Score:
        try:
            return self.rubric.score(text, problem)
        except Exception as exc:
            return self.rubric.failed(f"{type(exc).__name__}: {exc}")

    def _collect(self, future) -> Score:
        try:
            return future.result()
        except FutureTimeout:
            return self.rubric.failed(f"timed out after {self.timeout_seconds:g} s")
        except ProcessExpired as exc:
            return self.rubric.failed(f"the scoring worker died (exit code {exc.exitcode})")
        except Exception as exc:
            return self.rubric.failed(f"{type(exc).__name__}: {exc}")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.stop()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> Scorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
