"""The loop behind every multi-turn rollout: the model takes a turn, a turn policy says what comes next.

It has the shape of verifiers' multi-turn environments (the model answers, the environment responds, until it
says the rollout is complete), on token ids instead of chat messages. What differs between rollouts is only
the policy: the tool loop runs the calls the model wrote and inserts their results; budget forcing inserts
`</think>`, "Wait," or an answer cue. Each round:

1. the policy says which unfinished trajectories generate now and with which sampling (`requests`); one it
   leaves out waits for a later round (budget forcing asks for every answer only once all thinking is done);
2. requests with equal sampling go into one engine call, the calls in order of their token limit. A request
   may keep fewer tokens than its call's limit (`cut_at`): one call at the largest limit with each sample cut
   at its own draws from the same distribution as one call per limit;
3. the policy reads what each model turn wrote (`respond`) and answers it with a `Response`: how much of the
   turn to keep, which ids to insert after it, whether the trajectory is done;
4. the loop applies the responses to the trajectories, and goes on while any is unfinished.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Protocol

from rlvr.rollout.base import RolloutEngine, SamplingParams
from rlvr.rollout.trajectory import StateT, Trajectory
from rlvr.types import Episode


@dataclass(frozen=True)
class Request(Generic[StateT]):
    """One trajectory's next model turn."""

    trajectory: Trajectory[StateT]
    sampling: SamplingParams
    cut_at: int | None = None  # keep at most this many of the sampled tokens (None: the call's limit)


@dataclass(frozen=True)
class Turn(Generic[StateT]):
    """What the model wrote in one turn, not yet added to its trajectory."""

    trajectory: Trajectory[StateT]
    ids: list[int]
    logprobs: list[float]
    truncated: bool  # ended by its token limit, not by a stop token or stop string
    limit: int  # how many tokens it was allowed


@dataclass(frozen=True)
class Response:
    """The policy's answer to a turn."""

    keep: int | None = None  # how many of the turn's tokens to keep, from its start (None: all of them)
    insert: Sequence[int] = ()  # context ids appended after them
    stop: str | None = None  # ends the trajectory, for this reason
    truncated: bool = False


class TurnPolicy(Protocol[StateT]):
    def start(self, prompt: Sequence[int]) -> Trajectory[StateT]:
        """The trajectory of a rendered prompt, before the model's first turn."""
        ...

    def requests(self, live: list[Trajectory[StateT]], sampling: SamplingParams, turn: int) -> list[Request[StateT]]:
        """Which of the unfinished trajectories generate in round `turn` (0, 1, ...), in order, and how."""
        ...

    def respond(self, turns: list[Turn[StateT]], turn: int) -> list[Response]:
        """One response per turn of round `turn`, in order."""
        ...


def run_turns(
    engine: RolloutEngine, policy: TurnPolicy[StateT], prompts: Sequence[Sequence[int]], sampling: SamplingParams
) -> list[Trajectory[StateT]]:
    """Every prompt's finished trajectory, in order; `sampling` is the caller's, which the policy adapts per request."""
    trajectories = [policy.start(prompt) for prompt in prompts]
    turn = 0
    while live := [trajectory for trajectory in trajectories if not trajectory.done]:
        requests = policy.requests(live, sampling, turn)
        if not requests:
            raise RuntimeError(f"round {turn}: the turn policy asked for no turn but left {len(live)} trajectories unfinished")
        turns = _generate(engine, requests)
        responses = policy.respond(turns, turn)
        if len(responses) != len(turns):
            raise RuntimeError(f"round {turn}: the turn policy answered {len(turns)} turns with {len(responses)} responses")
        for model_turn, response in zip(turns, responses):
            _apply(model_turn, response)
        turn += 1
    return trajectories


def _generate(engine: RolloutEngine, requests: list[Request[StateT]]) -> list[Turn[StateT]]:
    """One engine call per distinct sampling, smallest token limit first; the turns come back in request order."""
    by_sampling: dict[SamplingParams, list[int]] = defaultdict(list)
    for index, request in enumerate(requests):
        by_sampling[request.sampling].append(index)
    turns: list[Turn[StateT] | None] = [None] * len(requests)
    for sampling, indices in sorted(by_sampling.items(), key=lambda item: item[0].max_new_tokens):
        produced = engine.generate([requests[i].trajectory.context() for i in indices], sampling)
        for index, episode in zip(indices, produced):
            turns[index] = _turn(requests[index], episode)
    return turns  # type: ignore[return-value]


def _turn(request: Request[StateT], episode: Episode) -> Turn[StateT]:
    limit = request.sampling.max_new_tokens if request.cut_at is None else request.cut_at
    ids, logprobs = episode.completion_ids[:limit], episode.logprobs[:limit]
    cut = len(episode.completion_ids) > limit
    return Turn(request.trajectory, ids, logprobs, episode.truncated or cut, limit)


def _apply(turn: Turn[StateT], response: Response) -> None:
    trajectory = turn.trajectory
    keep = len(turn.ids) if response.keep is None else response.keep
    trajectory.keep(turn.ids[:keep], turn.logprobs[:keep])
    trajectory.append_context(response.insert)
    if response.stop is not None:
        trajectory.finish(response.stop, response.truncated)
