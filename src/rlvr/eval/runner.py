"""Sample n answers per held-out question, verify each, and measure what a careful reviewer asks for.

One run gives, per subset and overall: avg@n (mean accuracy over the n samples: what a single answer is worth),
unbiased pass@k, maj@k (majority vote over extracted answers) and best-of-k with a log-prob selector, each
with a 95% bootstrap interval over questions; the tokens spent per question (thinking and answer) and
accuracy binned by tokens, so two models can be compared at equal compute. With thinking budgets the same
is measured once per budget. Every sample is written out, so any number can be recomputed.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from pathlib import Path

import numpy as np
from transformers import PreTrainedTokenizerBase

from rlvr.envs import Environment
from rlvr.eval.estimators import QuestionSamples, summarize
from rlvr.eval.thinking import THINKING_SYSTEM_PROMPT, generate_with_budget
from rlvr.rewards import VOTE_KEYS
from rlvr.rollout import EngineError, RolloutEngine, SamplingParams
from rlvr.scoring import Scorer
from rlvr.seeds import derive_seed
from rlvr.step_metrics import tool_rates
from rlvr.tools.protocol import ChatFormat
from rlvr.types import Problem

PACKAGES = ("rlvr", "torch", "transformers", "math-verify", "reasoning-gym", "numpy")
TOKEN_BINS = 4  # accuracy by tokens spent: quartiles of the per-sample token counts


@dataclass(frozen=True)
class EvalSettings:
    n: int = 1
    ks: tuple[int, ...] = (1,)
    limit: int | None = None
    greedy: bool | None = None  # None: greedy when n == 1 (one deterministic answer), else sampled
    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int = 0
    budgets: tuple[int, ...] = ()  # thinking budgets in tokens; empty: plain generation, no thinking control
    answer_tokens: int = 32  # after the thinking part, under a budget
    min_thinking: int = 0  # a thinking part that closes sooner is extended with "Wait," (budget forcing's other half)
    reasoning: bool = True  # False: an empty thinking block, the model answers at once
    resamples: int = 10_000

    @property
    def sampled(self) -> bool:
        return not (self.greedy if self.greedy is not None else self.n == 1)

    def sampling(self, max_new_tokens: int) -> SamplingParams:
        if not self.sampled:
            return SamplingParams(greedy=True, max_new_tokens=max_new_tokens, seed=self.seed)
        return SamplingParams(self.temperature, self.top_p, 0, max_new_tokens, seed=self.seed)

    def decoding(self) -> dict:
        settings = {k: v for k, v in asdict(self).items() if k not in ("ks", "limit", "resamples")}
        settings["greedy"] = not self.sampled
        return settings


def question_id(problem: Problem) -> str:
    """Stable across runs and machines, so two runs can be paired question by question."""
    return hashlib.sha256(f"{problem.subset}\n{problem.question}".encode()).hexdigest()[:16]


def data_hash(problems: Sequence[Problem]) -> str:
    digest = hashlib.sha256()
    for problem in problems:
        digest.update(json.dumps([problem.subset, problem.question, problem.answer, problem.verifier]).encode())
    return digest.hexdigest()


def model_hash(folder: Path) -> str:
    """SHA-256 over the weight files (names and bytes), so a result names exactly the weights it measured."""
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


def _sample(prompt: str, text: str, thinking: int, answer: int, forced: bool, truncated: bool, logprobs: Sequence[float]) -> dict:
    return {
        "prompt": prompt,
        "completion": text,
        "tokens": thinking + answer,
        "thinking_tokens": thinking,
        "answer_tokens": answer,
        "forced": forced,
        "truncated": truncated,
        # The practical best-of-N selector: the model's own confidence in what it generated.
        "mean_logprob": float(np.mean(logprobs)) if len(logprobs) else 0.0,
    }


# Samples per engine call: progress is reported between calls, and each call gets its own seed.
GENERATE_CHUNK = 64
Progress = Callable[[int, int, int], None]  # (samples just finished, samples in all, their tokens)


def _no_progress(done: int, total: int, tokens: int) -> None:
    pass


def _generate(
    engine, env, tokenizer, problems, settings: EvalSettings, budget: int | None, progress: Progress, total: int, chat: ChatFormat
) -> list[dict]:
    """One dict per sample (n per problem, problem-major) with the completion and its token accounting."""
    repeated = [p for p in problems for _ in range(settings.n)]
    size = max(1, GENERATE_CHUNK // settings.n) * settings.n  # a question's n samples stay in one call
    samples: list[dict] = []
    for index, start in enumerate(range(0, len(repeated), size)):
        seed = derive_seed(settings.seed, index)
        try:
            chunk = _generate_chunk(engine, env, tokenizer, repeated[start : start + size], settings, budget, seed, chat)
        except EngineError as error:
            error.partial = samples  # generated, not yet verified: the caller may keep them
            raise
        samples += chunk
        progress(len(chunk), total, sum(s["tokens"] for s in chunk))
    return samples


def _generate_chunk(
    engine, env, tokenizer, repeated, settings: EvalSettings, budget: int | None, seed: int, chat: ChatFormat
) -> list[dict]:
    if not settings.budgets and settings.reasoning:  # plain generation: the environment's own prompt
        prompts = [chat.prompt_ids(env.messages(p)) for p in repeated]
        episodes = engine.generate(prompts, replace(settings.sampling(settings.max_new_tokens), seed=seed))
        samples = []
        for prompt, e in zip(prompts, episodes):
            # With tools, the model's own tokens only (tool results are not its compute), and the whole exchange.
            model_logprobs = [lp for lp, m in zip(e.logprobs, e.loss_mask) if m]
            sample = _sample(tokenizer.decode(prompt), e.text, 0, e.generated_tokens, False, e.truncated, model_logprobs)
            if "tools" in e.meta:
                sample.update(tools=e.meta["tools"], messages=e.meta["messages"])
            samples.append(sample)
        return samples
    plain = ChatFormat(tokenizer)  # no tools: budget forcing runs without them
    prompts = [plain.prompt_ids(env.messages(replace(p, system_prompt=THINKING_SYSTEM_PROMPT))) for p in repeated]
    sampling = replace(settings.sampling(budget or settings.max_new_tokens), seed=seed)
    results = generate_with_budget(
        engine, tokenizer, prompts, sampling, budget, settings.answer_tokens, settings.min_thinking, reasoning=settings.reasoning
    )
    # ThinkingResult.logprobs holds the model's own tokens only (the forced cues have none).
    return [
        _sample(tokenizer.decode(r.prompt_ids), r.text, r.thinking_tokens, r.answer_tokens, r.forced, r.truncated, r.logprobs)
        for r in results
    ]


def _distribution(values: Sequence[float]) -> dict:
    array = np.asarray(values, dtype=float)
    if array.size == 0:
        return {"mean": 0.0, "median": 0.0, "p95": 0.0}
    return {"mean": float(array.mean()), "median": float(np.median(array)), "p95": float(np.percentile(array, 95))}


def accuracy_by_tokens(samples: Sequence[dict], bins: int = TOKEN_BINS) -> list[dict]:
    """Accuracy of the samples in each token-count quantile bin: does spending more tokens pay?"""
    tokens = np.asarray([s["tokens"] for s in samples], dtype=float)
    correct = np.asarray([s["correct"] for s in samples], dtype=float)
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


def compute_accounting(samples: Sequence[dict], n: int, seconds: float) -> dict:
    per_question = [sum(s["tokens"] for s in samples[i : i + n]) for i in range(0, len(samples), n)]
    total = sum(s["tokens"] for s in samples)
    return {
        "tokens_per_sample": _distribution([s["tokens"] for s in samples]),
        "thinking_tokens_per_sample": _distribution([s["thinking_tokens"] for s in samples]),
        "answer_tokens_per_sample": _distribution([s["answer_tokens"] for s in samples]),
        "tokens_per_question": _distribution(per_question),
        "seconds": seconds,
        "tokens_per_second": total / seconds if seconds > 0 else 0.0,
        "forced_rate": float(np.mean([s["forced"] for s in samples])) if samples else 0.0,
        "truncated_rate": float(np.mean([s["truncated"] for s in samples])) if samples else 0.0,
        "accuracy_by_tokens": accuracy_by_tokens(samples),
    }


def _questions(problems: Sequence[Problem], samples: Sequence[dict], n: int) -> list[QuestionSamples]:
    return [
        QuestionSamples(
            correct=[s["correct"] for s in samples[i * n : (i + 1) * n]],
            answers=[s["extracted"] for s in samples[i * n : (i + 1) * n]],
            scores=[s["mean_logprob"] for s in samples[i * n : (i + 1) * n]],
            subset=problem.subset,
        )
        for i, problem in enumerate(problems)
    ]


def _metrics(problems, samples, settings: EvalSettings, seconds: float) -> dict:
    ks = tuple(k for k in settings.ks if k <= settings.n)
    metrics = summarize(_questions(problems, samples, settings.n), ks, resamples=settings.resamples, seed=settings.seed)
    # A vote means nothing where answers have no vote key (code): no maj@k there, nor overall if it mixes them in.
    unvoted = {problem.subset for problem in problems if problem.verifier not in VOTE_KEYS}
    for part in [metrics] * bool(unvoted) + [metrics.get("subsets", {}).get(name, {}) for name in unvoted]:
        for key in [key for key in part if key.startswith("maj@")]:
            del part[key]
    metrics["compute"] = compute_accounting(samples, settings.n, seconds)
    stats = [s["tools"] for s in samples if "tools" in s]
    if stats:
        names = sorted({name for stat in stats for name in stat["calls"]})
        metrics["tools"] = {key.removeprefix("tools/"): value for key, value in tool_rates(stats, names).items()}
    metrics["score_errors"] = sum("score_error" in s for s in samples)
    return metrics


def run_eval(
    engine: RolloutEngine,
    env: Environment,
    tokenizer: PreTrainedTokenizerBase,
    scorer: Scorer,
    settings: EvalSettings,
    provenance: dict | None = None,
    progress: Progress = _no_progress,
    chat: ChatFormat | None = None,
) -> tuple[dict, list[dict]]:
    """(summary, samples). The summary's top level holds the plain run's metrics, or the largest budget's when
    budgets are given (each budget's are under `budgets`). With tools, `engine` is the tool loop and `chat`
    the format that advertises its tools in the prompt."""
    chat = chat or ChatFormat(tokenizer)
    if chat.tools and (settings.budgets or not settings.reasoning):
        raise ValueError("thinking budgets and --no-reasoning are not supported together with tools")
    problems = env.eval_problems()[: settings.limit]
    if not problems:
        raise ValueError("no problems to evaluate")
    if any(k > settings.n for k in settings.ks):
        raise ValueError(f"every k must be <= n={settings.n} (got k={list(settings.ks)})")
    all_samples: list[dict] = []
    per_budget = []
    budgets = sorted(settings.budgets) or [None]
    total = len(problems) * settings.n * len(budgets)
    for budget in budgets:
        started = time.perf_counter()
        samples = _generate(engine, env, tokenizer, problems, settings, budget, progress, total, chat)
        seconds = time.perf_counter() - started
        # The generation limit the length-aware rewards measure against: thinking plus answer under a budget.
        limit = budget + settings.answer_tokens if budget is not None else settings.max_new_tokens
        _verify(scorer, problems, samples, settings, limit)
        for sample in samples:
            sample["budget"] = budget
        all_samples += samples
        per_budget.append({"budget": budget, **_metrics(problems, samples, settings, seconds)})
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
    return summary, all_samples


def _verify(scorer: Scorer, problems: Sequence[Problem], samples: list[dict], settings: EvalSettings, max_tokens: int) -> None:
    repeated = [p for p in problems for _ in range(settings.n)]
    scores = scorer.score_completions([s["completion"] for s in samples], [s["tokens"] for s in samples], repeated, max_tokens)
    for index, (problem, sample, score) in enumerate(zip(repeated, samples, scores)):
        vote = VOTE_KEYS.get(problem.verifier)
        sample.update(
            id=question_id(problem),
            subset=problem.subset,
            question=problem.question,
            reference=problem.answer,
            sample=index % settings.n,
            correct=score.components["correct"] == 1.0,
            reward=score.total,
            extracted=vote(sample["completion"]) if vote else None,
        )
        if score.error:
            sample["score_error"] = score.error


def evaluate(
    engine: RolloutEngine,
    env: Environment,
    tokenizer: PreTrainedTokenizerBase,
    max_new_tokens: int,
    scorer: Scorer,
    chat: ChatFormat | None = None,
) -> dict:
    """Greedy held-out accuracy for `rlvr train`'s before/after evaluation: the same runner as `rlvr eval` with
    n = 1, plus the headline keys `accuracy`, `ci95`, `n` and `mean_tokens`, and the samples."""
    settings = EvalSettings(n=1, ks=(1,), max_new_tokens=max_new_tokens)
    summary, samples = run_eval(engine, env, tokenizer, scorer, settings, chat=chat)
    headline = {
        "accuracy": summary["avg@n"]["value"],
        "ci95": summary["avg@n"]["ci95"],
        "n": summary["questions"],
        "mean_tokens": summary["compute"]["tokens_per_sample"]["mean"],
    }
    return {**headline, **summary, "samples": samples}
