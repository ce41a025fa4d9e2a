"""Which episodes carry gradient: overlong filtering and dynamic sampling."""

from __future__ import annotations

from rlvr.types import Episode


def drop_uniform_groups(groups: list[list[Episode]]) -> list[list[Episode]]:
    """Dynamic sampling (DAPO): a group whose rewards are all equal has zero group-relative advantage everywhere,
    so it only dilutes the batch. (Under a batch-normalised estimator, `reinforce_pp`, such a group's advantages
    are not zero: dropping it is then a choice, not a no-op.)"""
    return [group for group in groups if len({round(e.reward, 9) for e in group}) > 1]


def mask_truncated(episodes: list[Episode]) -> int:
    """Overlong filtering: a truncated completion was cut, not wrong, so it gets no
    gradient. Returns how many were masked."""
    masked = 0
    for episode in episodes:
        if episode.truncated:
            episode.loss_mask = [0] * len(episode.loss_mask)
            masked += 1
    return masked
