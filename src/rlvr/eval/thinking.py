"""Thinking control for evaluation: reasoning on or off, a thinking budget, effort levels.

Why: a reasoning model's accuracy depends on how long it thinks, so comparing models (or one model at
several lengths) needs that length fixed by the evaluator rather than left to the model. The simplest
dependable control is *budget forcing*, the test-time trick of the s1 paper (Muennighoff et al., 2025):
let the model think for at most a budget of tokens and, if it has not finished by then, end the thinking
for it by writing the closing tag and an answer cue itself; if it stops too early, take its stop away and
write "Wait," so that it keeps thinking. Both are edits of the token stream between engine calls, so they
work with any `RolloutEngine` (token ids in, token ids out) and need nothing from the sampler: every call
sees the rendered prompt plus the exact ids kept so far, never re-tokenised text.

The rules, exactly:

- The prompt is the rendered chat prompt plus the ids of `THINK_OPEN + "\\n"`, so the model starts inside its
  thinking at once; those ids are prompt, not completion.
- Close detection works on token ids. Within the ids one engine call produced, the close ends at `end`,
  the length of the shortest prefix whose decoding contains `THINK_CLOSE`, and starts at `start`, where
  `ids[start:end]` is the shortest tail of that prefix whose decoding still contains it (`find_close`).
  A token that straddles the tag (text before or after it) belongs to the close.
- `thinking_tokens` counts the model-generated tokens of the thinking part *including* the close tokens
  `ids[start:end]`: everything the model wrote before its answer. Forced cue tokens never count. The
  budget caps `thinking_tokens`, so it can never exceed the budget; `min_thinking` is compared with it.
- The thinking ends (a *stop*) when the model writes the close, or when it ends its turn (EOS) without one.
  A stop with `thinking_tokens < min_thinking` while `extensions < max_extensions` is taken away (the close
  tokens and anything after them, or the EOS, are dropped unkept) and `CONTINUE_CUE` is appended; the model
  then thinks on within what is left of the budget. Otherwise an EOS inside the thinking is dropped and the
  close is forced as below (`stopped_in_thinking`), so an answer is still asked for.
- Budget forcing: when the budget runs out with no close, `FORCE_CLOSE_CUE` (`"\\n</think>\\nAnswer:"`) is
  appended as forced tokens and the answer is generated for up to `answer_tokens` tokens.
- When the model closes in time, the tokens it wrote after the close in the same call are its answer.
  If that call was cut by the budget rather than ended by EOS, the answer is continued for up to
  `answer_tokens` minus the answer tokens already written (an answer the model already wrote is kept whole,
  even when longer). So a row never holds more than `budget + answer_tokens` model tokens.
- `budget=None` thinks for up to `sampling.max_new_tokens` tokens, then forces the close like any budget.
- `reasoning=False` appends an empty thinking block (`THINK_OPEN + "\\n" + THINK_CLOSE + "\\n"`) to the prompt
  and generates only the answer, for up to `answer_tokens` tokens.
- An empty answer (EOS straight after the cue) is recorded as `answer_tokens == 0`, never filled in.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from transformers import PreTrainedTokenizerBase

from rlvr.rollout.base import RolloutEngine, SamplingParams
from rlvr.types import Episode

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
THINKING_SYSTEM_PROMPT = (
    "Think step by step inside <think> </think> tags. After </think>, give the final answer on a last line "
    "of the form `Answer: <answer>`."
)
EFFORT_BUDGETS = {"low": 64, "medium": 256, "high": 1024}
# What budget forcing writes for the model: the close, then the cue our answer extractor reads.
FORCE_CLOSE_CUE = "\n" + THINK_CLOSE + "\nAnswer:"
CONTINUE_CUE = "\nWait,"
NO_THINKING_BLOCK = THINK_OPEN + "\n" + THINK_CLOSE + "\n"


def resolve_budget(budget: int | None, effort: str | None) -> int | None:
    """The thinking budget in tokens from an explicit budget or an effort level (None: no budget of its own)."""
    if budget is not None and effort is not None:
        raise ValueError(f"give a thinking budget or an effort level, not both (budget={budget}, effort={effort!r})")
    if effort is not None:
        if effort not in EFFORT_BUDGETS:
            raise ValueError(f"unknown effort {effort!r}; expected one of {', '.join(EFFORT_BUDGETS)}")
        return EFFORT_BUDGETS[effort]
    if budget is not None and budget < 1:
        raise ValueError(f"a thinking budget must be at least 1 token, got {budget}")
    return budget


def split_thinking(text: str) -> tuple[str, str]:
    """(thinking, answer) of a finished completion, both stripped.

    The split is at the first `THINK_CLOSE`; a leading `THINK_OPEN` is dropped (our completions start inside
    the thinking, but a full transcript may carry it). With no close, text that opens a thinking block is all
    thinking, and any other text (reasoning off) is all answer.
    """
    head, close, tail = text.partition(THINK_CLOSE)
    head = head.lstrip()
    opened = head.startswith(THINK_OPEN)
    if opened:
        head = head[len(THINK_OPEN) :]
    if close or opened:
        return head.strip(), tail.strip()
    return "", text.strip()


def find_close(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int]) -> tuple[int, int] | None:
    """(start, end) such that `ids[start:end]` are the tokens that spell the first `THINK_CLOSE`, or None.

    `end` is the length of the shortest prefix whose decoding contains the close; `start` makes `ids[start:end]`
    the shortest tail of that prefix whose decoding still contains it.
    """
    ids = list(ids)

    def has_close(part: list[int]) -> bool:
        return THINK_CLOSE in tokenizer.decode(part, skip_special_tokens=False)

    if not has_close(ids):
        return None
    # Appending tokens only appends text, so "this prefix contains the close" is monotone: bisect it.
    low, high = 1, len(ids)
    while low < high:
        middle = (low + high) // 2
        if has_close(ids[:middle]):
            high = middle
        else:
            low = middle + 1
    start = low - 1
    while not has_close(ids[start:low]):
        start -= 1
    return start, low


@dataclass
class ThinkingResult:
    """One prompt's generation under thinking control.

    `completion_ids` is everything after `prompt_ids`: thinking, forced cues and answer. `generated_mask` runs
    parallel to it (1: the model chose the token, 0: a forced cue); `logprobs` holds one sampler log-prob per
    model token, in order, so `len(logprobs) == sum(generated_mask)` and there is no placeholder for cues.
    """

    prompt_ids: list[int]
    completion_ids: list[int]
    generated_mask: list[int]
    logprobs: list[float]
    text: str
    thinking_tokens: int
    answer_tokens: int
    # The close cue was written for the model: its budget ran out, or it ended its turn inside the thinking.
    forced: bool = False
    extensions: int = 0
    truncated: bool = False
    # The model ended its turn inside the thinking (EOS, no close); the close was forced after it.
    stopped_in_thinking: bool = False

    @property
    def thinking(self) -> str:
        return split_thinking(self.text)[0]

    @property
    def answer(self) -> str:
        return split_thinking(self.text)[1]


@dataclass
class _Row:
    """A prompt's generation in progress."""

    prompt: list[int]
    ids: list[int] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    thinking: int = 0
    answer: int = 0
    forced: bool = False
    extensions: int = 0
    truncated: bool = False
    stopped_in_thinking: bool = False

    def context(self) -> list[int]:
        return self.prompt + self.ids

    def keep(self, ids: Sequence[int], logprobs: Sequence[float]) -> None:
        self.ids += ids
        self.mask += [1] * len(ids)
        self.logprobs += logprobs

    def cue(self, ids: Sequence[int]) -> None:
        self.ids += ids
        self.mask += [0] * len(ids)


