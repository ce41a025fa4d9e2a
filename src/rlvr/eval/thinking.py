"""Thinking control for evaluation: reasoning on or off, a thinking budget, effort levels.

Why: a reasoning model's accuracy depends on how long it thinks, so comparing models (or one model at
several lengths) needs that length fixed by the evaluator rather than left to the model. The simplest
dependable control is *budget forcing*, the test-time trick of the s1 paper (Muennighoff et al., 2025):
let the model think for at most a budget of tokens and, if it has not finished by then, end the thinking
for it by writing the closing tag and an answer cue itself; if it stops too early, take its stop away and
write "Wait," so that it keeps thinking. The generation is a turn policy of the rollout's turn loop
(`rlvr.rollout.budget_forcing`, where its rules are stated exactly); this module holds what evaluation adds:
the prompt, effort levels, and each result's thinking and answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from rlvr.reasoning_diagnostics import split_thinking
from rlvr.rollout.base import RolloutEngine, SamplingParams
from rlvr.rollout.budget_forcing import BudgetForcing, ThinkingState
from rlvr.rollout.trajectory import Trajectory
from rlvr.rollout.turn_loop import run_turns

THINKING_SYSTEM_PROMPT = (
    "Think step by step inside <think> </think> tags. After </think>, give the final answer on a last line "
    "of the form `Answer: <answer>`."
)
EFFORT_BUDGETS = {"low": 64, "medium": 256, "high": 1024}


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
    """Generate a thinking-then-answer completion for each rendered prompt, under the rules of budget forcing.

    Every engine call uses `sampling` with only `max_new_tokens` changed, and all rows of a phase go into one
    call (one per distinct limit when `min_thinking` extensions leave rows with different budgets).
    """
    policy = BudgetForcing(tokenizer, budget, answer_tokens, min_thinking, max_extensions, reasoning)
    return [_result(trajectory, tokenizer) for trajectory in run_turns(engine, policy, prompts, sampling)]


def _result(trajectory: Trajectory[ThinkingState], tokenizer: PreTrainedTokenizerBase) -> ThinkingResult:
    state = trajectory.state
    return ThinkingResult(
        prompt_ids=trajectory.prompt,
        completion_ids=trajectory.ids,
        generated_mask=trajectory.mask,
        logprobs=trajectory.model_logprobs(),
        text=tokenizer.decode(trajectory.ids, skip_special_tokens=True),
        thinking_tokens=state.thinking,
        answer_tokens=state.answer,
        forced=state.forced,
        extensions=state.extensions,
        truncated=trajectory.truncated,
        stopped_in_thinking=state.stopped_in_thinking,
    )
