"""The learner's view of episodes: padded tensors and per-token log-probs."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from transformers import PreTrainedModel

from rlvr.lm_head import token_logprobs
from rlvr.types import STALENESS, Episode


@dataclass
class TokenBatch:
    """Distinct prompts left-padded to one width; completions right-padded.

    Row i of the batch is prompt `rows[i]` followed by completion i, so every
    completion starts at the same column and a group's shared prompt is stored
    once. The learner packs this into `PackedGroups`, where it is also computed once.
    """

    prompt_ids: torch.Tensor  # [U, P]
    prompt_attention: torch.Tensor  # [U, P]
    rows: torch.Tensor  # [N] -> index into the distinct prompts
    completion_ids: torch.Tensor  # [N, C]
    completion_attention: torch.Tensor  # [N, C] 1 on real tokens
    loss_mask: torch.Tensor  # [N, C] float, 1 where the token carries gradient
    old_logprobs: torch.Tensor  # [N, C] the sampler's
    advantages: torch.Tensor  # [N]
    version_gap: torch.Tensor  # [N] long: policy versions between the sampler's weights and the learner's (0: on-policy)

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
            version_gap=torch.tensor([e.meta.get(STALENESS, 0) for e in episodes], dtype=torch.long),
        )

    def to(self, device: torch.device) -> TokenBatch:
        return TokenBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


def _positions(attention: torch.Tensor) -> torch.Tensor:
    return (attention.cumsum(-1) - 1).clamp(min=0)


def _padded_rows(batch: TokenBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Input ids and attention mask with every episode in its own row: its prompt (left-padded), its completion."""
    input_ids = torch.cat([batch.prompt_ids[batch.rows], batch.completion_ids], dim=1)
    attention = torch.cat([batch.prompt_attention[batch.rows], batch.completion_attention], dim=1)
    return input_ids, attention


def _hidden_full(model: PreTrainedModel, batch: TokenBatch) -> torch.Tensor:
    """[N, C, H] final hidden states predicting each completion token, one forward over prompt + completion."""
    input_ids, attention = _padded_rows(batch)
    length = batch.completion_ids.shape[1]
    hidden = model.get_decoder()(
        input_ids=input_ids, attention_mask=attention, position_ids=_positions(attention), use_cache=False
    ).last_hidden_state
    # The state at column j predicts token j+1: keep the last length+1 columns and drop the final one.
    return hidden[:, -length - 1 : -1]


# A packed row's attention costs each of its tokens work in proportion to the row's length, and each extra row
# repeats the prompt: rows of a few hundred tokens balance the two. Measured on SmolLM2-135M, 2 x 8 completions of
# 128 tokens after a 52-token prompt: an update took 5.0 s with 512-token rows against 7.2 s with one 1,076-token
# row per group (bf16 autocast; 12.6 s against 14.7 s in fp32). Short completions fit one row either way.
MAX_ROW_TOKENS = 512


@dataclass
class PackedGroups:
    """Each distinct prompt and all its completions packed into one row: prompt, completion 1, completion 2, ...

    A completion attends to the prompt and to itself, never to its siblings, and its positions continue from
    the prompt's, so every token sees exactly the context it had when sampled. The prompt is computed once per
    group and no completion is padded to the longest one; rows are padded only at their ends.
    """

    input_ids: torch.Tensor  # [R, L]
    positions: torch.Tensor  # [R, L]
    allowed: torch.Tensor  # [R, 1, L, L] bool: query may attend to key
    # For each real completion token, in row-major order of batch.completion_attention: where in the packed rows
    # sits the hidden state that predicts it.
    rows: torch.Tensor  # [T]
    columns: torch.Tensor  # [T]

    @classmethod
    def from_batch(cls, batch: TokenBatch, max_row_tokens: int = MAX_ROW_TOKENS) -> PackedGroups:
        """Pack `batch`; a group whose row would pass `max_row_tokens` continues in another row with its prompt
        again (attention cost grows with the square of a row's length)."""
        prompts = [ids[mask.bool()] for ids, mask in zip(batch.prompt_ids, batch.prompt_attention)]
        pieces: list[list[torch.Tensor]] = []  # per packed row: prompt, completions...
        positions: list[list[torch.Tensor]] = []
        segments: list[list[int]] = []  # per token: 0 = prompt, i + 1 = completion i
        open_row: dict[int, int] = {}  # distinct prompt -> the packed row taking its completions
        rows, columns = [], []
        for index, (prompt_index, length) in enumerate(zip(batch.rows.tolist(), batch.completion_attention.sum(-1).tolist())):
            prompt = prompts[prompt_index]
            row = open_row.get(prompt_index)
            if row is None or len(segments[row]) + length > max(max_row_tokens, len(prompt) + length):
                row = open_row[prompt_index] = len(pieces)
                pieces.append([prompt])
                positions.append([torch.arange(len(prompt))])
                segments.append([0] * len(prompt))
            start = len(segments[row])
            pieces[row].append(batch.completion_ids[index, :length])
            positions[row].append(torch.arange(len(prompt), len(prompt) + length))
            segments[row] += [index + 1] * length
            rows += [row] * length
            # Token 0 is predicted by the prompt's last state, token j by the state at completion token j - 1.
            columns += ([len(prompt) - 1] + list(range(start, start + length - 1)))[:length]
        width = max(len(s) for s in segments)
        device = batch.completion_ids.device
        input_ids = torch.zeros((len(pieces), width), dtype=torch.long, device=device)  # padding is masked: any id does
        position_ids = torch.zeros((len(pieces), width), dtype=torch.long, device=device)
        segment = torch.full((len(pieces), width), -1, dtype=torch.long, device=device)
        for row in range(len(pieces)):
            ids = torch.cat(pieces[row])
            input_ids[row, : len(ids)] = ids
            position_ids[row, : len(ids)] = torch.cat(positions[row]).to(device)
            segment[row, : len(ids)] = torch.tensor(segments[row], device=device)
        query, key = segment[:, :, None], segment[:, None, :]
        causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()
        allowed = causal & ((key == 0) | (key == query)) & (query >= 0)
        allowed |= torch.eye(width, dtype=torch.bool, device=device) & (query < 0)  # padding sees itself: no empty row
        rows_, columns_ = torch.tensor(rows, device=device), torch.tensor(columns, device=device)
        return cls(input_ids, position_ids, allowed.unsqueeze(1), rows_, columns_)


