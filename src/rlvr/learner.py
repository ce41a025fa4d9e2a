"""The learner's view of episodes: padded tensors and per-token log-probs."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedModel

from rlvr.episode import Episode


@dataclass
class TokenBatch:
    """Distinct prompts left-padded to one width; completions right-padded.

    Row i of the batch is prompt `rows[i]` followed by completion i, so every
    completion starts at the same column and a group's shared prompt is stored
    (and, with `shared_prefix`, computed) once.
    """

    prompt_ids: torch.Tensor  # [U, P]
    prompt_attention: torch.Tensor  # [U, P]
    rows: torch.Tensor  # [N] -> index into the distinct prompts
    completion_ids: torch.Tensor  # [N, C]
    completion_attention: torch.Tensor  # [N, C] 1 on real tokens
    loss_mask: torch.Tensor  # [N, C] float, 1 where the token carries gradient
    old_logprobs: torch.Tensor  # [N, C] the sampler's
    advantages: torch.Tensor  # [N]

    @classmethod
    def from_episodes(cls, episodes: list[Episode], pad_id: int) -> TokenBatch:
        distinct: dict[tuple[int, ...], int] = {}
        rows = torch.tensor([distinct.setdefault(tuple(e.prompt_ids), len(distinct)) for e in episodes])
        width = max(len(p) for p in distinct)
        prompt_ids = torch.full((len(distinct), width), pad_id, dtype=torch.long)
        prompt_attention = torch.zeros((len(distinct), width), dtype=torch.long)
        for row, prompt in enumerate(distinct):
            prompt_ids[row, width - len(prompt) :] = torch.tensor(prompt)
            prompt_attention[row, width - len(prompt) :] = 1
        n, length = len(episodes), max(e.num_tokens for e in episodes)
        completion_ids = torch.full((n, length), pad_id, dtype=torch.long)
        completion_attention = torch.zeros((n, length), dtype=torch.long)
        loss_mask = torch.zeros((n, length))
        old = torch.zeros((n, length))
        for row, e in enumerate(episodes):
            completion_ids[row, : e.num_tokens] = torch.tensor(e.completion_ids)
            completion_attention[row, : e.num_tokens] = 1
            loss_mask[row, : e.num_tokens] = torch.tensor(e.loss_mask, dtype=torch.float)
            old[row, : e.num_tokens] = torch.tensor(e.logprobs)
        return cls(
            prompt_ids=prompt_ids,
            prompt_attention=prompt_attention,
            rows=rows,
            completion_ids=completion_ids,
            completion_attention=completion_attention,
            loss_mask=loss_mask,
            old_logprobs=old,
            advantages=torch.tensor([e.advantage for e in episodes], dtype=torch.float),
        )


def _positions(attention: torch.Tensor) -> torch.Tensor:
    return (attention.cumsum(-1) - 1).clamp(min=0)


def _logits_full(model: PreTrainedModel, batch: TokenBatch) -> torch.Tensor:
    """[N, C, V] logits predicting each completion token, one forward over prompt + completion."""
    input_ids = torch.cat([batch.prompt_ids[batch.rows], batch.completion_ids], dim=1)
    attention = torch.cat([batch.prompt_attention[batch.rows], batch.completion_attention], dim=1)
    length = batch.completion_ids.shape[1]
    # Logits at column j predict token j+1: keep the last length+1 columns and drop the final one.
    return model(
        input_ids=input_ids,
        attention_mask=attention,
        position_ids=_positions(attention),
        logits_to_keep=length + 1,
        use_cache=False,
    ).logits[:, :-1]


def _logits_shared_prefix(model: PreTrainedModel, batch: TokenBatch) -> torch.Tensor:
    """The same logits, with each distinct prompt run once: its KV cache (still in the
    autograd graph) is copied to the rows that share it, so gradients from all the
    group's completions flow back into one prompt pass. Exact, and G times less
    prompt compute for groups of G."""
    cache = DynamicCache()
    first = model(
        input_ids=batch.prompt_ids,
        attention_mask=batch.prompt_attention,
        position_ids=_positions(batch.prompt_attention),
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    ).logits[:, -1]
    first = first[batch.rows].unsqueeze(1)
    if batch.completion_ids.shape[1] == 1:
        return first
    cache.batch_select_indices(batch.rows)
    attention = torch.cat([batch.prompt_attention[batch.rows], batch.completion_attention], dim=1)[:, :-1]
    positions = _positions(attention)[:, batch.prompt_ids.shape[1] :]
    rest = model(
        input_ids=batch.completion_ids[:, :-1],
        attention_mask=attention,
        position_ids=positions,
        past_key_values=cache,
        use_cache=True,
    ).logits
    return torch.cat([first, rest], dim=1)


def completion_logprobs(
    model: PreTrainedModel,
    batch: TokenBatch,
    temperature: float,
    with_entropy: bool = False,
    shared_prefix: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-prob of each completion token under softmax(logits / temperature), the
    distribution the sampler drew from; optionally the per-token entropy (no grad)."""
    # Gradient checkpointing turns the cache off, so callers using it pass shared_prefix=False.
    share = shared_prefix and len(batch.prompt_ids) < len(batch.rows)
    logits = (_logits_shared_prefix if share else _logits_full)(model, batch)
    logits = logits.float() / temperature
    log_norm = torch.logsumexp(logits, dim=-1)
    logprobs = logits.gather(-1, batch.completion_ids.unsqueeze(-1)).squeeze(-1) - log_norm
    entropy = None
    if with_entropy:
        with torch.no_grad():
            detached = logits.detach()
            entropy = log_norm.detach() - (torch.softmax(detached, dim=-1) * detached).sum(-1)
    return logprobs, entropy
