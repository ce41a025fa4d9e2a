"""A rollout engine on plain transformers: batched, KV-cached, finished rows leave the batch."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from rlvr.rollout.base import RolloutEngine, SamplingParams, TokenCallback
from rlvr.rollout.stop_tokens import stop_token_ids
from rlvr.types import Episode

# Below this many shared tokens a separate prefix pass costs more than it saves.
MIN_SHARED_PREFIX = 16


def common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """How many leading ids all the sequences have in common."""
    shortest = min(len(s) for s in sequences)
    first = sequences[0]
    for index in range(shortest):
        if any(s[index] != first[index] for s in sequences[1:]):
            return index
    return shortest


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Set logits outside the top-k / nucleus to -inf (the most likely token always survives)."""
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # Drop a token when the tokens ranked above it already cover top_p.
        drop = probs.cumsum(-1) - probs > top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def sample_next(logits: torch.Tensor, sampling: SamplingParams, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick the next token per row and return it with its log-prob under the
    temperature-scaled (unfiltered) distribution, which is what the learner recomputes."""
    logits = logits.float()
    if sampling.greedy:
        tokens = logits.argmax(-1)
        logprobs = logits.log_softmax(-1)
    else:
        scaled = logits / sampling.temperature
        logprobs = scaled.log_softmax(-1)
        probs = filter_logits(scaled, sampling.top_k, sampling.top_p).softmax(-1)
        tokens = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return tokens, logprobs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


class TransformersEngine(RolloutEngine):
    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        batch_size: int = 64,
        shares_weights: bool = True,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.shares_weights = shares_weights
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.device = model.device  # the engine decodes where the model lives
        self.stop_ids = torch.tensor(sorted(stop_token_ids(model, tokenizer)), device=self.device)

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingParams) -> list[Episode]:
        return self._generate(prompts, sampling, None)

    def generate_streaming(
        self, prompts: Sequence[Sequence[int]], sampling: SamplingParams, on_tokens: TokenCallback
    ) -> list[Episode]:
        """Each step's token of every running row is told as it is sampled (rows of one batch interleave)."""
        return self._generate(prompts, sampling, on_tokens)

    @torch.inference_mode()
    def _generate(
        self, prompts: Sequence[Sequence[int]], sampling: SamplingParams, on_tokens: TokenCallback | None
    ) -> list[Episode]:
        generator = torch.Generator(self.device).manual_seed(sampling.seed)
        # Longest prompts first, so each batch pads little; results go back in input order.
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        episodes: list[Episode | None] = [None] * len(prompts)
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                # The batch's rows are told by their index in the call's prompts, not in the sorted chunk.
                told = None if on_tokens is None else (lambda row, ids, chunk=chunk: on_tokens(chunk[row], ids))
                for index, episode in zip(chunk, self._generate_batch([prompts[i] for i in chunk], sampling, generator, told)):
                    episodes[index] = episode
        finally:
            self.model.train(was_training)
        return episodes  # type: ignore[return-value]

    def _generate_batch(
        self,
        prompts: list[Sequence[int]],
        sampling: SamplingParams,
        generator: torch.Generator,
        on_tokens: TokenCallback | None = None,
    ) -> list[Episode]:
        size = len(prompts)
        # A group's completions share one prompt: prefill each distinct prompt once, then copy its cache rows.
        distinct: dict[tuple[int, ...], int] = {}
        rows = torch.tensor([distinct.setdefault(tuple(p), len(distinct)) for p in prompts], device=self.device)
        logits, cache, attention, positions = self._prefill(list(distinct))
        logits = logits[rows]
        cache.batch_select_indices(rows)
        attention, last_position = attention[rows], positions[rows, -1]
        tokens: list[list[int]] = [[] for _ in range(size)]
        logprobs: list[list[float]] = [[] for _ in range(size)]
        active = torch.arange(size, device=self.device)  # batch row -> prompt index
        stopped_by_text: set[int] = set()
        window = self._stop_window(sampling.stop)
        for step in range(sampling.max_new_tokens):
            if step < sampling.min_new_tokens:  # the distribution sampled from, and so its log-probs, has no stop token
                logits[:, self.stop_ids] = float("-inf")
            next_tokens, next_logprobs = sample_next(logits, sampling, generator)
            for row, token, logprob in zip(active.tolist(), next_tokens.tolist(), next_logprobs.tolist()):
                tokens[row].append(token)
                logprobs[row].append(logprob)
                if on_tokens is not None:
                    on_tokens(row, [token])
            running = ~torch.isin(next_tokens, self.stop_ids)
            if sampling.stop:
                hits = self._stop_text_hits([tokens[row] for row in active.tolist()], sampling.stop, window).to(self.device)
                stopped_by_text.update(active[hits].tolist())
                running &= ~hits
            if step == sampling.max_new_tokens - 1 or not running.any():
                break
            if not running.all():  # finished rows leave the batch and the cache
                keep = running.nonzero().squeeze(-1)
                cache.batch_select_indices(keep)
                active, attention, next_tokens, last_position = (
                    active[keep],
                    attention[keep],
                    next_tokens[keep],
                    last_position[keep],
                )
            attention = torch.cat([attention, attention.new_ones(len(active), 1)], dim=-1)
            last_position = last_position + 1
            logits = self.model(
                input_ids=next_tokens.unsqueeze(-1),
                attention_mask=attention,
                position_ids=last_position.unsqueeze(-1),
                past_key_values=cache,
            ).logits[:, -1]

        stops = set(self.stop_ids.tolist())
        return [
            Episode(
                prompt_ids=list(prompt),
                completion_ids=ids,
                logprobs=lps,
                loss_mask=[1] * len(ids),
                truncated=ids[-1] not in stops and row not in stopped_by_text,
                text=self.tokenizer.decode(ids, skip_special_tokens=True),
            )
            for row, (prompt, ids, lps) in enumerate(zip(prompts, tokens, logprobs))
        ]

    def _prefill(self, prompts: list[tuple[int, ...]]) -> tuple[torch.Tensor, DynamicCache, torch.Tensor, torch.Tensor]:
        """Next-token logits, KV cache, attention mask and position ids of distinct prompts.

        Prompts usually open with the same system prompt and demonstrations, and a multi-turn rollout's contexts
        all start with their group's prompt: the prefix they all share is run once and its cache copied to every
        row, so only the rest of each prompt is computed per row (left-padded, so padding may sit between the
        shared prefix and a row's own tokens; position ids skip it).
        """
        shared = common_prefix_length(prompts) if len(prompts) > 1 else 0
        shared = min(shared, min(len(p) for p in prompts) - 1)  # every row keeps a token to take logits from
        cache = DynamicCache()
        if shared >= MIN_SHARED_PREFIX:
            prefix = torch.tensor([prompts[0][:shared]], device=self.device)
            self.model(input_ids=prefix, past_key_values=cache, use_cache=True, logits_to_keep=1)
            cache.batch_repeat_interleave(len(prompts))
        else:
            shared = 0
        rests = [p[shared:] for p in prompts]
        width = max(len(r) for r in rests)
        input_ids = torch.full((len(rests), width), self.pad_id, dtype=torch.long, device=self.device)
        attention = torch.zeros((len(rests), shared + width), dtype=torch.long, device=self.device)
        attention[:, :shared] = 1
        for row, rest in enumerate(rests):
            input_ids[row, width - len(rest) :] = torch.tensor(rest, dtype=torch.long, device=self.device)
            attention[row, shared + width - len(rest) :] = 1
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        logits = self.model(
            input_ids=input_ids,
            attention_mask=attention,
            position_ids=positions[:, shared:],
            past_key_values=cache,
            logits_to_keep=1,
        ).logits[:, -1]
        return logits, cache, attention, positions

    def _stop_window(self, stop: tuple[str, ...]) -> int:
        """How many trailing ids to decode when looking for a stop string: twice any stop string's own ids, so a
        stop string that was just completed lies inside it (one complete earlier would have ended its row then)."""
        return 2 * max((len(self.tokenizer.encode(s, add_special_tokens=False)) for s in stop), default=0) + 4

    def _stop_text_hits(self, rows: list[list[int]], stop: tuple[str, ...], window: int) -> torch.Tensor:
        """Which rows' text now ends in a stop string (only the last `window` ids of each are decoded)."""
        tails = self.tokenizer.batch_decode([ids[-window:] for ids in rows], skip_special_tokens=False)
        return torch.tensor([any(s in tail for s in stop) for tail in tails], dtype=torch.bool)

    @torch.no_grad()
    def update_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy the learner's weights in place; a name the engine's model lacks is a loud error."""
        if self.shares_weights:
            return
        params = dict(self.model.named_parameters(remove_duplicate=False))  # tied weights under each of their names
        params.update(dict(self.model.named_buffers()))
        seen = set()
        for name, tensor in weights:
            if name not in params:
                raise KeyError(f"update_weights: the rollout model has no parameter {name!r}")
            params[name].copy_(tensor)
            seen.add(name)
        missing = {n for n, _ in self.model.named_parameters()} - seen
        if missing:
            raise KeyError(f"update_weights: no new value for {len(missing)} parameters, e.g. {sorted(missing)[:3]}")
