"""Tests for rlvr.eval.estimators: hand-computed values, brute-force cross-checks and simulated coverage."""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest

from rlvr.eval.estimators import (
    MAX_EXACT_SUBSETS,
    QuestionSamples,
    avg_at_n,
    best_of_k,
    bootstrap_ci,
    majority_answer_correct,
    metric_per_question,
    paired_difference,
    pass_at_k,
    sample_standard_error,
    summarize,
)


def question(correct: str, answers: str, scores: list[float] | None = None, subset: str = "default") -> QuestionSamples:
    """Compact constructor: correct as a string of 1/0, answers as one letter per sample with '-' for None."""
    return QuestionSamples(
        correct=[ch == "1" for ch in correct],
        answers=[None if ch == "-" else ch for ch in answers],
        scores=scores,
        subset=subset,
    )


# ----------------------------------------------------------------------------------------------------------------- pass@k


def test_pass_at_k_hand_values():
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - math.comb(3, 2) / math.comb(5, 2))
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(4, 2, 3) == 1.0  # n - c = 2 < k: every 3-subset holds a correct sample
    assert pass_at_k(1, 1, 1) == 1.0


def test_pass_at_k_matches_brute_force_enumeration():
    for n in range(1, 9):
        for c in range(n + 1):
            outcomes = [True] * c + [False] * (n - c)
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(outcomes, k))
                expected = sum(any(s) for s in subsets) / len(subsets)
                assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12), (n, c, k)


def test_pass_at_k_is_stable_for_large_n():
    # The binomials here overflow a float; exact rational arithmetic is the reference.
    n, c, k = 1000, 7, 100
    exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
    assert pass_at_k(n, c, k) == pytest.approx(float(exact), rel=1e-10)
    assert pass_at_k(1000, 1, 1) == pytest.approx(0.001)


