"""The multi-turn trajectory and the turn loop, on hand-computable cases."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import pytest
import torch

from rlvr.rollout.base import RolloutEngine, SamplingParams
from rlvr.rollout.trajectory import Trajectory
from rlvr.rollout.turn_loop import Request, Response, Turn, run_turns
from rlvr.types import Episode


def test_trajectory_keeps_model_tokens_and_masks_context():
    trajectory = Trajectory([1, 2], state=None)
    trajectory.keep([10, 11], [-0.5, -0.25])
    trajectory.append_context([20, 21])
    assert trajectory.context() == [1, 2, 10, 11, 20, 21]
    trajectory.keep([12], [-1.0])
    trajectory.keep([], [])  # a turn that kept nothing still counts as a turn
    assert not trajectory.done
    trajectory.finish("length", truncated=True)

    assert trajectory.ids == [10, 11, 20, 21, 12]
    assert trajectory.mask == [1, 1, 0, 0, 1]
    assert trajectory.logprobs == [-0.5, -0.25, 0.0, 0.0, -1.0]
    assert trajectory.model_logprobs() == [-0.5, -0.25, -1.0]
    assert (trajectory.model_tokens, trajectory.context_tokens, trajectory.turns) == (3, 2, 3)
    assert trajectory.done and trajectory.stop == "length" and trajectory.truncated
    episode = trajectory.to_episode("the text", {"k": 1})
    assert (episode.prompt_ids, episode.completion_ids, episode.loss_mask) == ([1, 2], [10, 11, 20, 21, 12], [1, 1, 0, 0, 1])
    assert episode.logprobs == [-0.5, -0.25, 0.0, 0.0, -1.0]
    assert (episode.truncated, episode.text, episode.meta) == (True, "the text", {"k": 1})


class CountingEngine(RolloutEngine):
    """Continues every context with 100 + its length, 101 + its length, ...: as many tokens as the limit allows,
    token k with log-prob -(k + 1) / 10. Records each call's contexts and limit."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[list[int]], int]] = []

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingParams) -> list[Episode]:
        self.calls.append(([list(p) for p in prompts], sampling.max_new_tokens))
        episodes = []
        for prompt in prompts:
            ids = [100 + len(prompt) + k for k in range(sampling.max_new_tokens)]
            logprobs = [-(k + 1) / 10 for k in range(sampling.max_new_tokens)]
            episodes.append(Episode(list(prompt), ids, logprobs, [1] * len(ids), truncated=True))
        return episodes

    def update_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        pass


@dataclass
class Seen:
    turns: list[tuple[int, list[int], bool, int]]  # (round, ids, truncated, limit) per model turn


class EchoPolicy:
    """Trajectory 0 waits out round 0. Each turn keeps its first token and inserts [7]; the second turn ends it."""

    def start(self, prompt: Sequence[int]) -> Trajectory[Seen]:
        return Trajectory([*prompt, 0], Seen([]))

    def requests(self, live: list[Trajectory[Seen]], sampling: SamplingParams, turn: int) -> list[Request[Seen]]:
        waiting = turn == 0 and live[0].prompt[0] == 5
        # Limits 3 and 2: two engine calls, the smaller first; the second trajectory cuts its sample to 1 token.
        chosen = live[1:] if waiting else live
        return [
            Request(t, replace(sampling, max_new_tokens=3 if i % 2 == 0 else 2), cut_at=1 if i == 1 else None)
            for i, t in enumerate(chosen)
        ]

    def respond(self, turns: list[Turn[Seen]], turn: int) -> list[Response]:
        responses = []
        for model_turn in turns:
            state = model_turn.trajectory.state
            state.turns.append((turn, model_turn.ids, model_turn.truncated, model_turn.limit))
            done = len(state.turns) == 2
            responses.append(Response(keep=1, insert=[7], stop="enough" if done else None, truncated=done))
        return responses


def test_the_turn_loop_does_what_the_policy_says():
    engine = CountingEngine()
    first, second, third = run_turns(engine, EchoPolicy(), [[5], [6], [8, 9]], SamplingParams(max_new_tokens=50))

    # Round 0: trajectory 0 waits; [6, 0] asks for 3 tokens, [8, 9, 0] for 2 (cut to 1): the limit-2 call first.
    # Round 1: all three, limits 3, 2, 3: the limit-2 call first, then one call for both limit-3 requests.
    assert engine.calls == [
        ([[8, 9, 0]], 2),
        ([[6, 0]], 3),
        ([[6, 0, 102, 7]], 2),
        ([[5, 0], [8, 9, 0, 103, 7]], 3),
        ([[5, 0, 102, 7]], 3),  # round 2: only trajectory 0 is left
    ]
    assert second.state.turns == [(0, [102, 103, 104], True, 3), (1, [104], True, 1)]
    assert third.state.turns == [(0, [103], True, 1), (1, [105, 106, 107], True, 3)]
    assert first.state.turns == [(1, [102, 103, 104], True, 3), (2, [104, 105, 106], True, 3)]
    # Each turn kept its first token (mask 1, its log-prob) and then the inserted [7] (mask 0, log-prob 0).
    assert second.ids == [102, 7, 104, 7] and second.mask == [1, 0, 1, 0]
    assert second.logprobs == [-0.1, 0.0, -0.1, 0.0]
    assert first.context() == [5, 0, 102, 7, 104, 7]
    for trajectory in (first, second, third):
        assert trajectory.turns == 2 and trajectory.stop == "enough" and trajectory.truncated


class IdlePolicy(EchoPolicy):
    def requests(self, live, sampling, turn):
        return []


def test_a_policy_that_neither_finishes_nor_asks_is_an_error():
    with pytest.raises(RuntimeError, match="asked for no turn but left 1 trajectories unfinished"):
        run_turns(CountingEngine(), IdlePolicy(), [[1]], SamplingParams())
