"""Sample n answers per held-out question, verify each, and measure what a careful reviewer asks for.

One run gives, per subset and overall: avg@n (mean accuracy over the n samples: what a single answer is worth),
unbiased pass@k, maj@k (majority vote over extracted answers) and best-of-k with a log-prob selector, each
with a 95% bootstrap interval over questions; the tokens spent per question (thinking and answer) and
accuracy binned by tokens, so two models can be compared at equal compute. With thinking budgets the same
is measured once per budget. Every sample is written out, so any number can be recomputed.

The parts: `settings` (how to sample), `generation` (the samples), this module (verifying them), `summary`
(the numbers) and `provenance` (what they were measured on).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase

from rlvr.config import SamplingConfig
from rlvr.curriculum import difficulty_of
from rlvr.envs import Environment
from rlvr.eval.generation import Progress, generate, no_progress
from rlvr.eval.provenance import data_hash, question_id, versions
from rlvr.eval.sample import Sample
from rlvr.eval.settings import EvalSettings
from rlvr.eval.summary import metrics, overthinking
from rlvr.length_control import stated
from rlvr.reasoning_diagnostics import DiagnosticsConfig
from rlvr.rewards import VOTE_KEYS
from rlvr.rewards.calibration import CONFIDENCE, split_confidence
from rlvr.rollout.base import RolloutEngine
from rlvr.rollout.tool_loop import ToolLoop
from rlvr.scoring import Scorer
from rlvr.step_metrics import JUDGE_HARD, JUDGE_VERDICT
from rlvr.tools.protocol import ChatFormat
from rlvr.types import Problem


def run_eval(
    engine: RolloutEngine | ToolLoop,
    env: Environment,
    tokenizer: PreTrainedTokenizerBase,
    scorer: Scorer,
    settings: EvalSettings,
    provenance: dict | None = None,
    progress: Progress = no_progress,
    chat: ChatFormat | None = None,
    problems: Sequence[Problem] | None = None,
) -> tuple[dict, list[Sample]]:
    """(summary, samples). The summary's top level holds the plain run's metrics, or the largest budget's when
    budgets are given (each budget's are under `budgets`), or the last stated effort's (each under `efforts`). With
    tools, `engine` is the tool loop and `chat` the format that advertises its tools in the prompt. `problems`: the
    questions to sample (default: the environment's held-out split; rejection sampling passes training questions)."""
    chat = chat or ChatFormat(tokenizer)
    if chat.tools and (settings.budgets or not settings.reasoning):
        raise ValueError("thinking budgets and --no-reasoning are not supported together with tools")
    problems = list(env.eval_problems() if problems is None else problems)[: settings.limit]
    if not problems:
        raise ValueError("no problems to evaluate")
    if any(k > settings.n for k in settings.ks):
        raise ValueError(f"every k must be <= n={settings.n} (got k={list(settings.ks)})")
    if settings.efforts and settings.budgets:
        raise ValueError("stated efforts (a model trained with length control) and thinking budgets are two controls: pick one")
    all_samples: list[Sample] = []
    per_budget, per_effort = [], []
    budgets = sorted(settings.budgets) or [None]
    efforts: list[tuple[str, int] | None] = list(settings.efforts) or [None]
    total = len(problems) * settings.n * len(budgets) * len(efforts)
    for budget in budgets:
        for effort in efforts:
            asked = [stated(p, *effort) for p in problems] if effort is not None else problems
            started = time.perf_counter()
            samples = generate(engine, env, tokenizer, asked, settings, budget, chat, progress, total)
            seconds = time.perf_counter() - started
            # The generation limit the length-aware rewards measure against: thinking plus answer under a budget.
            limit = budget + settings.answer_tokens if budget is not None else settings.max_new_tokens
            _verify(scorer, asked, samples, settings, limit)
            for sample in samples:
                sample.budget = budget
                sample.effort = effort[0] if effort is not None else None
            all_samples += samples
            part = metrics(problems, samples, settings, seconds, calibration=scorer.rubric.confidence)
            if effort is not None:
                per_effort.append({"effort": effort[0], "target": effort[1], **part})
            per_budget.append({"budget": budget, **({"effort": effort[0]} if effort is not None else {}), **part})
    summary = {
        **(provenance or {}),
        "data_hash": data_hash(problems),
        "decoding": settings.decoding(),
        "versions": versions(),
        "ks": [k for k in settings.ks if k <= settings.n],
        **per_budget[-1],
    }
    if settings.budgets:
        summary["budgets"] = per_budget
    if settings.efforts:
        summary["efforts"] = per_effort
    if len(settings.budgets) > 1:
        summary["overthinking"] = overthinking(all_samples)
    return summary, all_samples


def _verify(scorer: Scorer, problems: Sequence[Problem], samples: list[Sample], settings: EvalSettings, max_tokens: int) -> None:
    repeated = [p for p in problems for _ in range(settings.n)]
    texts, tokens, thinking = [s.completion for s in samples], [s.tokens for s in samples], [s.thinking_tokens for s in samples]
    scores = scorer.score_completions(texts, tokens, repeated, max_tokens, thinking)
    for index, (problem, sample, score) in enumerate(zip(repeated, samples, scores)):
        vote = VOTE_KEYS.get(problem.verifier)
        sample.id, sample.subset, sample.question, sample.reference = (
            question_id(problem),
            problem.subset,
            problem.question,
            problem.answer,
        )
        sample.sample = index % settings.n
        sample.difficulty = difficulty_of(problem)
        sample.correct = score.components["correct"] == 1.0
        sample.reward = score.total
        answer = split_confidence(sample.completion)[0] if scorer.rubric.confidence else sample.completion
        sample.extracted = vote(answer) if vote else None
        sample.confidence = score.info.get(CONFIDENCE)
        sample.score_error = score.error
        checked = [finding for finding in score.flags if finding.error is None]
        sample.probes = [finding.probe for finding in checked] or None
        sample.hacks = {finding.probe: finding.reason for finding in checked if finding.flagged} or None
        if JUDGE_VERDICT in score.info:
            hard = {"hard_correct": score.info[JUDGE_HARD] == 1.0} if JUDGE_HARD in score.info else {}
            sample.judged = {"verdict": score.info[JUDGE_VERDICT] == 1.0, **hard}


def evaluate(
    engine: RolloutEngine | ToolLoop,
    env: Environment,
    tokenizer: PreTrainedTokenizerBase,
    sampling: SamplingConfig,
    scorer: Scorer,
    chat: ChatFormat | None = None,
    diagnostics: DiagnosticsConfig = DiagnosticsConfig(),
) -> dict:
    """Greedy held-out accuracy for `rlvr train`'s before/after evaluation: the same runner as `rlvr eval` with
    n = 1, plus the headline keys `accuracy`, `ci95`, `n` and `mean_tokens`, and the samples."""
    settings = EvalSettings(n=1, ks=(1,), sampling=sampling, diagnostics=diagnostics)
    summary, samples = run_eval(engine, env, tokenizer, scorer, settings, chat=chat)
    headline = {
        "accuracy": summary["avg@n"]["value"],
        "ci95": summary["avg@n"]["ci95"],
        "n": summary["questions"],
        "mean_tokens": summary["compute"]["tokens_per_sample"]["mean"],
    }
    return {**headline, **summary, "samples": samples}