@pytest.mark.parametrize("n, c, k", [(4, 1, 5), (4, 1, 0), (4, 5, 1), (4, -1, 1), (0, 0, 1)])
def test_pass_at_k_rejects_invalid_arguments(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_avg_at_n():
    assert avg_at_n(question("1100", "AABB")) == 0.5
    assert avg_at_n(question("0", "-")) == 0.0


def test_question_samples_rejects_misaligned_lists():
    with pytest.raises(ValueError):
        QuestionSamples(correct=[True, False], answers=["A"])
    with pytest.raises(ValueError):
        QuestionSamples(correct=[True], answers=["A"], scores=[1.0, 2.0])
    with pytest.raises(ValueError):
        QuestionSamples(correct=[], answers=[])


# ------------------------------------------------------------------------------------------------------------------ maj@k


def test_majority_tie_between_correct_and_wrong_answer_is_half():
    assert majority_answer_correct(question("10", "AB"), 2) == 0.5


def test_majority_by_hand_with_none_votes():
    q = question("1100", "AAB-")  # A is correct, B wrong, the last sample gave no answer
    assert majority_answer_correct(q, 4) == 1.0
    # Pairs: AA ->1, AB x2 -> tie 0.5 each, A- x2 -> 1 each, B- -> 0: (1 + 0.5 + 0.5 + 1 + 1 + 0) / 6.
    assert majority_answer_correct(q, 2) == pytest.approx(4 / 6)
    # Singles: A, A -> 1; B -> 0; None -> no vote -> 0.
    assert majority_answer_correct(q, 1) == pytest.approx(0.5)
    # Triples: AAB ->1, AA- ->1, AB- x2 -> 0.5 each.
    assert majority_answer_correct(q, 3) == pytest.approx(3 / 4)


def test_majority_without_any_answer_is_zero():
    assert majority_answer_correct(question("000", "---"), 2) == 0.0
    assert majority_answer_correct(question("111", "---"), 3) == 0.0


def test_majority_k_equals_n_is_plain_majority_vote():
    assert majority_answer_correct(question("001", "AAB"), 3) == 0.0
    assert majority_answer_correct(question("110", "AAB"), 3) == 1.0
    assert majority_answer_correct(question("00110", "ABCCD"), 5) == 1.0
    # Three-way tie with one correct answer.
    assert majority_answer_correct(question("100", "ABC"), 3) == pytest.approx(1 / 3)


def test_majority_answer_with_disagreeing_verdicts_uses_fraction_correct():
    assert majority_answer_correct(question("10", "AA"), 2) == 0.5
    assert majority_answer_correct(question("110", "AAA"), 1) == pytest.approx(2 / 3)


def test_majority_rejects_k_out_of_range():
    with pytest.raises(ValueError):
        majority_answer_correct(question("10", "AB"), 3)
    with pytest.raises(ValueError):
        majority_answer_correct(question("10", "--"), 0)


def reference_majority(q: QuestionSamples, k: int) -> float:
    """Independent, deliberately naive maj@k: loop over every k-subset with Counter and exact fractions."""
    verdicts: dict[str, list[bool]] = {}
    for answer, ok in zip(q.answers, q.correct):
        if answer is not None:
            verdicts.setdefault(answer, []).append(ok)
    answer_value = {a: Fraction(sum(v), len(v)) for a, v in verdicts.items()}
    total, count = Fraction(0), 0
    for subset in itertools.combinations(range(len(q.answers)), k):
        votes = Counter(q.answers[i] for i in subset if q.answers[i] is not None)
        count += 1
        if not votes:
            continue
        best = max(votes.values())
        tied = [a for a, v in votes.items() if v == best]
        total += sum(answer_value[a] for a in tied) / len(tied)
    return float(total / count)


def random_question(rng: np.random.Generator, n: int) -> QuestionSamples:
    answers = [None if x == 0 else "ABCD"[x - 1] for x in rng.integers(0, 5, size=n)]
    correct_answer = "ABCD"[rng.integers(0, 4)]
    # Occasionally flip a verdict so that samples with the same answer can disagree.
    correct = [(a == correct_answer) != (rng.random() < 0.1) for a in answers]
    return QuestionSamples(correct=correct, answers=answers)


def test_majority_matches_reference_on_random_small_cases():
    rng = np.random.default_rng(1)
    for _ in range(150):
        n = int(rng.integers(1, 9))
        q = random_question(rng, n)
        for k in range(1, n + 1):
            assert majority_answer_correct(q, k) == pytest.approx(reference_majority(q, k), abs=1e-12)


def test_majority_monte_carlo_path_is_close_to_exact_and_deterministic():
    n, k = 16, 8
    assert math.comb(n, k) > MAX_EXACT_SUBSETS  # this case must exercise the Monte-Carlo branch
    rng = np.random.default_rng(5)
    q = random_question(rng, n)
    exact = reference_majority(q, k)
    estimate = majority_answer_correct(q, k)
    assert estimate == pytest.approx(exact, abs=0.03)
    assert majority_answer_correct(q, k) == estimate


# --------------------------------------------------------------------------------------------------------------- best-of-k


def test_best_of_k_by_hand_with_score_ties():
    q = question("100", "ABC", scores=[3.0, 1.0, 3.0])
    assert best_of_k(q, 3) == 0.5  # samples 0 and 2 tie at the top, one of them correct
    # Pairs: {0,1} -> 1, {0,2} -> tie 0.5, {1,2} -> sample 2 -> 0.
    assert best_of_k(q, 2) == pytest.approx(0.5)
    assert best_of_k(q, 1) == pytest.approx(1 / 3)  # k = 1 is avg@n whatever the selector


def test_best_of_k_picks_the_highest_score():
    q = question("0010", "ABCD", scores=[0.1, -2.0, 5.0, 0.3])
    assert best_of_k(q, 4) == 1.0
    # Pairs containing sample 2 (3 of 6) pick it; the others pick a wrong sample.
    assert best_of_k(q, 2) == pytest.approx(0.5)


def test_best_of_k_with_verifier_as_selector_equals_pass_at_k():
    rng = np.random.default_rng(2)
    for _ in range(30):
        n = int(rng.integers(1, 10))
        correct = list(rng.random(n) < 0.4)
        q = QuestionSamples(correct=correct, answers=[None] * n, scores=[float(x) for x in correct])
        for k in range(1, n + 1):
            assert best_of_k(q, k) == pytest.approx(pass_at_k(n, sum(correct), k), abs=1e-12)


def test_best_of_k_requires_scores():
    with pytest.raises(ValueError, match="score"):
        best_of_k(question("10", "AB"), 1)
    with pytest.raises(ValueError, match="NaN"):
        best_of_k(question("10", "AB", scores=[1.0, float("nan")]), 1)


# ------------------------------------------------------------------------------------------------------ metric parsing


def test_metric_per_question_dispatch():
    qs = [question("1100", "AAB-", scores=[0.0, 1.0, 2.0, 3.0]), question("0001", "BBCA", scores=[4.0, 0.0, 0.0, 0.0])]
    np.testing.assert_allclose(metric_per_question(qs, "avg@n"), [0.5, 0.25])
    np.testing.assert_allclose(metric_per_question(qs, "pass@2"), [pass_at_k(4, 2, 2), pass_at_k(4, 1, 2)])
    np.testing.assert_allclose(metric_per_question(qs, "maj@4"), [1.0, 0.0])
    np.testing.assert_allclose(metric_per_question(qs, "bo@4"), [0.0, 0.0])  # the top score is a wrong/empty sample
    assert metric_per_question(qs, "pass@1").shape == (2,)


@pytest.mark.parametrize("name", ["avg", "avg@4", "pass@", "pass@x", "maj@-1", "pass@0", "best@2", "pass@2 ", ""])
def test_metric_per_question_rejects_bad_names(name):
    with pytest.raises(ValueError):
        metric_per_question([question("10", "AB")], name)


def test_metric_per_question_rejects_k_above_some_n():
    qs = [question("1100", "AABB"), question("10", "AB")]
    with pytest.raises(ValueError, match="question 1"):
        metric_per_question(qs, "maj@3")


# ------------------------------------------------------------------------------------------------------------ bootstrap


def test_bootstrap_ci_basic_properties():
    values = [0.0, 1.0, 1.0, 0.5, 0.25, 1.0, 0.0, 0.75]
    low, high = bootstrap_ci(values, resamples=2000, seed=3)
    assert 0.0 <= low < np.mean(values) < high <= 1.0
    assert bootstrap_ci(values, resamples=2000, seed=3) == (low, high)
    narrow = bootstrap_ci(values, resamples=2000, seed=3, level=0.5)
    assert low < narrow[0] < narrow[1] < high
    assert bootstrap_ci([0.3]) == (0.3, 0.3)
    assert bootstrap_ci([0.5] * 20, resamples=100) == (0.5, 0.5)
    with pytest.raises(ValueError):
        bootstrap_ci([])
    with pytest.raises(ValueError):
        bootstrap_ci(values, level=1.0)


def bootstrap_coverage(level: float, trials: int = 300, questions: int = 200) -> float:
    """Fraction of simulated benchmarks whose interval covers the population mean of avg@1.

    Each trial draws per-question accuracies from Beta(2, 3) (population mean 0.4) and one sample per question.
    """
    rng = np.random.default_rng(12345)
    true_mean = 2 / (2 + 3)
    covered = 0
    for trial in range(trials):
        accuracy = rng.beta(2.0, 3.0, size=questions)
        avg_at_1 = (rng.random(questions) < accuracy).astype(float)
        low, high = bootstrap_ci(avg_at_1, resamples=2000, seed=trial, level=level)
        covered += low <= true_mean <= high
    return covered / trials


def test_bootstrap_ci_has_nominal_coverage():
    assert 0.92 <= bootstrap_coverage(0.95) <= 0.98
    # The same check must notice a wrong level: a 50% interval covers about half the time.
    assert 0.40 <= bootstrap_coverage(0.5) <= 0.65


# ------------------------------------------------------------------------------------------------------ sample noise


def test_sample_standard_error_by_hand():
    qs = [question("10", "AB"), question("1110", "AAAB"), question("1", "A")]
    # p(1-p)/(n-1): 0.25 / 1 and 0.1875 / 3; the single-sample question contributes 0 but counts in Q.
    assert sample_standard_error(qs) == pytest.approx(math.sqrt(0.25 + 0.0625) / 3)
    assert sample_standard_error([question("1111", "AAAA")]) == 0.0
    with pytest.raises(ValueError):
        sample_standard_error([])


def test_sample_standard_error_matches_simulated_sampling_noise():
    rng = np.random.default_rng(7)
    questions, n, repeats = 40, 8, 3000
    accuracy = rng.beta(1.0, 1.0, size=questions)
    draws = rng.random((repeats, questions, n)) < accuracy[None, :, None]
    true_sd = float(draws.mean(axis=(1, 2)).std())  # spread of avg@n when only the samples are redrawn
    estimates = [
        sample_standard_error([QuestionSamples(correct=list(row), answers=[None] * n) for row in draws[r]]) for r in range(200)
    ]
    assert float(np.mean(estimates)) == pytest.approx(true_sd, rel=0.1)


# ----------------------------------------------------------------------------------------------------------- paired test


def test_paired_difference_identical_systems():
    values = list(np.random.default_rng(0).random(50))
    result = paired_difference(values, values, resamples=2000)
    assert result["difference"] == 0.0
    assert result["ci95"][0] <= 0.0 <= result["ci95"][1]
    assert result["p_value"] == pytest.approx(1.0)


def test_paired_difference_detects_a_clearly_better_system():
    rng = np.random.default_rng(1)
    base = (rng.random(200) < 0.4).astype(float)
    better = np.maximum(base, (rng.random(200) < 0.3).astype(float))  # fixes some questions, never breaks one
    result = paired_difference(better, base, resamples=2000)
    assert result["difference"] == pytest.approx(float((better - base).mean()))
    assert result["difference"] > 0
    assert result["ci95"][0] > 0
    assert result["p_value"] < 0.01
    reverse = paired_difference(base, better, resamples=2000)
    assert reverse["difference"] < 0 and reverse["ci95"][1] < 0 and reverse["p_value"] < 0.01


def test_paired_difference_noise_is_not_significant():
    rng = np.random.default_rng(4)
    difficulty = rng.random(100)
    a = (rng.random(100) < difficulty).astype(float)
    b = (rng.random(100) < difficulty).astype(float)
    result = paired_difference(a, b, resamples=2000)
    assert result["ci95"][0] < result["difference"] < result["ci95"][1]
    if result["ci95"][0] < 0 < result["ci95"][1]:
        assert result["p_value"] > 0.05


def test_paired_difference_p_value_is_two_sided():
    # For a mean of 400 differences the bootstrap distribution is close to normal, so the two-sided p-value must
    # agree with the normal-theory one; a one-sided p-value would be about half of it.
    rng = np.random.default_rng(9)
    a = rng.normal(0.05, 1.0, size=400)
    b = np.zeros(400)
    z = a.mean() / (a.std() / math.sqrt(len(a)))
    normal_p = math.erfc(abs(z) / math.sqrt(2))
    assert 0.05 < normal_p < 0.5  # a borderline case, where the factor of two matters
    assert paired_difference(a, b)["p_value"] == pytest.approx(normal_p, abs=0.02)


def test_paired_difference_rejects_length_mismatch():
    with pytest.raises(ValueError, match="same questions"):
        paired_difference([1.0, 0.0], [1.0])


# ------------------------------------------------------------------------------------------------------------- summary


def handmade_set() -> list[QuestionSamples]:
    return [
        question("1000", "ABBC", subset="math"),  # pass@2 = 1 - C(3,2)/C(4,2) = 1/2; maj@4: B wins -> 0
        question("1100", "XXY-", subset="math"),  # pass@2 = 1 - C(2,2)/C(4,2) = 5/6; maj@4: X wins -> 1
        question("0000", "PPQQ", subset="code"),  # pass@2 = 0; maj@4: P/Q tie, both wrong -> 0
    ]


def test_summarize_exact_values_and_keys():
    summary = summarize(handmade_set(), ks=[1, 2, 4, 8], resamples=500)
    assert summary["questions"] == 3
    assert summary["samples_per_question"] == 4
    assert summary["avg@n"]["value"] == pytest.approx((0.25 + 0.5 + 0.0) / 3)
    assert summary["avg@n"]["n"] == 4
    assert summary["avg@n"]["sample_se"] == pytest.approx(math.sqrt(0.1875 / 3 + 0.25 / 3) / 3)
    assert summary["pass@1"]["value"] == pytest.approx(0.25)
    assert summary["pass@2"]["value"] == pytest.approx((0.5 + 5 / 6 + 0.0) / 3)
    assert summary["pass@4"]["value"] == pytest.approx(2 / 3)
    assert summary["maj@4"]["value"] == pytest.approx(1 / 3)
    assert "pass@8" not in summary and "maj@8" not in summary  # k above n is skipped
    assert not any(key.startswith("bo@") for key in summary)  # no selector scores
    for key in ["avg@n", "pass@1", "pass@2", "pass@4", "maj@1", "maj@2", "maj@4"]:
        low, high = summary[key]["ci95"]
        assert low <= summary[key]["value"] <= high
    json.dumps(summary)  # must be machine-readable as-is


def test_summarize_splits_subsets():
    summary = summarize(handmade_set(), ks=[2, 4], resamples=500)
    assert set(summary["subsets"]) == {"code", "math"}
    math_part, code_part = summary["subsets"]["math"], summary["subsets"]["code"]
    assert math_part["questions"] == 2 and code_part["questions"] == 1
    assert math_part["avg@n"]["value"] == pytest.approx(0.375)
    assert math_part["maj@4"]["value"] == pytest.approx(0.5)
    assert code_part["pass@4"] == {"value": 0.0, "ci95": [0.0, 0.0]}
    assert "subsets" not in math_part
    assert "subsets" not in summarize(handmade_set()[:2], ks=[2], resamples=100)


def test_summarize_best_of_k_and_varying_sample_counts():
    qs = [
        question("10", "AB", scores=[1.0, 0.0]),
        question("001", "ABC", scores=[0.0, 0.0, 2.0]),
    ]
    summary = summarize(qs, ks=[1, 2, 3], resamples=200)
    assert summary["samples_per_question"] == {"min": 2, "max": 3}
    assert summary["bo@2"]["value"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert "pass@3" not in summary
    qs[0].scores = None
    assert "bo@1" not in summarize(qs, ks=[1], resamples=200)
    with pytest.raises(ValueError):
        summarize([], ks=[1])
    with pytest.raises(ValueError):
        summarize(qs, ks=[0])
