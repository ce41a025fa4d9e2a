"""Scoring a batch of completions in parallel worker processes, each completion under a hard timeout.

Verifiers run model-written text through SymPy, reasoning-gym scorers and a code sandbox: each is fast on
sane input, but one hostile completion can hang any of them (a tower of exponents, a pathological regex,
a program that waits forever). A hung verifier must not stall the run, so completions are scored in a pool
of processes (pebble's `ProcessPool`) whose tasks run under a hard timeout: a task that runs past
`timeout_seconds` has its worker killed and replaced; so does a worker that dies (killed for memory, a crash
in C code). Workers start with `spawn`, not `fork`: the trainer process holds torch's thread pools (and on a
GPU, a CUDA context) that a forked child must not touch.

A task is a chunk of completions, not one: most verdicts take milliseconds, about what it costs to ship a task
to a worker and back. A chunk that times out or loses its worker is scored again one completion per task, each
under the same timeout, so a hang costs at most two timeouts and only the completion that hung scores 0, with
the reason logged and counted.

With `workers=0` the rubric runs in the calling process: no start-up cost, but no timeout either (math-verify
still bounds itself with its own alarm there); an exception still scores 0 with its reason.

The reward-hacking probes (`rlvr.rewards.probes`) run in the same task right after the rubric, so the timeout
bounds them too; their findings travel in `Score.flags`, and `on_hack` decides what a flag costs.

A judge (`rlvr.rewards.judge`) is a model, which cannot run per completion in each worker: the scorer's `Judge`
grades the judged completions of a call here first, batched and under its own deadline, and each verdict travels
to the workers in its problem's meta.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import replace

from pebble import ProcessExpired, ProcessPool

from rlvr.errors import ConfigError
from rlvr.plugins import load_plugins, loaded_plugins
from rlvr.rewards import Rubric, Score
from rlvr.rewards.calibration import split_confidence
from rlvr.rewards.judge import JUDGE, Judge
from rlvr.rewards.probes import hacked, run_probes
from rlvr.step_metrics import PROBES_META
from rlvr.types import Episode, Problem

logger = logging.getLogger(__name__)


def _warm_up(plugins: list[str]) -> None:
    """Import the verifiers' heavy dependencies once per worker, so the first completion's timeout is not
    spent importing SymPy; and the run's plugins, whose rewards the rubric names by module."""
    import math_verify  # noqa: F401
    import reasoning_gym  # noqa: F401

    load_plugins(plugins)


def _score(rubric: Rubric, text: str, problem: Problem) -> Score:
    """The rubric's score; a verifier that raises scores 0 with the exception as the reason."""
    try:
        score = rubric.score(text, problem)
    except Exception as exc:
        return rubric.failed(f"{type(exc).__name__}: {exc}")
    score.flags = run_probes(text, problem, score.components, rubric.weights)
    return score


def _score_chunk(rubric: Rubric, items: list[tuple[str, Problem]]) -> list[Score]:
    return [_score(rubric, text, problem) for text, problem in items]


def _zero_if_hacked(score: Score) -> Score:
    # Only the reward is zeroed: the components keep the verifiers' verdicts, so accuracy still says what they saw.
    return replace(score, total=0.0) if hacked(score.flags) else score


# scoring.on_hack: what a flagged completion's score becomes.
HACK_POLICIES = {"flag": lambda score: score, "zero": _zero_if_hacked}


