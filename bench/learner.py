"""Learner throughput: rlvr's packed, chunked-head forward and backward against the plain way, on one device.

The same batch (P prompts x G completions of random tokens, each prompt shared by its group), the same model and
autocast on both sides. "plain" is what TRL's GRPO and most trainers do: every completion in its own padded row
after its prompt, the model's full-vocabulary logits, log-softmax, gather. "rlvr" is `rlvr.learner`: each group's
prompt computed once (packed rows), the vocabulary projection in chunks without full logits. Each system runs in
its own child process, so peak memory is its own: peak allocated CUDA memory on a GPU, peak RSS on a CPU.

Printed per system: seconds per forward+backward (median of --steps after --warmup), completion tokens/s (the
tokens trained on, the same for both), achieved TFLOP/s (6 x parameters x the tokens the model computes, which
for plain repeats each prompt per completion; the usual estimate, attention not counted) and MFU:
that over the device's peak, which is measured on the spot (the best of a few large matmuls in the learner's
dtype) unless --peak-tflops gives the datasheet's. Last line: `ratio_vs_plain=<plain s/step / rlvr s/step>`.

    .venv/bin/python bench/learner.py [--device auto] [--prompts 8] [--group 8] [--prompt-tokens 64] [--tokens 128]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measured_peak_tflops(device: torch.device, dtype: torch.dtype, size: int = 4096) -> float:
    """The best TFLOP/s of a few size x size matmuls in `dtype` on `device` (smaller on a CPU)."""
    size = size if device.type == "cuda" else 1024
    a, b = torch.randn(size, size, device=device, dtype=dtype), torch.randn(size, size, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(5):
        _sync(device)
        started = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e12


def _batch(args: argparse.Namespace, vocab: int):
    from rlvr.learner import TokenBatch
    from rlvr.types import Episode

    generator = torch.Generator().manual_seed(0)
    episodes = []
    for group in range(args.prompts):
        prompt = torch.randint(2, vocab, (args.prompt_tokens,), generator=generator).tolist()
        for _ in range(args.group):
            ids = torch.randint(2, vocab, (args.tokens,), generator=generator).tolist()
            episode = Episode(prompt_ids=prompt, completion_ids=ids, logprobs=[-1.0] * len(ids), loss_mask=[1] * len(ids))
            episode.group = group
            episodes.append(episode)
    return TokenBatch.from_episodes(episodes, pad_id=0)


def _plain_logprobs(model, batch, temperature: float) -> torch.Tensor:
    """Full-vocabulary logits for every padded row, then log-softmax and gather: the usual way."""
    input_ids = torch.cat([batch.prompt_ids[batch.rows], batch.completion_ids], dim=1)
    attention = torch.cat([batch.prompt_attention[batch.rows], batch.completion_attention], dim=1)
    length = batch.completion_ids.shape[1]
    logits = model(input_ids=input_ids, attention_mask=attention, use_cache=False).logits[:, -length - 1 : -1]
    logprobs = torch.log_softmax(logits.float() / temperature, dim=-1)
    return logprobs.gather(-1, batch.completion_ids.unsqueeze(-1)).squeeze(-1)


def child(args: argparse.Namespace) -> None:
    from rlvr.hardware import learner_autocast, resolve_device
    from rlvr.learner import completion_logprobs
    from rlvr.memory import peak_rss_gb
    from rlvr.models import load_policy

    device = resolve_device(args.device)
    model = load_policy(args.model).to(device)
    model.train()
    precision = learner_autocast(args.autocast_bf16 if args.autocast_bf16 != "auto" else "auto", device.type)
    batch = _batch(args, model.config.vocab_size).to(device)
    # The tokens the model computes: plain repeats a group's prompt in each of its rows, rlvr computes it once.
    prompt_rows = args.prompts if args.system == "rlvr" else args.prompts * args.group
    processed = prompt_rows * args.prompt_tokens + args.prompts * args.group * args.tokens
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.warmup + args.steps):
        _sync(device)
        started = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision.dtype == "bfloat16"):
            if args.system == "rlvr":
                logprobs = completion_logprobs(model, batch, 0.7)[0]
            else:
                logprobs = _plain_logprobs(model, batch, 0.7)
        (logprobs * batch.loss_mask).sum().backward()
        model.zero_grad(set_to_none=True)
        _sync(device)
        times.append(time.perf_counter() - started)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else peak_rss_gb()
    params = sum(p.numel() for p in model.parameters())
    result = {
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "dtype": str(precision),
        "s_per_step": statistics.median(times[args.warmup :]),
        "processed": processed,
        "tokens": args.prompts * args.group * args.tokens,
        "params": params,
        "peak_gb": peak,
        "peak_tflops": args.peak_tflops or measured_peak_tflops(device, precision.torch_dtype),
    }
    Path(args.out).write_text(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=128, help="completion tokens")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--autocast-bf16", default="auto", help="auto, true or false (as model.autocast_bf16)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's peak (datasheet); default: measured")
    parser.add_argument("--systems", default="plain,rlvr")
    parser.add_argument("--system", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.autocast_bf16 in ("true", "false"):
        args.autocast_bf16 = args.autocast_bf16 == "true"
    if args.system:
        return child(args)
    results = {}
    for name in args.systems.split(","):
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            command = [sys.executable, __file__, "--system", name, "--out", out.name]
            for key, value in vars(args).items():
                if key not in ("system", "out", "systems") and value is not None:
                    command.append(f"--{key.replace('_', '-')}={str(value).lower() if isinstance(value, bool) else value}")
            subprocess.run(command, check=True)
            results[name] = json.loads(Path(out.name).read_text())
    first = next(iter(results.values()))
    print(f"# {first['device']}, learner {first['dtype']}, {first['params'] / 1e6:.0f}M parameters")
    print(f"# {args.prompts} prompts x {args.group} completions, {args.prompt_tokens} + {args.tokens} tokens, forward + backward")
    print(f"{'system':<7} {'s/step':>7} {'tokens/s':>9} {'TFLOP/s':>8} {'MFU':>6} {'peak GB':>8}")
    for name, r in results.items():
        flops = 6 * r["params"] * r["processed"] / r["s_per_step"] / 1e12
        print(
            f"{name:<7} {r['s_per_step']:>7.3f} {r['tokens'] / r['s_per_step']:>9.0f} {flops:>8.2f} "
            f"{flops / r['peak_tflops']:>6.1%} {r['peak_gb']:>8.2f}"
        )
    print(f"# peak: {first['peak_tflops']:.2f} TFLOP/s ({'given' if args.peak_tflops else 'measured matmul'})")
    if {"plain", "rlvr"} <= results.keys():
        print(f"ratio_vs_plain={results['plain']['s_per_step'] / results['rlvr']['s_per_step']:.2f}")


if __name__ == "__main__":
    main()
