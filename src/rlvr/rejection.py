"""Rejection sampling (expert iteration's data step): n answers per question, the verified-correct ones kept as chat
traces for supervised fine-tuning (`rlvr sft`).

The answers come from the evaluation runner (`rlvr.eval.runner.run_eval`): the same prompt, engine, tool loop and
verifier as training and `rlvr eval`, only on training questions by default (traces sampled from the held-out split
would leak test questions into training). Each kept answer becomes one JSONL line whose `messages` is the whole
conversation in OpenAI chat format, exactly as the model saw and wrote it: the system prompt, the demonstrations, the
question, then the model's turns, a tool call as `tool_calls` and its result as a `tool` message with the call's
`tool_call_id`. Questions are sampled in blocks and each block's traces are written as soon as it is verified, so an
engine failure keeps the blocks before it.

Which correct answers are kept is a keep rule (`KEEP_RULES`, one small function each; `--keep`), then
`--max-per-question` caps them, in sample order. `<out>.provenance.json` records the model, the data, the sampling,
and per subset the pass rate (with a 95% bootstrap interval over questions), the coverage and the yield.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from rich.table import Table
from transformers import PreTrainedTokenizerBase

from rlvr.config import RunConfig
from rlvr.envs import Environment
from rlvr.errors import ConfigError, EngineError
from rlvr.eval.estimators import bootstrap_ci
from rlvr.eval.generation import GENERATE_CHUNK, Progress, no_progress
from rlvr.eval.provenance import data_hash, question_id, versions
from rlvr.eval.runner import run_eval
from rlvr.eval.sample import Sample
from rlvr.eval.settings import EvalSettings
from rlvr.registry import Registry
from rlvr.rollout.base import RolloutEngine
from rlvr.rollout.tool_loop import ToolLoop
from rlvr.scoring import Scorer
from rlvr.seeds import derive_seed
from rlvr.tools.base import ToolError
from rlvr.tools.protocol import CALL_CLOSE, CALL_OPEN, ChatFormat, find_call, parse_call
from rlvr.types import Problem

SPLITS = ("train", "eval")
# Draws of an endless training stream searched for distinct questions, per question asked for.
_DRAWS_PER_QUESTION = 20

# ---------------------------------------------------------------------------------------------------------------------
# Keep rules: a question's correct answers (in sample order) -> the ones kept
# ---------------------------------------------------------------------------------------------------------------------

KeepRule = Callable[[list[Sample]], list[Sample]]
KEEP_RULES: Registry[KeepRule] = Registry("keep rule")


@KEEP_RULES.register("all")
def keep_all(correct: list[Sample]) -> list[Sample]:
    """Every correct answer."""
    return list(correct)


@KEEP_RULES.register("shortest")
def keep_shortest(correct: list[Sample]) -> list[Sample]:
    """The correct answer with the fewest generated tokens (the earliest sample on a tie)."""
    return [min(correct, key=lambda s: (s.tokens, s.sample))] if correct else []


@KEEP_RULES.register("distinct")
def keep_distinct(correct: list[Sample]) -> list[Sample]:
    """The first correct answer per distinct extracted answer (the verifier's vote key, as maj@k groups answers:
    whitespace-insensitive for math); an answer without one (a verifier without votes, such as code) counts as
    distinct by its whole text."""
    first: dict[str, Sample] = {}
    for sample in correct:
        first.setdefault(sample.extracted if sample.extracted is not None else f"\0{sample.completion}", sample)
    return list(first.values())


@dataclass(frozen=True)
class Selection:
    """Which correct answers become traces: the keep rule, then at most `max_per_question`, in sample order."""

    keep: str = "all"
    max_per_question: int | None = None

    def __post_init__(self) -> None:
        if self.keep not in KEEP_RULES:
            raise ConfigError(f"--keep: unknown keep rule {self.keep!r} (choices: {', '.join(sorted(KEEP_RULES))})")
        if self.max_per_question is not None and self.max_per_question < 1:
            raise ConfigError(f"--max-per-question: expected at least 1, got {self.max_per_question}")

    def apply(self, samples: Sequence[Sample]) -> list[Sample]:
        """The kept ones of a question's samples (the correct ones the rule keeps, at most `max_per_question`)."""
        correct = sorted((s for s in samples if s.correct), key=lambda s: s.sample)
        kept = sorted(KEEP_RULES[self.keep](correct), key=lambda s: s.sample)
        return kept[: self.max_per_question]


