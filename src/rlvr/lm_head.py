"""Per-token log-probs from hidden states without materialising full-vocabulary logits.

A batch of 16 × 200 tokens over SmolLM2's 49,152-token vocabulary is 630 MB of fp32
logits, kept twice more by autograd (softmax and its gradient). Here the vocabulary
projection runs over a few hundred tokens at a time; forward keeps only each token's
log-normaliser, and backward recomputes one chunk's logits at a time to form
d logp / d logits = (onehot - softmax) / temperature. Peak memory is one chunk's
logits, whatever the batch.
"""

from __future__ import annotations

import torch

# Tokens per chunk, per device: 512 x 49,152 fp32 logits is 100 MB, and a chunk's forward holds about three such
# buffers. (128-token chunks took as long on a 2-core CPU and hold a quarter, but bf16 matmuls over fewer rows round
# differently, which changes a run's trajectory; the documented runs used 512.) A GPU needs larger matmuls.
CHUNK_TOKENS = {"cpu": 512, "cuda": 1024}


def _chunk_logits(hidden: torch.Tensor, weight: torch.Tensor, temperature: float) -> torch.Tensor:
    """fp32 logits / temperature. The temperature scales the [chunk, hidden] input rather than the [chunk, vocab]
    output (the same numbers, one pass over 49k columns fewer); under autocast the matmul runs in bf16, and the
    softmax that follows always runs in fp32."""
    return (hidden / temperature @ weight.t()).float()


def _chunked_logprobs(device_type: str) -> type[torch.autograd.Function]:
    """The chunked log-prob function for one device type: `custom_fwd` replays the forward's autocast state in the
    backward, and that state is kept per device type."""

    class ChunkedLogprobs(torch.autograd.Function):
        @staticmethod
        @torch.amp.custom_fwd(device_type=device_type)
        def forward(ctx, hidden, weight, targets, temperature, chunk, with_entropy):  # type: ignore[override]
            logprobs = torch.empty(len(targets), dtype=torch.float32, device=hidden.device)
            log_norms = torch.empty(len(targets), dtype=torch.float32, device=hidden.device)
            entropy = torch.empty(len(targets) if with_entropy else 0, dtype=torch.float32, device=hidden.device)
            for start in range(0, len(targets), chunk):
                part = slice(start, start + chunk)
                logits = _chunk_logits(hidden[part], weight, temperature)
                log_norms[part] = torch.logsumexp(logits, dim=-1)
                logprobs[part] = logits.gather(-1, targets[part].unsqueeze(-1)).squeeze(-1) - log_norms[part]
                if with_entropy:  # H = log Z - sum p * logit, with p formed in place of a second chunk-sized buffer
                    probs = torch.exp(logits - log_norms[part].unsqueeze(-1))
                    entropy[part] = log_norms[part] - probs.mul_(logits).sum(-1)
            ctx.save_for_backward(hidden, weight, targets, log_norms)
            ctx.temperature, ctx.chunk = temperature, chunk
            ctx.mark_non_differentiable(entropy)
            return logprobs, entropy

        @staticmethod
        @torch.amp.custom_bwd(device_type=device_type)
        def backward(ctx, grad_out, _grad_entropy):  # type: ignore[override]
            hidden, weight, targets, log_norms = ctx.saved_tensors
            grad_hidden = torch.zeros_like(hidden) if ctx.needs_input_grad[0] else None
            grad_weight = None
            if ctx.needs_input_grad[1]:
                grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
            for start in range(0, len(targets), ctx.chunk):
                part = slice(start, start + ctx.chunk)
                # d logp_t / d logits = onehot(t) - softmax, times 1/temperature for the scaling, times the upstream grad:
                # formed in place in the chunk's logits, a few passes over [chunk, vocab] and no second buffer.
                scale = (grad_out[part] / ctx.temperature).unsqueeze(-1)
                grad_logits = _chunk_logits(hidden[part], weight, ctx.temperature)
                grad_logits.sub_(log_norms[part].unsqueeze(-1)).exp_().mul_(-scale)
                grad_logits.scatter_add_(-1, targets[part].unsqueeze(-1), scale)
                if grad_hidden is not None:
                    grad_hidden[part] = (grad_logits.to(weight.dtype) @ weight).to(hidden.dtype)
                if grad_weight is not None:
                    grad_weight += (grad_logits.t().to(hidden.dtype) @ hidden[part]).float()
            if grad_weight is not None:
                grad_weight = grad_weight.to(weight.dtype)
            return grad_hidden, grad_weight, None, None, None, None

    return ChunkedLogprobs


_FUNCTIONS = {device_type: _chunked_logprobs(device_type) for device_type in ("cpu", "cuda")}


def token_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    with_entropy: bool = False,
    chunk: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log softmax(hidden @ weight.T / temperature)[target] for each row of `hidden` [T, H] (`targets` is [T]),
    and, if asked, each row's entropy (no gradient). `chunk`: tokens per chunk (default: the device's)."""
    chunk = chunk or CHUNK_TOKENS.get(hidden.device.type, 1024)
    logprobs, entropy = _FUNCTIONS[hidden.device.type].apply(hidden, weight, targets, temperature, chunk, with_entropy)
    return logprobs, entropy if with_entropy else None