class Scorer:
    # Chunks per worker in one call: enough to even out uneven chunks, few enough to keep the overhead small.
    CHUNKS_PER_WORKER = 4

    def __init__(
        self,
        rubric: Rubric,
        workers: int = 2,
        timeout_seconds: float = 30.0,
        on_hack: str = "flag",
        judge: Judge | None = None,
    ) -> None:
        if on_hack not in HACK_POLICIES:
            raise ValueError(f"scoring.on_hack: unknown policy {on_hack!r} (choices: {', '.join(HACK_POLICIES)})")
        self.rubric = rubric
        self.judge = judge
        self.on_hack = HACK_POLICIES[on_hack]
        self.workers = workers
        self.timeout_seconds = timeout_seconds
        self._pool: ProcessPool | None = None
        if workers > 0:
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPool(max_workers=workers, initializer=_warm_up, initargs=(loaded_plugins(),), context=context)

    def score(self, texts: Sequence[str], problems: Sequence[Problem]) -> list[Score]:
        """One Score per (text, problem), after `on_hack`; never raises because of what a completion contains."""
        return [self.on_hack(score) for score in self._score(list(zip(texts, problems)))]

    def _score(self, items: list[tuple[str, Problem]]) -> list[Score]:
        if self._pool is None:
            return _score_chunk(self.rubric, items)
        size = max(1, math.ceil(len(items) / (self.workers * self.CHUNKS_PER_WORKER)))
        chunks = [items[i : i + size] for i in range(0, len(items), size)]
        futures = [self._pool.schedule(_score_chunk, args=(self.rubric, chunk), timeout=self.timeout_seconds) for chunk in chunks]
        scores: list[Score] = []
        for chunk, future in zip(chunks, futures):
            try:
                scores += future.result()
            except (FutureTimeout, ProcessExpired) as failure:
                if len(chunk) == 1:
                    scores.append(self._failed(failure))
                    continue
                # Which completion hung is unknown: score each alone, so only that one pays.
                singles = [
                    self._pool.schedule(_score_chunk, args=(self.rubric, [item]), timeout=self.timeout_seconds) for item in chunk
                ]
                scores += [self._single(single) for single in singles]
        return scores

    def score_completions(
        self,
        texts: Sequence[str],
        num_tokens: Sequence[int],
        problems: Sequence[Problem],
        max_tokens: int,
        thinking_tokens: Sequence[int] | None = None,
    ) -> list[Score]:
        """`score`, with each completion's length in tokens (and its thinking's, when given) and the generation limit
        put in its problem's meta for length-aware rewards (a reward sees only text, and tokens are what the limit
        counts). Failures are logged."""
        thinking = thinking_tokens if thinking_tokens is not None else [None] * len(texts)
        sized = [
            replace(
                problem, meta={**problem.meta, "max_tokens": max_tokens, "completion_tokens": tokens, "thinking_tokens": think}
            )
            for tokens, think, problem in zip(num_tokens, thinking, problems)
        ]
        scores = self.score(texts, self._judged(texts, sized))
        errors = [score.error for score in scores if score.error]
        if errors:
            logger.warning(
                "%d of %d completions could not be scored and got reward 0; first: %s", len(errors), len(scores), errors[0]
            )
        broken = [f"{finding.probe}: {finding.error}" for score in scores for finding in score.flags if finding.error]
        if broken:
            logger.warning("%d reward-hacking probe runs crashed (not flagged); first: %s", len(broken), broken[0])
        return scores

    def _judged(self, texts: Sequence[str], problems: list[Problem]) -> list[Problem]:
        """The problems, those the judge grades (its verifier's, or all when the rubric weights `judge`) with its
        verdict in their meta: one batched call for them all."""
        judged = [i for i, problem in enumerate(problems) if problem.verifier == JUDGE or self.rubric.weights.get(JUDGE)]
        if not judged:
            return problems
        if self.judge is None:
            raise ConfigError("verifier: judge needs the `judge:` section, and this scorer was built without a judge")
        answers = [split_confidence(texts[i])[0] if self.rubric.confidence else texts[i] for i in judged]
        annotated = self.judge.annotate(answers, [problems[i] for i in judged])
        problems = list(problems)
        for index, problem in zip(judged, annotated):
            problems[index] = problem
        return problems

    def score_episodes(
        self,
        episodes: Sequence[Episode],
        problems: Sequence[Problem],
        max_tokens: int,
        thinking_tokens: Sequence[int] | None = None,
    ) -> list[Score]:
        """Score each episode against its problem and store the result on it (reward, components, diagnostics)."""
        texts, lengths = [e.text for e in episodes], [e.generated_tokens for e in episodes]
        scores = self.score_completions(texts, lengths, problems, max_tokens, thinking_tokens)
        for episode, problem, score in zip(episodes, problems, scores):
            episode.reward, episode.rewards = score.total, score.components
            episode.meta["subset"] = problem.subset
            episode.meta["score_info"] = score.info
            episode.meta[PROBES_META] = {finding.probe: finding.flagged for finding in score.flags if finding.error is None}
            if score.error:
                episode.meta["score_error"] = score.error
        return scores

    def _single(self, future) -> Score:
        try:
            return future.result()[0]
        except (FutureTimeout, ProcessExpired) as failure:
            return self._failed(failure)

    def _failed(self, failure: Exception) -> Score:
        if isinstance(failure, ProcessExpired):
            return self.rubric.failed(f"the scoring worker died (exit code {failure.exitcode})")
        return self.rubric.failed(f"timed out after {self.timeout_seconds:g} s")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.stop()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> Scorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