# ---------------------------------------------------------------------------------------------------------------------
# Traces
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trace:
    """One kept answer, a line of the traces file: `messages` is what supervised fine-tuning reads."""

    messages: list[dict[str, Any]]
    id: str
    subset: str
    question: str
    reference: str
    sample: int
    tokens: int  # the tokens the model generated (tool results not included)
    tools: list[dict[str, Any]] | None = None  # with tools: their declarations (OpenAI function format)

    def to_dict(self) -> dict[str, Any]:
        row = asdict(self)
        if self.tools is None:
            del row["tools"]
        return row


def assistant_turn(text: str) -> dict[str, Any] | None:
    """A model turn as an OpenAI assistant message: a tool call it ends with as `tool_calls` (arguments as an object,
    the form the project's chat format and the demonstrations use), the text before it as `content`. None when the
    turn holds a call that OpenAI's format cannot: one that does not parse, is left open, or has text after it."""
    if CALL_OPEN not in text:
        return {"role": "assistant", "content": text}
    body = find_call(text)
    if body is None:
        return None
    try:
        call = parse_call(body)
    except ToolError:
        return None
    start = text.index(CALL_OPEN)
    if text[text.index(CALL_CLOSE, start) + len(CALL_CLOSE) :].strip():
        return None
    before = text[:start]
    # The fallback chat format writes a call after the text on a new line: that newline is the call's, not the text's.
    content = before[:-1] if before.endswith("\n") else before
    function = {"name": call.name, "arguments": call.arguments}
    return {"role": "assistant", "content": content, "tool_calls": [{"type": "function", "function": function}]}


