"""Scoring in worker processes: the same scores as in-process, and a hang or a dead worker costs one completion
its reward (0, with the reason), never the run."""

from __future__ import annotations

import os
import signal

import pytest

from rlvr.rewards import Rubric, Score
from rlvr.scoring import Scorer
from rlvr.types import Episode, Problem

# Slow for SymPy: math-verify's own budget is 5 s, so a 1 s pool timeout is what stops it.
HOSTILE_MATH = "Answer: 9^{9^{9^{9^{9}}}}"


def batch() -> tuple[list[str], list[Problem]]:
    math = Problem("q", "The total is <<3*4=12>>12.\n#### 12", verifier="math")
    qa = Problem("q", "Paris", verifier="f1", meta={"aliases": ["City of Paris"]})
    texts = ["3*4 is 12\nAnswer: 12", "Answer: 13", "Answer: paris, france", "Answer: the city of Paris"]
    return texts, [math, math, qa, qa]


class DyingRubric(Rubric):
    """Kills its worker, as the kernel's OOM killer would."""

    def score(self, text: str, problem: Problem) -> Score:
        if text == "die":
            os.kill(os.getpid(), signal.SIGKILL)
        return super().score(text, problem)


def test_workers_score_what_the_rubric_scores_in_process():
    texts, problems = batch()
    rubric = Rubric({"correct": 1.0, "format": 0.5})
    inline = Scorer(rubric, workers=0).score(texts, problems)
    with Scorer(rubric, workers=2) as scorer:
        parallel = scorer.score(texts, problems)
    assert parallel == inline
    assert [s.components["correct"] for s in inline] == [1.0, 0.0, pytest.approx(2 / 3), 1.0]
    assert all(s.error is None for s in inline)


def test_a_hang_scores_zero_with_its_reason_and_the_pool_goes_on():
    texts, problems = batch()
    with Scorer(Rubric({"correct": 1.0}), workers=2, timeout_seconds=1.0) as scorer:
        # 41 completions go out in chunks of 6: the hang takes its chunk's neighbours down with it, then they
        # are scored again one by one.
        scores = scorer.score([*texts * 5, HOSTILE_MATH, *texts * 5], [*problems * 5, problems[0], *problems * 5])
    # Our timeout ended the hang (not math-verify's own), and every other completion was still scored.
    assert scores[20] == Score(0.0, {"correct": 0.0}, error="timed out after 1 s")
    assert [s.total for s in scores[:20] + scores[21:]] == [1.0, 0.0, pytest.approx(2 / 3), 1.0] * 10


def test_a_dead_worker_scores_zero_and_is_replaced():
    texts, problems = batch()
    with Scorer(DyingRubric({"correct": 1.0}), workers=1, timeout_seconds=20) as scorer:
        scores = scorer.score(["die", texts[0]], problems[:2])
    assert scores[0].total == 0.0 and scores[0].error is not None and "worker died" in scores[0].error
    assert scores[1].total == 1.0


def test_in_process_errors_score_zero_with_the_reason():
    scores = Scorer(Rubric({"correct": 1.0}), workers=0).score(["Answer: 1"], [Problem("q", "1", verifier="nope")])
    assert scores[0].total == 0.0 and "'nope' is not a registered verifier" in scores[0].error


def test_score_episodes_fills_in_rewards_subsets_and_lengths():
    problem = Problem("q", "12", verifier="math", subset="gsm")
    episodes = [Episode([1], list(range(n)), [0.0] * n, [1] * n, text="Answer: 12") for n in (4, 9, 10)]
    scorer = Scorer(Rubric({"correct": 1.0, "length": 1.0}), workers=0)
    scores = scorer.score_episodes(episodes, [problem] * 3, max_tokens=10)
    # DAPO's ramp with the default buffer of 2 tokens under a limit of 10: 0 up to 8 tokens, -0.5 at 9, -1 at 10.
    assert [e.rewards["length"] for e in episodes] == [0.0, -0.5, -1.0]
    assert [e.reward for e in episodes] == [1.0, 0.5, 0.0] == [s.total for s in scores]
    assert all(e.meta["subset"] == "gsm" and "score_error" not in e.meta for e in episodes)
    assert "max_tokens" not in problem.meta  # the shared problem is not mutated
