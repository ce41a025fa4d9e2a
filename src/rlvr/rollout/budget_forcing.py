"""Budget forcing (s1, Muennighoff et al., 2025) as a turn policy: the thinking is held to a budget of tokens.

The model thinks for at most a budget of tokens; if it has not finished by then, the thinking is ended for it by
writing the closing tag and an answer cue; if it stops too early, its stop is taken away and "Wait," written so
that it thinks on. Both are edits of the token stream between engine calls, so they work with any
`RolloutEngine`: every call sees the rendered prompt plus the exact ids kept so far, never re-tokenised text.

The rules, exactly:

- The prompt is the rendered chat prompt plus the ids of `THINK_OPEN + "\\n"`, so the model starts inside its
  thinking at once; those ids are prompt, not completion.
- Close detection works on token ids. Within the ids one engine call produced, the close ends at `end`,
  the length of the shortest prefix whose decoding contains `THINK_CLOSE`, and starts at `start`, where
  `ids[start:end]` is the shortest tail of that prefix whose decoding still contains it (`find_close`).
  A token that straddles the tag (text before or after it) belongs to the close.
- `thinking` counts the model-generated tokens of the thinking part *including* the close tokens
  `ids[start:end]`: everything the model wrote before its answer. Forced cue tokens never count. The
  budget caps it, so it can never exceed the budget; `min_thinking` is compared with it.
- The thinking ends (a *stop*) when the model writes the close, or when it ends its turn (EOS) without one.
  A stop with `thinking < min_thinking` while `extensions < max_extensions` is taken away (the close
  tokens and anything after them, or the EOS, are dropped unkept) and `CONTINUE_CUE` is appended; the model
  then thinks on within what is left of the budget. Otherwise an EOS inside the thinking is dropped and the
  close is forced as below (`stopped_in_thinking`), so an answer is still asked for.
- Budget forcing: when the budget runs out with no close, `FORCE_CLOSE_CUE` (`"\\n</think>\\nAnswer:"`) is
  appended as forced tokens and the answer is generated for up to `answer_tokens` tokens.
- When the model closes in time, the tokens it wrote after the close in the same call are its answer.
  If that call was cut by the budget rather than ended by EOS, the answer is continued for up to
  `answer_tokens` minus the answer tokens already written (an answer the model already wrote is kept whole,
  even when longer). So a trajectory never holds more than `budget + answer_tokens` model tokens.
- `budget=None` thinks for up to `sampling.max_new_tokens` tokens, then forces the close like any budget.
- `reasoning=False` appends an empty thinking block (`THINK_OPEN + "\\n" + THINK_CLOSE + "\\n"`) to the prompt
  and generates only the answer, for up to `answer_tokens` tokens.
- An empty answer (EOS straight after the cue) is recorded as `answer == 0`, never filled in.
- Engine calls: each uses the caller's sampling with only `max_new_tokens` changed. The thinking of all
  trajectories goes into one call per round (one per distinct limit when extensions leave them different
  budgets); the answers are asked for once every thinking has ended, in one call per distinct limit, in the
  order the trajectories finished thinking.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from transformers import PreTrainedTokenizerBase

from rlvr.reasoning_diagnostics import THINK_CLOSE, THINK_OPEN
from rlvr.rollout.base import SamplingParams
from rlvr.rollout.trajectory import Trajectory
from rlvr.rollout.turn_loop import Request, Response, Turn

# What budget forcing writes for the model: the close, then the cue our answer extractor reads.
FORCE_CLOSE_CUE = "\n" + THINK_CLOSE + "\nAnswer:"
CONTINUE_CUE = "\nWait,"
NO_THINKING_BLOCK = THINK_OPEN + "\n" + THINK_CLOSE + "\n"


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
class ThinkingState:
    """Where a trajectory is in thinking-then-answer, and the counts the evaluation reports."""

    answering: bool = False  # the thinking has ended: the next turn is (more of) the answer
    answering_since: int = 0  # the round the thinking ended in: answers are asked for in that order
    thinking: int = 0
    answer: int = 0
    # The close cue was written for the model: its budget ran out, or it ended its turn inside the thinking.
    forced: bool = False
    extensions: int = 0
    # The model ended its turn inside the thinking (EOS, no close); the close was forced after it.
    stopped_in_thinking: bool = False


class BudgetForcing:
    """The turn policy of the rules in the module docstring."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        budget: int | None,
        answer_tokens: int,
        min_thinking: int = 0,
        max_extensions: int = 1,
        reasoning: bool = True,
    ) -> None:
        if budget is not None and budget < 1:
            raise ValueError(f"a thinking budget must be at least 1 token, got {budget}")
        if answer_tokens < 1:
            raise ValueError(f"answer_tokens must be at least 1, got {answer_tokens}")
        if min_thinking < 0 or max_extensions < 0:
            raise ValueError(f"min_thinking and max_extensions must be >= 0, got {min_thinking} and {max_extensions}")
        self.tokenizer = tokenizer
        self.budget = budget
        self.answer_tokens = answer_tokens
        self.min_thinking = min_thinking
        self.max_extensions = max_extensions
        self.reasoning = reasoning
        self.opening = self._encode(THINK_OPEN + "\n" if reasoning else NO_THINKING_BLOCK)
        self.close_cue = self._encode(FORCE_CLOSE_CUE)
        self.continue_cue = self._encode(CONTINUE_CUE)

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def start(self, prompt: Sequence[int]) -> Trajectory[ThinkingState]:
        return Trajectory(list(prompt) + self.opening, ThinkingState(answering=not self.reasoning))

    def requests(
        self, live: list[Trajectory[ThinkingState]], sampling: SamplingParams, turn: int
    ) -> list[Request[ThinkingState]]:
        thinking = [trajectory for trajectory in live if not trajectory.state.answering]
        if thinking:
            limit = self.budget if self.budget is not None else sampling.max_new_tokens
            return [Request(t, replace(sampling, max_new_tokens=limit - t.state.thinking)) for t in thinking]
        # Every thinking has ended: all the answers, as one phase (a stable sort keeps prompt order within a round).
        answering = sorted(live, key=lambda trajectory: trajectory.state.answering_since)
        return [Request(t, replace(sampling, max_new_tokens=self.answer_tokens - t.state.answer)) for t in answering]

    def respond(self, turns: list[Turn[ThinkingState]], turn: int) -> list[Response]:
        return [self._answered(t) if t.trajectory.state.answering else self._thought(t, turn) for t in turns]

    def _thought(self, model_turn: Turn[ThinkingState], turn: int) -> Response:
        """A thinking turn: think on, go on to the answer, or (an answer already written in full) done."""
        state, ids = model_turn.trajectory.state, model_turn.ids
        span = find_close(self.tokenizer, ids)
        if span is None and model_turn.truncated:
            state.thinking += len(ids)
            state.forced = True
            return _answer_next(state, turn, Response(insert=self.close_cue))
        # A stop: the close (tokens start:end), or an EOS (the last token) with no close before it.
        start, end = span if span is not None else (len(ids) - 1, len(ids) - 1)
        if state.thinking + end < self.min_thinking and state.extensions < self.max_extensions:
            # The kept part is shorter than this call's limit, so some budget is always left to think on.
            state.thinking += start
            state.extensions += 1
            return Response(keep=start, insert=self.continue_cue)
        if span is None:
            state.thinking += len(ids) - 1
            state.forced = state.stopped_in_thinking = True
            return _answer_next(state, turn, Response(keep=len(ids) - 1, insert=self.close_cue))
        state.thinking += end
        state.answer = len(ids) - end
        if model_turn.truncated and state.answer < self.answer_tokens:
            return _answer_next(state, turn, Response())
        # Ended by EOS after the close, or cut with its whole answer allowance already written (it stays truncated).
        return _finished(model_turn.truncated)

    def _answered(self, model_turn: Turn[ThinkingState]) -> Response:
        model_turn.trajectory.state.answer += len(model_turn.ids)
        return _finished(model_turn.truncated)


def _answer_next(state: ThinkingState, turn: int, response: Response) -> Response:
    state.answering, state.answering_since = True, turn
    return response


def _finished(truncated: bool) -> Response:
    return Response(stop="length" if truncated else "end_of_turn", truncated=truncated)