def link_calls(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The messages with an `id` on every tool call that has none (`call_0`, `call_1`, ... in order) and each `tool`
    message's `tool_call_id` naming the call it answers; None when a tool message answers no call or a call goes
    unanswered (OpenAI's format holds neither)."""
    linked: list[dict[str, Any]] = []
    pending: list[str] = []  # the ids of the last assistant message's calls not yet answered
    count = 0
    for message in messages:
        message = dict(message)
        if message["role"] == "tool":
            if not pending:
                return None
            answered = pending.pop(0)
            message.setdefault("tool_call_id", answered)
        elif pending:
            return None
        elif message.get("tool_calls"):
            calls = []
            for call in message["tool_calls"]:
                calls.append({"id": call.get("id") or f"call_{count}", **{k: v for k, v in call.items() if k != "id"}})
                count += 1
            message["tool_calls"] = calls
            pending = [call["id"] for call in calls]
        linked.append(message)
    return None if pending else linked


def trace_messages(prompt: Sequence[dict[str, Any]], sample: Sample) -> list[dict[str, Any]] | None:
    """The whole conversation of a sample: its prompt (the environment's messages, as `ChatFormat` renders them for
    the model) and what the model wrote (with tools, every turn and tool result); None when it cannot be written
    in OpenAI's format (see `assistant_turn`)."""
    if sample.messages is None:  # no tool loop: the answer is text, whatever it says
        return [*(dict(m) for m in prompt), {"role": "assistant", "content": sample.completion}]
    written = []
    for message in sample.messages:
        turn = assistant_turn(message["content"]) if message["role"] == "assistant" else dict(message)
        if turn is None:
            return None
        written.append(turn)
    return link_calls([*(dict(m) for m in prompt), *written])


@dataclass(frozen=True)
class QuestionResult:
    """What one question gave: the correctness of each of its samples and how many traces were kept."""

    subset: str
    correct: list[bool]
    kept: int
    unwritable: int = 0  # correct answers left out: a tool call OpenAI's format cannot hold


def keep_question(
    problem: Problem, samples: Sequence[Sample], prompt: Sequence[dict[str, Any]], selection: Selection, tools: list | None
) -> tuple[list[Trace], QuestionResult]:
    """The traces kept of one question's samples (in sample order), and its tally."""
    conversations = {s.sample: trace_messages(prompt, s) for s in samples if s.correct}
    usable = [s for s in samples if s.correct and conversations[s.sample] is not None]
    traces = [
        Trace(conversations[s.sample] or [], s.id, s.subset, s.question, s.reference, s.sample, s.tokens, tools)
        for s in selection.apply(usable)
    ]
    unwritable = sum(conversation is None for conversation in conversations.values())
    return traces, QuestionResult(problem.subset, [s.correct for s in samples], len(traces), unwritable)


# ---------------------------------------------------------------------------------------------------------------------
# Which questions
# ---------------------------------------------------------------------------------------------------------------------


def _distinct(problems: Sequence[Problem]) -> list[Problem]:
    """Each question once (its first row), in order."""
    first: dict[str, Problem] = {}
    for problem in problems:
        first.setdefault(question_id(problem), problem)
    return list(first.values())


def sampled_split(split: str | None, data: bool) -> str:
    """The split to sample: `train` unless `eval` is asked for; `all` for a --data file (every row)."""
    if data:
        if split is not None:
            raise ConfigError("--split: --data samples every row of its file")
        return "all"
    if split is not None and split not in SPLITS:
        raise ConfigError(f"--split: expected one of {', '.join(SPLITS)}, got {split!r}")
    return split or "train"


def choose_problems(env: Environment, split: str, limit: int | None) -> list[Problem]:
    """The questions to sample, each once. `eval`: the held-out split (its first `limit`); `all`: the same, for an
    environment that holds out every row (a --data file). `train`: the first `limit` distinct questions of the
    training stream (those training draws first; none of them held out); without a limit, every training question of
    a finite training set (files). An endless, generated stream needs a limit."""
    if split not in (*SPLITS, "all"):
        raise ConfigError(f"--split: expected one of {', '.join(SPLITS)}, got {split!r}")
    if split != "train":
        return env.eval_problems()[:limit]
    pool = env.train_pool()
    if pool is not None and (limit is None or limit >= len(_distinct(pool))):
        return _distinct(pool)
    if limit is None:
        raise ConfigError("--limit: the training split of this environment is an endless, generated stream: give --limit N")
    found: dict[str, Problem] = {}
    drawn, chunk = 0, max(limit, 64)
    while len(found) < limit and drawn < _DRAWS_PER_QUESTION * limit:  # a small problem space runs out of new ones
        for problem in env.train_problems(drawn, chunk):
            found.setdefault(question_id(problem), problem)
        drawn += chunk
    return list(found.values())[:limit]


# ---------------------------------------------------------------------------------------------------------------------
# Numbers and provenance
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tally:
    """A subset's (or all) numbers: pass rate = correct samples / samples, with a 95% bootstrap interval over
    questions; coverage = questions with at least one correct answer; yield = traces kept / samples."""

    questions: int
    samples: int
    correct: int
    pass_rate: float
    pass_rate_ci95: tuple[float, float]
    covered: int
    coverage: float
    traces: int
    trace_yield: float
    unwritable: int  # correct answers left out: a tool call that OpenAI's format cannot hold

    @staticmethod
    def of(results: Sequence[QuestionResult], resamples: int = 10_000, seed: int = 0) -> Tally:
        samples = sum(len(r.correct) for r in results)
        correct = sum(sum(r.correct) for r in results)
        covered = sum(any(r.correct) for r in results)
        traces = sum(r.kept for r in results)
        rates = [sum(r.correct) / len(r.correct) for r in results]
        return Tally(
            questions=len(results),
            samples=samples,
            correct=correct,
            pass_rate=correct / samples,
            pass_rate_ci95=bootstrap_ci(rates, resamples=resamples, seed=seed),
            covered=covered,
            coverage=covered / len(results),
            traces=traces,
            trace_yield=traces / samples,
            unwritable=sum(r.unwritable for r in results),
        )

    def to_dict(self) -> dict[str, Any]:
        row = asdict(self)
        row["yield"] = row.pop("trace_yield")
        return row


@dataclass(frozen=True)
class RejectionSummary:
    """`<out>.provenance.json`: what the traces were sampled from and how, and what they yielded."""

    traces: str  # the traces file
    model: str
    model_hash: str
    engine: str
    data: str  # the data file or the environment
    split: str  # train, eval, or all (every row of a --data file)
    data_hash: str  # of the questions sampled (rlvr.eval.provenance.data_hash)
    sampling: dict[str, Any]  # n, greedy, temperature, top_p, top_k, max_new_tokens, seed, ...
    verifiers: dict[str, list[str]]  # per subset
    keep: str
    max_per_question: int | None
    tools: list[str]
    overall: Tally
    subsets: dict[str, Tally]
    generated_tokens: int  # by the model, over every sample (the compute a pipeline's report counts)
    seconds: float
    versions: dict[str, str | None]
    complete: bool = True  # False: an engine failure stopped it; the numbers are those of the questions before it
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        row = asdict(self)
        row["overall"] = self.overall.to_dict()
        row["subsets"] = {name: tally.to_dict() for name, tally in self.subsets.items()}
        return row


def provenance_path(out: Path) -> Path:
    return out.with_name(out.name + ".provenance.json")


def summarize(results: Sequence[QuestionResult], resamples: int = 10_000, seed: int = 0) -> tuple[Tally, dict[str, Tally]]:
    """(overall, per subset) of the questions' results."""
    groups: dict[str, list[QuestionResult]] = {}
    for result in results:
        groups.setdefault(result.subset, []).append(result)
    subsets = {name: Tally.of(groups[name], resamples, seed) for name in sorted(groups)}
    return Tally.of(results, resamples, seed), subsets


def summary_table(summary: RejectionSummary) -> Table:
    table = Table(title=f"rejection sampling: {summary.data} ({summary.split}), n = {summary.sampling['n']}, keep {summary.keep}")
    for column in ("subset", "questions", "samples", "pass rate [95% CI]", "coverage", "traces", "yield"):
        table.add_column(column, justify="left" if column == "subset" else "right")
    rows = [*summary.subsets.items(), ("all", summary.overall)] if len(summary.subsets) > 1 else [("all", summary.overall)]
    for name, t in rows:
        rate = f"{t.pass_rate:.1%} [{t.pass_rate_ci95[0]:.1%}, {t.pass_rate_ci95[1]:.1%}]"
        coverage = f"{t.coverage:.1%} ({t.covered})"
        table.add_row(name, str(t.questions), str(t.samples), rate, coverage, str(t.traces), f"{t.trace_yield:.1%}")
    return table


# ---------------------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RejectionJob:
    """A run, checked before any model loads (`rlvr.api.rejection_job`): the config (model, prompt, tools, engine,
    scoring), how to sample, what to keep, and the questions with where they come from."""

    config: RunConfig
    settings: EvalSettings
    selection: Selection
    env: Environment
    problems: list[Problem]
    data: str  # the data file or the environment's label
    split: str  # train, eval or all


def rejection_sample(
    engine: RolloutEngine | ToolLoop,
    env: Environment,
    tokenizer: PreTrainedTokenizerBase,
    scorer: Scorer,
    chat: ChatFormat,
    problems: Sequence[Problem],
    settings: EvalSettings,
    selection: Selection,
    out: Path,
    provenance: dict[str, Any],
    progress: Progress = no_progress,
) -> RejectionSummary:
    """Sample `settings.n` answers per problem, verify them, write the kept traces to `out` (JSONL) and the summary to
    `<out>.provenance.json`. `provenance`: model, model_hash, engine, data and split. An engine failure raises
    EngineError once the traces of the blocks before it and their provenance (`complete: false`) are written."""
    if not problems:
        raise ValueError("no questions to sample")
    tools = [t.schema() for t in chat.tools] or None
    block = max(1, GENERATE_CHUNK // settings.n)  # as many questions as one engine call of `rlvr eval` holds
    total = len(problems) * settings.n

    def advance(done: int, _: int, tokens: int) -> None:  # each block's progress against the whole run's samples
        progress(done, total, tokens)

    results: list[QuestionResult] = []
    generated = 0
    failure: EngineError | None = None
    started = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as handle:
        for number, start in enumerate(range(0, len(problems), block)):
            part = problems[start : start + block]
            seeded = replace(settings, seed=derive_seed(settings.seed, number))
            try:
                _, samples = run_eval(engine, env, tokenizer, scorer, seeded, progress=advance, chat=chat, problems=part)
            except EngineError as error:
                failure = error
                break
            generated += sum(sample.tokens for sample in samples)
            for index, problem in enumerate(part):
                own = samples[index * settings.n : (index + 1) * settings.n]
                traces, result = keep_question(problem, own, env.messages(problem), selection, tools)
                handle.writelines(json.dumps(trace.to_dict(), ensure_ascii=False) + "\n" for trace in traces)
                results.append(result)
            handle.flush()
    if not results:
        raise EngineError(f"{failure}; no question was sampled before it") from failure
    done = problems[: len(results)]
    overall, subsets = summarize(results, settings.resamples, settings.seed)
    summary = RejectionSummary(
        traces=str(out),
        model=provenance["model"],
        model_hash=provenance["model_hash"],
        engine=provenance["engine"],
        data=provenance["data"],
        split=provenance["split"],
        data_hash=data_hash(done),
        sampling=settings.decoding(),
        verifiers={name: sorted({p.verifier for p in done if p.subset == name}) for name in subsets},
        keep=selection.keep,
        max_per_question=selection.max_per_question,
        tools=[t["function"]["name"] for t in tools or []],
        overall=overall,
        subsets=subsets,
        generated_tokens=generated,
        seconds=time.perf_counter() - started,
        versions=versions(),
        complete=failure is None,
        error=None if failure is None else str(failure),
    )
    provenance_path(out).write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
    if failure is not None:
        kept = summary.overall.traces
        raise EngineError(f"{failure}; the {kept} traces of the {len(results)} questions before it are in {out}") from failure
    return summary
