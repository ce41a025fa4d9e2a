"""The statistics of honest evaluation: unbiased metric estimators and their uncertainty.

Why this module exists. A reasoning model is usually evaluated by drawing n samples per question and reporting
avg@n, pass@k, maj@k or best-of-k. Each of these is an *estimate*, and the naive ways of computing them are biased
or noisy in ways that make two runs look different when they are not:

* pass@k computed as "did any of the first k samples succeed" uses only k of the n samples; the estimator of
  Chen et al. (2021) averages over every k-subset of the n samples and is unbiased for the probability that k fresh
  samples contain a correct one.
* maj@k and best-of-k on "the first k samples" depend on sampling order; here they are expectations over uniformly
  random k-subsets of the n samples, so every sample is used and the result does not depend on order. Ties (between
  answers, or between selector scores) are resolved uniformly at random *in expectation*, so no arbitrary rule such
  as "the first answer wins" leaks into the number.
* A single accuracy number hides two different sources of noise: which questions happen to be in the benchmark
  (captured by a bootstrap over questions) and how many samples were drawn per question (captured by the sample
  standard error). Both are reported.
* Comparing two systems on the same questions should use a *paired* bootstrap: per-question difficulty is shared, so
  the difference is far less noisy than two independent intervals suggest.

Everything here is a pure function of numpy arrays and plain Python data; nothing depends on torch or a model.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# Enumerate every k-subset while there are at most this many; beyond it, average over this many random subsets.
MAX_EXACT_SUBSETS = 2000
MONTE_CARLO_SUBSETS = 2000
# A fixed seed makes maj@k / bo@k reproducible run to run: the same samples must give the same number.
SUBSET_SEED = 0
# Bound on the number of bootstrap indices materialised at once, so large benchmarks don't exhaust memory.
_BOOTSTRAP_CHUNK_ELEMENTS = 4_000_000

_METRIC_PATTERN = re.compile(r"^(?:avg@n|(pass|maj|bo)@(\d+))$")


@dataclass
class QuestionSamples:
    """The n samples drawn for one question.

    correct: one per sample, in sampling order.
    answers: the extracted answer of each sample, already normalised for voting; None means no answer was extracted.
    scores:  a selector's score per sample for best-of-N (higher is preferred), e.g. the mean log-probability.
    subset:  the benchmark subset the question belongs to, for per-subset reporting.
    """

    correct: list[bool]
    answers: list[str | None]
    scores: list[float] | None = None
    subset: str = "default"

    def __post_init__(self) -> None:
        # Misaligned lists would silently pair a sample's answer with another sample's correctness.
        if not self.correct:
            raise ValueError("a question needs at least one sample")
        if len(self.answers) != len(self.correct):
            raise ValueError(f"{len(self.answers)} answers for {len(self.correct)} samples")
        if self.scores is not None and len(self.scores) != len(self.correct):
            raise ValueError(f"{len(self.scores)} scores for {len(self.correct)} samples")

    @property
    def n(self) -> int:
        return len(self.correct)


# ---------------------------------------------------------------------------------------------------------------------
# Per-question estimators
# ---------------------------------------------------------------------------------------------------------------------


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of Chen et al. (2021) from n samples of which c are correct.

        pass@k = 1 - C(n - c, k) / C(n, k)

    i.e. one minus the probability that a uniformly random k-subset of the n samples contains no correct sample.
    The binomial coefficients overflow floats for realistic n, so the ratio is computed as the telescoping product

        C(n - c, k) / C(n, k) = prod_{i = n - c + 1}^{n} (1 - k / i),

    whose factors all lie in [0, 1]. When n - c < k every k-subset must contain a correct sample, so the value is 1.
    """
    if n < 1:
        raise ValueError(f"pass@k needs n >= 1 samples, got n={n}")
    if not 0 <= c <= n:
        raise ValueError(f"the number of correct samples must be in [0, n={n}], got c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass@k needs 1 <= k <= n={n}, got k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


def avg_at_n(q: QuestionSamples) -> float:
    """avg@n: the mean correctness of the n samples, an unbiased estimate of the question's per-sample accuracy."""
    return float(np.mean(np.asarray(q.correct, dtype=np.float64)))


@lru_cache(maxsize=64)
def _k_subsets(n: int, k: int) -> np.ndarray:
    """Index array of shape (m, k): every k-subset of range(n) if there are at most MAX_EXACT_SUBSETS of them,
    otherwise MONTE_CARLO_SUBSETS uniformly random k-subsets from a fixed seed.

    Averaging a per-subset quantity over these rows is the exact expectation over uniformly random k-subsets, or an
    unbiased Monte-Carlo estimate of it. Cached because every question of a benchmark usually shares n and k.
    """
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n={n}, got k={k}")
    if math.comb(n, k) <= MAX_EXACT_SUBSETS:
        subsets = np.array(list(itertools.combinations(range(n), k)), dtype=np.intp)
    else:
        # The first k positions of a uniformly random permutation form a uniformly random k-subset.
        rng = np.random.default_rng(SUBSET_SEED)
        subsets = np.argsort(rng.random((MONTE_CARLO_SUBSETS, n)), axis=1)[:, :k]
    subsets.setflags(write=False)  # shared through the cache; nobody may mutate it
    return subsets


def _mean_over_winners(winners: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Per row, the mean of `value` over the columns where `winners` is True (0 for rows without a winner).

    This is how a tie is broken uniformly at random *in expectation*: each tied candidate wins with equal
    probability, so the expected outcome is the plain mean of their values.
    """
    count = winners.sum(axis=1)
    total = np.where(winners, value, 0.0).sum(axis=1)
    return np.divide(total, count, out=np.zeros(len(count)), where=count > 0)


def majority_answer_correct(q: QuestionSamples, k: int) -> float:
    """maj@k for one question: the expected correctness of a majority vote among k of the question's n samples.

    The expectation is over uniformly random k-subsets of the n samples: exact enumeration when there are at most
    MAX_EXACT_SUBSETS subsets, otherwise a seeded Monte-Carlo average over MONTE_CARLO_SUBSETS random subsets.
    Within one subset:

    * samples whose answer is None do not vote (an unparseable sample should not count as a vote for anything);
    * the answer with the most votes wins;
    * a tie between answers is broken uniformly at random, computed in expectation: the subset contributes the
      mean correctness of the tied answers (e.g. one correct and one wrong answer tied -> 0.5);
    * a subset in which nobody votes contributes 0 (the system gave no answer).

    An answer's correctness is the fraction of the question's samples (all n of them) giving that answer that were
    judged correct. Normally this is 0 or 1; it is fractional only when the verifier sees more than the normalised
    answer and samples with the same answer were judged differently, and then the fraction is the probability that
    the vote's winning sample would be judged correct.

    With k == n there is a single subset, so this is the plain majority vote over all samples.
    """
    labels = [a for a in q.answers if a is not None]
    distinct = list(dict.fromkeys(labels))  # first-appearance order; the order does not affect the result
    if not distinct:
        _k_subsets(q.n, k)  # still validate k, so a bad k is not hidden by a question without answers
        return 0.0
    index = {a: i for i, a in enumerate(distinct)}
    answer_id = np.array([-1 if a is None else index[a] for a in q.answers], dtype=np.intp)
    correct = np.asarray(q.correct, dtype=np.float64)
    answer_correctness = np.array([correct[answer_id == i].mean() for i in range(len(distinct))])

    subsets = _k_subsets(q.n, k)
    votes = (answer_id[subsets][:, :, None] == np.arange(len(distinct))).sum(axis=1)  # (subsets, answers)
    top = votes.max(axis=1, keepdims=True)
    winners = (votes == top) & (top > 0)
    return float(_mean_over_winners(winners, np.broadcast_to(answer_correctness, winners.shape)).mean())


def best_of_k(q: QuestionSamples, k: int) -> float:
    """bo@k for one question: the expected correctness of the highest-scoring of k samples, selected by `q.scores`.

    The expectation is over uniformly random k-subsets of the n samples, with the same exact-or-Monte-Carlo rule as
    `majority_answer_correct`. A tie for the highest score is broken uniformly at random in expectation: the subset
    contributes the mean correctness of the tied samples.

    With the verifier itself as the selector (score = correctness) best-of-k is exactly pass@k, since the subset
    scores 1 iff it contains a correct sample; the eval runner reports that "oracle" row with `pass_at_k`.
    """
    if q.scores is None:
        raise ValueError("best-of-k needs a selector score per sample (QuestionSamples.scores is None)")
    scores = np.asarray(q.scores, dtype=np.float64)
    if np.isnan(scores).any():
        raise ValueError("selector scores contain NaN, which cannot be ranked")
    correct = np.asarray(q.correct, dtype=np.float64)

    subsets = _k_subsets(q.n, k)
    subset_scores = scores[subsets]
    winners = subset_scores == subset_scores.max(axis=1, keepdims=True)
    return float(_mean_over_winners(winners, correct[subsets]).mean())


# ---------------------------------------------------------------------------------------------------------------------
# Per-benchmark aggregation
# ---------------------------------------------------------------------------------------------------------------------


def _parse_metric(metric: str) -> tuple[str, int | None]:
    match = _METRIC_PATTERN.match(metric)
    if match is None:
        raise ValueError(f"unknown metric {metric!r}; expected 'avg@n', 'pass@K', 'maj@K' or 'bo@K' with an integer K")
    if match.group(1) is None:
        return "avg", None
    k = int(match.group(2))
    if k < 1:
        raise ValueError(f"metric {metric!r}: K must be at least 1")
    return match.group(1), k


def metric_per_question(questions: Sequence[QuestionSamples], metric: str) -> np.ndarray:
    """The value of `metric` for each question, in order: "avg@n", "pass@K", "maj@K" or "bo@K" (K an integer).

    The benchmark score is the mean of this array; keeping it per question is what lets the bootstrap resample
    questions and the paired comparison line two systems up question by question.
    """
    kind, k = _parse_metric(metric)
    if k is not None:
        for i, q in enumerate(questions):
            if k > q.n:
                raise ValueError(f"metric {metric!r}: K={k} exceeds the {q.n} samples of question {i}")
    if kind == "avg":
        values = [avg_at_n(q) for q in questions]
    elif kind == "pass":
        values = [pass_at_k(q.n, sum(bool(x) for x in q.correct), k) for q in questions]
    elif kind == "maj":
        values = [majority_answer_correct(q, k) for q in questions]
    else:
        values = [best_of_k(q, k) for q in questions]
    return np.asarray(values, dtype=np.float64)


# ---------------------------------------------------------------------------------------------------------------------
# Uncertainty
# ---------------------------------------------------------------------------------------------------------------------


def _bootstrap_means(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Means of `resamples` resamples of `values` drawn with replacement, generated in memory-bounded chunks."""
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    rng = np.random.default_rng(seed)
    size = len(values)
    chunk = max(1, _BOOTSTRAP_CHUNK_ELEMENTS // size)
    means = []
    for start in range(0, resamples, chunk):
        rows = min(chunk, resamples - start)
        means.append(values[rng.integers(0, size, size=(rows, size))].mean(axis=1))
    return np.concatenate(means)


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be in (0, 1), got {level}")


def _as_values(values: Sequence[float], what: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{what} must be a non-empty 1-D sequence of numbers")
    return array


def bootstrap_ci(values: Sequence[float], resamples: int = 10_000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap confidence interval for the mean of per-question `values`.

    Questions are resampled with replacement and the mean of each resample is taken; the interval is the
    ((1 - level) / 2, (1 + level) / 2) quantiles of those means. This treats the benchmark as a sample from a
    population of questions, so it answers "how much would the score move on another benchmark of the same kind
    and size". A single question gives the degenerate interval (v, v): there is nothing to resample.
    """
    _check_level(level)
    array = _as_values(values, "values")
    if array.size == 1:
        return float(array[0]), float(array[0])
    means = _bootstrap_means(array, resamples, seed)
    alpha = 1.0 - level
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def sample_standard_error(questions: Sequence[QuestionSamples]) -> float:
    """Standard error of avg@n due only to drawing finitely many samples per question (the questions held fixed).

    avg@n = (1/Q) sum_q p_q with p_q the mean of question q's n_q Bernoulli samples, so with independent questions

        Var(avg@n) = (1/Q^2) sum_q P_q (1 - P_q) / n_q,

    P_q being the question's true per-sample accuracy. Since E[p_q (1 - p_q)] = P_q (1 - P_q) (n_q - 1) / n_q, the
    unbiased plug-in divides by n_q - 1:

        SE = sqrt( sum_q p_q (1 - p_q) / (n_q - 1) ) / Q.

    A question with n_q == 1 carries no information about its own sampling variance, so it contributes 0 (and the
    SE is then an underestimate; use n >= 2 samples per question to measure it).

    How it differs from `bootstrap_ci`: the bootstrap resamples *questions*, so its width reflects both which
    questions made it into the benchmark and the sampling noise within each. This SE keeps the questions fixed and
    measures only the noise that more samples per question would remove; it tells you whether two runs on the
    same benchmark differ by more than resampling the model would explain, and whether raising n is worthwhile.
    """
    if not questions:
        raise ValueError("no questions")
    total = 0.0
    for q in questions:
        if q.n > 1:
            p = avg_at_n(q)
            total += p * (1.0 - p) / (q.n - 1)
    return math.sqrt(total) / len(questions)


def paired_difference(
    a: Sequence[float], b: Sequence[float], resamples: int = 10_000, seed: int = 0, level: float = 0.95
) -> dict:
    """Compare two systems scored on the SAME questions in the same order, by a paired bootstrap.

    Returns {"difference": mean(a - b), "ci95": [lo, hi], "p_value": p}. The per-question differences a_q - b_q are
    resampled together (one index picks the same question for both systems), which cancels the shared question
    difficulty; two independent intervals would be much wider and often overlap for a real improvement.
    The interval is the percentile bootstrap of mean(a - b) at `level` (the key is "ci95" whatever the level).
    The two-sided p-value is twice the fraction of resampled mean differences on the other side of 0 from the
    observed one (0 counts as the other side, which keeps it conservative), capped at 1; an observed difference of
    exactly 0 gives 1.
    """
    _check_level(level)
    first, second = _as_values(a, "a"), _as_values(b, "b")
    if first.shape != second.shape:
        raise ValueError(f"paired comparison needs the same questions: {first.size} values vs {second.size}")
    diffs = first - second
    observed = float(diffs.mean())
    means = _bootstrap_means(diffs, resamples, seed)
    alpha = 1.0 - level
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    if observed > 0:
        p_value = min(1.0, 2.0 * float(np.mean(means <= 0)))
    elif observed < 0:
        p_value = min(1.0, 2.0 * float(np.mean(means >= 0)))
    else:
        p_value = 1.0
    return {"difference": observed, "ci95": [float(low), float(high)], "p_value": p_value}


# ---------------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------------


def _metric_entry(questions: Sequence[QuestionSamples], metric: str, resamples: int, seed: int) -> dict:
    values = metric_per_question(questions, metric)
    low, high = bootstrap_ci(values, resamples=resamples, seed=seed)
    return {"value": float(values.mean()), "ci95": [low, high]}


def _summarize_group(questions: Sequence[QuestionSamples], ks: Sequence[int], resamples: int, seed: int) -> dict:
    sizes = [q.n for q in questions]
    samples: int | dict = sizes[0] if min(sizes) == max(sizes) else {"min": min(sizes), "max": max(sizes)}
    result: dict = {"questions": len(questions), "samples_per_question": samples}

    result["avg@n"] = _metric_entry(questions, "avg@n", resamples, seed)
    result["avg@n"]["n"] = samples
    result["avg@n"]["sample_se"] = sample_standard_error(questions)

    usable = [k for k in ks if k <= min(sizes)]  # a k above some question's n has no estimate for that question
    with_scores = all(q.scores is not None for q in questions)
    for k in usable:
        result[f"pass@{k}"] = _metric_entry(questions, f"pass@{k}", resamples, seed)
    for k in usable:
        result[f"maj@{k}"] = _metric_entry(questions, f"maj@{k}", resamples, seed)
    if with_scores:
        for k in usable:
            result[f"bo@{k}"] = _metric_entry(questions, f"bo@{k}", resamples, seed)
    return result


def summarize(questions: Sequence[QuestionSamples], ks: Sequence[int], resamples: int = 10_000, seed: int = 0) -> dict:
    """Machine-readable summary of a benchmark run: every metric with its bootstrap CI over questions.

    Keys: "avg@n" (with "n" and "sample_se"), "pass@k" and "maj@k" for each k in `ks` with k <= the smallest
    number of samples of any question, "bo@k" for the same ks when every question has selector scores, each a dict
    {"value": float, "ci95": [lo, hi]}; "questions": Q; "samples_per_question": n, or {"min": .., "max": ..} when it
    varies. With two or more subsets, "subsets" maps each subset name (sorted) to the same structure computed on
    its questions alone (a k is then kept or dropped per subset). All intervals use the same bootstrap seed.
    """
    if not questions:
        raise ValueError("no questions to summarize")
    ks = sorted(set(ks))
    if any(k < 1 for k in ks):
        raise ValueError(f"every k must be at least 1, got {ks}")
    result = _summarize_group(questions, ks, resamples, seed)
    groups: dict[str, list[QuestionSamples]] = {}
    for q in questions:
        groups.setdefault(q.subset, []).append(q)
    if len(groups) >= 2:
        result["subsets"] = {name: _summarize_group(groups[name], ks, resamples, seed) for name in sorted(groups)}
    return result
