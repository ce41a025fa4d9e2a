"""The learner's view of episodes: padded tensors and per-token log-probs."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedModel

from rlvr.episode import Episode
from rlvr.lm_head import token_logprobs


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


def _hidden_full(model: PreTrainedModel, batch: TokenBatch) -> torch.Tensor:
    """[N, C, H] final hidden states predicting each completion token, one forward over prompt + completion."""
    input_ids = torch.cat([batch.prompt_ids[batch.rows], batch.completion_ids], dim=1)
    attention = torch.cat([batch.prompt_attention[batch.rows], batch.completion_attention], dim=1)
    length = batch.completion_ids.shape[1]
    hidden = model.get_decoder()(
        input_ids=input_ids, attention_mask=attention, position_ids=_positions(attention), use_cache=False
    ).last_hidden_state
    # The state at column j predicts token j+1: keep the last length+1 columns and drop the final one.
    return hidden[:, -length - 1 : -1]


def _hidden_shared_prefix(model: PreTrainedModel, batch: TokenBatch) -> torch.Tensor:
    """The same hidden states, with each distinct prompt run once: its KV cache (still in the
    autograd graph) is copied to the rows that share it, so gradients from all the
    group's completions flow back into one prompt pass. Exact, and G times less
    prompt compute for groups of G."""
    decoder = model.get_decoder()
    cache = DynamicCache()
    first = decoder(
        input_ids=batch.prompt_ids,
        attention_mask=batch.prompt_attention,
        position_ids=_positions(batch.prompt_attention),
        past_key_values=cache,
        use_cache=True,
    ).last_hidden_state[:, -1:]
    first = first[batch.rows]
    if batch.completion_ids.shape[1] == 1:
        return first
    cache.batch_select_indices(batch.rows)
    attention = torch.cat([batch.prompt_attention[batch.rows], batch.completion_attention], dim=1)[:, :-1]
    positions = _positions(attention)[:, batch.prompt_ids.shape[1] :]
    rest = decoder(
        input_ids=batch.completion_ids[:, :-1],
        attention_mask=attention,
        position_ids=positions,
        past_key_values=cache,
        use_cache=True,
    ).last_hidden_state
    return torch.cat([first, rest], dim=1)


def plain_output_head(model: PreTrainedModel) -> torch.Tensor | None:
    """The vocabulary projection's weight when logits are exactly hidden @ weight.T: no bias, no logit scaling or
    soft-capping (Gemma 2, Cohere, Granite have those), no adapter on the head. Otherwise None."""
    head = model.get_output_embeddings()
    if type(head) is not torch.nn.Linear or head.bias is not None:
        return None
    config = model.config
    if any(getattr(config, key, None) not in (None, 1.0) for key in ("final_logit_softcapping", "logit_scale", "logits_scaling")):
        return None
    return head.weight


def completion_logprobs(
    model: PreTrainedModel,
    batch: TokenBatch,
    temperature: float,
    with_entropy: bool = False,
    shared_prefix: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-prob of each completion token under softmax(logits / temperature), the
    distribution the sampler drew from; optionally the per-token entropy (no grad).

    Logits are never materialised for the whole batch: the vocabulary projection runs over
    the real (unpadded) completion tokens a chunk at a time (`rlvr.lm_head`)."""
    head = plain_output_head(model)
    if head is None:
        return _completion_logprobs_full_vocab(model, batch, temperature, with_entropy)
    # Gradient checkpointing turns the cache off, so callers using it pass shared_prefix=False.
    share = shared_prefix and len(batch.prompt_ids) < len(batch.rows)
    hidden = (_hidden_shared_prefix if share else _hidden_full)(model, batch)
    real = batch.completion_attention.bool()
    flat_logprobs, flat_entropy = token_logprobs(hidden[real], head, batch.completion_ids[real], temperature, with_entropy)
    logprobs = torch.zeros(real.shape, dtype=torch.float32).masked_scatter(real, flat_logprobs)
    entropy = None if flat_entropy is None else torch.zeros(real.shape, dtype=torch.float32).masked_scatter(real, flat_entropy)
    return logprobs, entropy


def _completion_logprobs_full_vocab(
    model: PreTrainedModel, batch: TokenBatch, temperature: float, with_entropy: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The same from the model's own logits, for heads that are more than one matmul."""
    input_ids = torch.cat([batch.prompt_ids[batch.rows], batch.completion_ids], dim=1)
    attention = torch.cat([batch.prompt_attention[batch.rows], batch.completion_attention], dim=1)
    length = batch.completion_ids.shape[1]
    logits = model(
        input_ids=input_ids,
        attention_mask=attention,
        position_ids=_positions(attention),
        logits_to_keep=length + 1,
        use_cache=False,
    ).logits[:, :-1]
    logits = logits.float() / temperature
    log_norm = torch.logsumexp(logits, dim=-1)
    logprobs = logits.gather(-1, batch.completion_ids.unsqueeze(-1)).squeeze(-1) - log_norm
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = log_norm - (torch.softmax(logits, dim=-1) * logits).sum(-1)
    return logprobs, entropy