def _generate(engine: RolloutEngine, requests: list[tuple[list[int], int]], sampling: SamplingParams) -> list[Episode]:
    """One engine call per distinct token limit (all rows of a phase share one unless extensions differ)."""
    by_limit: dict[int, list[int]] = defaultdict(list)
    for index, (_, limit) in enumerate(requests):
        by_limit[limit].append(index)
    episodes: list[Episode | None] = [None] * len(requests)
    for limit, indices in sorted(by_limit.items()):
        produced = engine.generate([requests[i][0] for i in indices], replace(sampling, max_new_tokens=limit))
        for index, episode in zip(indices, produced):
            episodes[index] = episode
    return episodes  # type: ignore[return-value]


def _think_step(
    row: _Row,
    episode: Episode,
    tokenizer: PreTrainedTokenizerBase,
    cues: dict[str, list[int]],
    min_thinking: int,
    max_extensions: int,
) -> str:
    """Fold one thinking call into the row; returns what the row needs next: "think", "answer" or "done"."""
    ids, logprobs = episode.completion_ids, episode.logprobs
    span = find_close(tokenizer, ids)
    if span is None and episode.truncated:
        row.keep(ids, logprobs)
        row.thinking += len(ids)
        row.forced = True
        row.cue(cues["close"])
        return "answer"
    # A stop: the close (tokens start:end), or an EOS (the last token) with no close before it.
    start, end = span if span is not None else (len(ids) - 1, len(ids) - 1)
    if row.thinking + end < min_thinking and row.extensions < max_extensions:
        # The kept part is shorter than this call's limit, so some budget is always left to think on.
        row.keep(ids[:start], logprobs[:start])
        row.thinking += start
        row.extensions += 1
        row.cue(cues["continue"])
        return "think"
    if span is None:
        row.keep(ids[:-1], logprobs[:-1])
        row.thinking += len(ids) - 1
        row.forced = row.stopped_in_thinking = True
        row.cue(cues["close"])
        return "answer"
    row.keep(ids, logprobs)
    row.thinking += end
    row.answer = len(ids) - end
    row.truncated = episode.truncated
    return "answer" if episode.truncated else "done"


