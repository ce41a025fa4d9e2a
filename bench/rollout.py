"""Rollout throughput: rlvr's engines against raw vLLM and transformers `generate`, in one process.

The same prompts (the default recipe's, P prompts x G samples), the same limit on new tokens and temperature for
every system. "raw vLLM" is `LLM.generate` called the way its docs show (n=G samples per prompt, no log-probs), on
the very engine rlvr's vLLM engine wraps and with the seeds rlvr uses, so both generate the same tokens; "rlvr
vllm" adds what training needs (each token's log-prob, the stop ids, episodes). "transformers generate" is
`model.generate` on the fp32 model, padded batch; "rlvr transformers" is rlvr's own KV-cached loop. Each row is
the median of --repeats timed calls after one warm-up call. Tokens/s counts generated tokens; ratios are against raw vLLM.
vLLM runs in `--dtype` (default `auto`: bf16 where this CPU computes it natively, else fp32, as training does); the
transformers rows run the fp32 model. The first lines say which CPU this is and what each system ran in.

    .venv/bin/python bench/rollout.py [--prompts 8] [--group 8] [--max-tokens 128] [--repeats 3] [--dtype auto]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch

TEMPERATURE = 0.7


def timed(call: Callable[[], int], repeats: int) -> tuple[float, int]:
    """Median seconds and mean tokens of `repeats` calls, after one untimed warm-up call."""
    call()
    results = []
    for _ in range(repeats):
        started = time.perf_counter()
        tokens = call()
        results.append((time.perf_counter() - started, tokens))
    return statistics.median(s for s, _ in results), round(statistics.mean(t for _, t in results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-transformers", action="store_true", help="only the two vLLM rows")
    parser.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"], help="vLLM's dtype")
    args = parser.parse_args()

    from vllm import SamplingParams as VLLMSampling

    from rlvr.config import VLLMConfig, load_config
    from rlvr.envs import make_env
    from rlvr.hardware import cpu_description
    from rlvr.models import load_policy, load_tokenizer
    from rlvr.rollout import SamplingParams
    from rlvr.rollout.hf import TransformersEngine
    from rlvr.rollout.vllm_engine import VLLMEngine
    from rlvr.tools.protocol import ChatFormat

    config = load_config(None)
    tokenizer, policy = load_tokenizer(config.model.path), load_policy(config.model.path).eval()
    env = make_env(config.env)
    chat = ChatFormat(tokenizer)
    prompts = [chat.prompt_ids(env.messages(p)) for p in env.train_problems(0, args.prompts)]
    repeated = [p for p in prompts for _ in range(args.group)]
    sampling = SamplingParams(TEMPERATURE, max_new_tokens=args.max_tokens, seed=0)

    engine = VLLMEngine(policy, tokenizer, settings=VLLMConfig(dtype=args.dtype))
    # The same requests rlvr's engine makes (n samples per prompt, the same seeds), minus the log-probs and the
    # stop ids, so both rows generate the very same tokens.
    raw_params = [
        VLLMSampling(n=args.group, temperature=TEMPERATURE, max_tokens=args.max_tokens, seed=i * args.group)
        for i in range(len(prompts))
    ]
    raw_prompts = [{"prompt_token_ids": p} for p in prompts]

    def raw_vllm() -> int:
        outputs = engine.llm.generate(raw_prompts, raw_params, use_tqdm=False)
        return sum(len(sample.token_ids) for output in outputs for sample in output.outputs)

    def rlvr_engine(e) -> Callable[[], int]:
        return lambda: sum(episode.num_tokens for episode in e.generate(repeated, sampling))

    def hf_generate() -> int:
        width = max(len(p) for p in repeated)
        ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(p)) + p for p in repeated])
        attention = (torch.arange(width)[None] >= torch.tensor([width - len(p) for p in repeated])[:, None]).long()
        with torch.inference_mode():
            out = policy.generate(
                input_ids=ids,
                attention_mask=attention,
                do_sample=True,
                temperature=TEMPERATURE,
                top_k=0,
                max_new_tokens=args.max_tokens,
                pad_token_id=tokenizer.pad_token_id,
            )
        completions = out[:, width:]
        return int((completions != tokenizer.pad_token_id).sum())

    systems: dict[str, Callable[[], int]] = {"raw vLLM": raw_vllm, "rlvr vllm": rlvr_engine(engine)}
    if not args.skip_transformers:
        systems["transformers generate"] = hf_generate
        systems["rlvr transformers"] = rlvr_engine(TransformersEngine(policy, tokenizer, batch_size=len(repeated)))

    print(f"# {cpu_description()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"# vLLM rows: {engine.precision}; transformers rows: float32")
    print(f"# SmolLM2-135M-Instruct, {args.prompts} prompts x {args.group} samples, <= {args.max_tokens} tokens, T={TEMPERATURE}")
    print(f"{'system':<22} {'seconds':>8} {'tokens':>7} {'tokens/s':>9} {'vs raw vLLM':>12}")
    reference = None
    for name, call in systems.items():
        seconds, tokens = timed(call, args.repeats)
        rate = tokens / seconds
        reference = reference or rate
        print(f"{name:<22} {seconds:>8.2f} {tokens:>7} {rate:>9.1f} {rate / reference:>11.2f}x")


if __name__ == "__main__":
    main()
