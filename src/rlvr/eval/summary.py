"""An evaluation's numbers from its verified samples: the estimators per subset and overall, and the compute spent."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rlvr.curriculum import difficulty_of
from rlvr.eval.calibration import calibration_summary
from rlvr.eval.estimators import QuestionSamples, summarize
from rlvr.eval.sample import Sample
from rlvr.eval.settings import EvalSettings
from rlvr.reasoning_diagnostics import DiagnosticsConfig, reasoning_rates
from rlvr.rewards import VOTE_KEYS
from rlvr.step_metrics import judge_agreement, tool_rates
from rlvr.types import Problem

TOKEN_BINS = 4  # accuracy by tokens spent: quartiles of the per-sample token counts


def _distribution(values: Sequence[float]) -> dict:
    array = np.asarray(values, dtype=float)
    if array.size == 0:
        return {"mean": 0.0, "median": 0.0, "p95": 0.0}
    return {"mean": float(array.mean()), "median": float(np.median(array)), "p95": float(np.percentile(array, 95))}


def accuracy_by_tokens(samples: Sequence[Sample], bins: int = TOKEN_BINS) -> list[dict]:
    """Accuracy of the samples in each token-count quantile bin: does spending more tokens pay?"""
    tokens = np.asarray([s.tokens for s in samples], dtype=float)
    correct = np.asarray([s.correct for s in samples], dtype=float)
    if tokens.size == 0:
        return []
    edges = np.unique(np.percentile(tokens, np.linspace(0, 100, bins + 1)))
    rows = []
    for i, (low, high) in enumerate(zip(edges[:-1], edges[1:])):
        inside = (tokens >= low) & ((tokens <= high) if i == len(edges) - 2 else (tokens < high))
        if inside.any():
            rows.append(
                {"tokens": [float(low), float(high)], "accuracy": float(correct[inside].mean()), "samples": int(inside.sum())}
            )
    if not rows:  # every sample has the same length
        rows.append({"tokens": [float(tokens[0])] * 2, "accuracy": float(correct.mean()), "samples": int(tokens.size)})
    return rows


def compute_accounting(samples: Sequence[Sample], n: int, seconds: float) -> dict:
    per_question = [sum(s.tokens for s in samples[i : i + n]) for i in range(0, len(samples), n)]
    total = sum(s.tokens for s in samples)
    return {
        "tokens_per_sample": _distribution([s.tokens for s in samples]),
        "thinking_tokens_per_sample": _distribution([s.thinking_tokens for s in samples]),
        "answer_tokens_per_sample": _distribution([s.answer_tokens for s in samples]),
        "tokens_per_question": _distribution(per_question),
        "seconds": seconds,
        "tokens_per_second": total / seconds if seconds > 0 else 0.0,
        "forced_rate": float(np.mean([s.forced for s in samples])) if samples else 0.0,
        "truncated_rate": float(np.mean([s.truncated for s in samples])) if samples else 0.0,
        "accuracy_by_tokens": accuracy_by_tokens(samples),
    }


def _questions(problems: Sequence[Problem], samples: Sequence[Sample], n: int) -> list[QuestionSamples]:
    return [
        QuestionSamples(
            correct=[s.correct for s in samples[i * n : (i + 1) * n]],
            answers=[s.extracted for s in samples[i * n : (i + 1) * n]],
            scores=[s.mean_logprob for s in samples[i * n : (i + 1) * n]],
            subset=problem.subset,
        )
        for i, problem in enumerate(problems)
    ]


def metrics(
    problems: Sequence[Problem], samples: Sequence[Sample], settings: EvalSettings, seconds: float, calibration: bool = False
) -> dict:
    """avg@n, pass@k, maj@k and best-of-k with intervals, overall and per subset; compute; tool use; score errors;
    the reasoning diagnostics, accuracy by difficulty and (`calibration`: confidences were asked for) calibration."""
    ks = tuple(k for k in settings.ks if k <= settings.n)
    result = summarize(_questions(problems, samples, settings.n), ks, resamples=settings.resamples, seed=settings.seed)
    # A vote means nothing where answers have no vote key (code): no maj@k there, nor overall if it mixes them in.
    unvoted = {problem.subset for problem in problems if problem.verifier not in VOTE_KEYS}
    for part in [result] * bool(unvoted) + [result.get("subsets", {}).get(name, {}) for name in unvoted]:
        for key in [key for key in part if key.startswith("maj@")]:
            del part[key]
    result["compute"] = compute_accounting(samples, settings.n, seconds)
    stats = [s.tools for s in samples if s.tools is not None]
    if stats:
        names = sorted({name for stat in stats for name in stat["calls"]})
        result["tools"] = {key.removeprefix("tools/"): value for key, value in tool_rates(stats, names).items()}
    result["score_errors"] = sum(s.score_error is not None for s in samples)
    hacking = hacking_summary(samples)
    if hacking:
        result["hacking"] = hacking
    judged = [s.judged for s in samples if s.judged is not None]
    if judged:
        result["judge"] = judge_summary(judged)
    if samples:
        result["reasoning"] = reasoning_summary(samples, settings.diagnostics)
    if calibration and samples:
        result["calibration"] = calibration_summary(samples)
    levels = by_difficulty(problems, samples, settings)
    if levels:
        result["difficulty"] = levels
    return result


def by_difficulty(problems: Sequence[Problem], samples: Sequence[Sample], settings: EvalSettings) -> list[dict]:
    """Per difficulty, easiest first, for questions whose source gives one: avg@n with its interval, the tokens
    spent (thinking and answer), and the wrong answers cut off by the token limit counted apart from the finished
    ones. Empty when no question has a difficulty."""
    n = settings.n
    groups: dict[float, list[int]] = {}
    for index, problem in enumerate(problems):
        level = difficulty_of(problem)
        if level is not None:
            groups.setdefault(level, []).append(index)
    rows = []
    for level, indices in sorted(groups.items()):
        chosen = [s for i in indices for s in samples[i * n : (i + 1) * n]]
        questions = _questions([problems[i] for i in indices], chosen, n)
        accuracy = summarize(questions, (), resamples=settings.resamples, seed=settings.seed)["avg@n"]
        wrong = [s for s in chosen if not s.correct]
        rows.append(
            {
                "difficulty": level,
                "questions": len(indices),
                "avg@n": {"value": accuracy["value"], "ci95": accuracy["ci95"]},
                "thinking_tokens": float(np.mean([s.thinking_tokens for s in chosen])),
                "answer_tokens": float(np.mean([s.answer_tokens for s in chosen])),
                "wrong_finished_rate": sum(not s.truncated for s in wrong) / len(chosen),
                "wrong_truncated_rate": sum(s.truncated for s in wrong) / len(chosen),
            }
        )
    return rows


def overthinking(samples: Sequence[Sample]) -> list[dict]:
    """Thinking a question did not need: on the questions whose every sample is right under the smallest budget, the
    thinking tokens each larger budget spends beyond the smallest one's, per question, and as a share of all the
    thinking that budget spent."""
    by_budget: dict[int, dict[str, list[Sample]]] = {}
    for sample in samples:
        if sample.budget is not None:
            by_budget.setdefault(sample.budget, {}).setdefault(sample.id, []).append(sample)
    if len(by_budget) < 2:
        return []
    smallest, *larger = sorted(by_budget)
    easy = {qid for qid, group in by_budget[smallest].items() if all(s.correct for s in group)}

    def thinking(budget: int, qid: str) -> float:
        group = by_budget[budget].get(qid, [])
        return sum(s.thinking_tokens for s in group) / len(group) if group else 0.0

    rows = []
    for budget in larger:
        extra = sum(max(0.0, thinking(budget, qid) - thinking(smallest, qid)) for qid in easy)
        spent = sum(thinking(budget, qid) for qid in by_budget[budget])
        rows.append(
            {
                "budget": budget,
                "versus": smallest,
                "easy_questions": len(easy),
                "extra_thinking_tokens": extra / len(easy) if easy else 0.0,
                "share_of_thinking": extra / spent if spent else 0.0,
            }
        )
    return rows


def reasoning_summary(samples: Sequence[Sample], config: DiagnosticsConfig) -> dict:
    """How the answers reasoned: the reflection and language-mixing rates, the mean thinking and answer tokens, and
    the wrong answers split into those cut off by the token limit and those the model finished."""
    count = len(samples)
    wrong = [s for s in samples if not s.correct]
    return {
        **reasoning_rates([s.completion for s in samples], config),
        "thinking_tokens": sum(s.thinking_tokens for s in samples) / count,
        "answer_tokens": sum(s.answer_tokens for s in samples) / count,
        "wrong_finished_rate": sum(not s.truncated for s in wrong) / count,
        "wrong_truncated_rate": sum(s.truncated for s in wrong) / count,
    }


def judge_summary(judged: Sequence[dict[str, bool]]) -> dict:
    """A soft verifier's numbers: the share of answers the judge accepted and, on the answers a hard verifier also
    checked, how far they agree (agreement, false positive and negative rates, Cohen's kappa)."""
    pairs = [(j["verdict"], j["hard_correct"]) for j in judged if "hard_correct" in j]
    agreement = {key.removeprefix("judge/"): value for key, value in judge_agreement(pairs).items()}
    return {"judged": len(judged), "accepted": sum(j["verdict"] for j in judged) / len(judged), **agreement}


HACK_EXAMPLES = 3  # flagged samples kept per probe in the summary and the report


def _probe_rates(samples: Sequence[Sample]) -> dict[str, dict]:
    rates = {}
    for name in sorted({name for s in samples for name in s.probes or ()}):
        checked = [s for s in samples if name in (s.probes or ())]
        flagged = sum(name in (s.hacks or {}) for s in checked)
        rates[name] = {"rate": flagged / len(checked), "flagged": flagged, "checked": len(checked)}
    return rates


def hacking_summary(samples: Sequence[Sample]) -> dict:
    """The reward-hacking probes' flag rates (over the samples each checked), overall and per subset, and a few
    flagged samples per probe; empty when no probe checked any sample."""
    checked = [s for s in samples if s.probes]
    if not checked:
        return {}
    examples = [
        {"probe": name, "id": s.id, "subset": s.subset, "reason": s.hacks[name], "completion": s.completion[:400]}
        for name in sorted({name for s in checked for name in s.hacks or {}})
        for s in [s for s in checked if name in (s.hacks or {})][:HACK_EXAMPLES]
    ]
    subsets = sorted({s.subset for s in checked})
    return {
        "rate": sum(bool(s.hacks) for s in checked) / len(checked),
        "probes": _probe_rates(checked),
        "subsets": {name: _probe_rates([s for s in checked if s.subset == name]) for name in subsets} if len(subsets) > 1 else {},
        "examples": examples,
    }