def _answer(engine: RolloutEngine, rows: list[_Row], sampling: SamplingParams, answer_tokens: int) -> None:
    # A row that already wrote its whole allowance after the close keeps its answer (and its truncated flag).
    pending = [row for row in rows if row.answer < answer_tokens]
    episodes = _generate(engine, [(row.context(), answer_tokens - row.answer) for row in pending], sampling)
    for row, episode in zip(pending, episodes):
        row.keep(episode.completion_ids, episode.logprobs)
        row.answer += len(episode.completion_ids)
        row.truncated = episode.truncated


def generate_with_budget(
    engine: RolloutEngine,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Sequence[int]],
    sampling: SamplingParams,
    budget: int | None,
    answer_tokens: int,
    min_thinking: int = 0,
    max_extensions: int = 1,
    reasoning: bool = True,
) -> list[ThinkingResult]:
    """Generate a thinking-then-answer completion for each rendered prompt, under the rules in the module docstring.

    Every engine call uses `sampling` with only `max_new_tokens` changed, and all rows of a phase go into one
    call (one per distinct limit when `min_thinking` extensions leave rows with different budgets).
    """
    if budget is not None and budget < 1:
        raise ValueError(f"a thinking budget must be at least 1 token, got {budget}")
    if answer_tokens < 1:
        raise ValueError(f"answer_tokens must be at least 1, got {answer_tokens}")
    if min_thinking < 0 or max_extensions < 0:
        raise ValueError(f"min_thinking and max_extensions must be >= 0, got {min_thinking} and {max_extensions}")

    def encode(text: str) -> list[int]:
        return list(tokenizer.encode(text, add_special_tokens=False))

    if not reasoning:
        rows = [_Row(prompt=list(prompt) + encode(NO_THINKING_BLOCK)) for prompt in prompts]
        _answer(engine, rows, sampling, answer_tokens)
        return [_result(row, tokenizer) for row in rows]

    limit = budget if budget is not None else sampling.max_new_tokens
    cues = {"close": encode(FORCE_CLOSE_CUE), "continue": encode(CONTINUE_CUE)}
    rows = [_Row(prompt=list(prompt) + encode(THINK_OPEN + "\n")) for prompt in prompts]
    thinking, answering = rows, []
    while thinking:
        episodes = _generate(engine, [(row.context(), limit - row.thinking) for row in thinking], sampling)
        next_thinking = []
        for row, episode in zip(thinking, episodes):
            step = _think_step(row, episode, tokenizer, cues, min_thinking, max_extensions)
            if step == "think":
                next_thinking.append(row)
            elif step == "answer":
                answering.append(row)
        thinking = next_thinking
    _answer(engine, answering, sampling, answer_tokens)
    return [_result(row, tokenizer) for row in rows]


def _result(row: _Row, tokenizer: PreTrainedTokenizerBase) -> ThinkingResult:
    return ThinkingResult(
        prompt_ids=row.prompt,
        completion_ids=row.ids,
        generated_mask=row.mask,
        logprobs=row.logprobs,
        text=tokenizer.decode(row.ids, skip_special_tokens=True),
        thinking_tokens=row.thinking,
        answer_tokens=row.answer,
        forced=row.forced,
        extensions=row.extensions,
        truncated=row.truncated,
        stopped_in_thinking=row.stopped_in_thinking,
    )