def _hidden_packed(model: PreTrainedModel, batch: TokenBatch, max_row_tokens: int = MAX_ROW_TOKENS) -> torch.Tensor:
    """[T, H] final hidden states predicting each real completion token, from one forward over packed groups."""
    packed = PackedGroups.from_batch(batch, max_row_tokens)
    mask = packed.allowed
    if model.config._attn_implementation != "sdpa":  # eager attention adds the mask to its scores
        mask = torch.zeros(mask.shape, dtype=model.dtype, device=mask.device).masked_fill(~mask, torch.finfo(model.dtype).min)
    hidden = model.get_decoder()(
        input_ids=packed.input_ids, attention_mask=mask, position_ids=packed.positions, use_cache=False
    ).last_hidden_state
    return hidden[packed.rows, packed.columns]


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


# Attention implementations that take an arbitrary [batch, 1, query, key] mask (flash attention does not).
PACKABLE_ATTENTION = ("sdpa", "eager")


def completion_logprobs(
    model: PreTrainedModel,
    batch: TokenBatch,
    temperature: float,
    with_entropy: bool = False,
    shared_prefix: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-prob of each completion token under softmax(logits / temperature), the
    distribution the sampler drew from; optionally the per-token entropy (no grad).

    With `shared_prefix` (the default) each group is packed into one row (`PackedGroups`): its prompt
    is computed once and no completion is padded. Logits are never materialised for the whole batch: the
    vocabulary projection runs over the real completion tokens a chunk at a time (`rlvr.lm_head`)."""
    head = plain_output_head(model)
    if head is None:
        return _completion_logprobs_full_vocab(model, batch, temperature, with_entropy)
    real = batch.completion_attention.bool()
    if shared_prefix and model.config._attn_implementation in PACKABLE_ATTENTION:
        hidden = _hidden_packed(model, batch)
    else:
        hidden = _hidden_full(model, batch)[real]
    flat_logprobs, flat_entropy = token_logprobs(hidden, head, batch.completion_ids[real], temperature, with_entropy)
    zeros = torch.zeros(real.shape, dtype=torch.float32, device=real.device)
    logprobs = zeros.masked_scatter(real, flat_logprobs)
    entropy = None if flat_entropy is None else zeros.masked_scatter(real, flat_entropy)
    return logprobs, entropy


class CompletionLogprobs(torch.nn.Module):
    """`completion_logprobs` of the wrapped policy as one module's forward.

    Sharding (FSDP) gathers a module's weights in its forward's hooks; the log-probs call the decoder and the
    output projection separately, so the module that is sharded as the root, whose forward gathers the embeddings,
    the final norm and the head, is this one. Unsharded it is a plain call."""

    def __init__(self, policy: PreTrainedModel) -> None:
        super().__init__()
        self.policy = policy

    def forward(
        self, batch: TokenBatch, temperature: float, with_entropy: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return completion_logprobs(self.policy, batch, temperature, with_entropy)


def _completion_logprobs_full_vocab(
    model: PreTrainedModel, batch: TokenBatch, temperature: float, with_entropy: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The same from the model's own logits, for heads that are more than one matmul."""
    input_ids, attention = _padded_rows(batch)
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
