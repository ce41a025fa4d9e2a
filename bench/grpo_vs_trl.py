"""One GRPO step in rlvr against TRL's GRPOTrainer: the same config on the same machine.

Both systems train the packaged SmolLM2-135M-Instruct on the default recipe's task (two-term chain sums) with
the same prompts and the same reward (rlvr's rubric, called in-process by both): P prompts x G completions per
step, at most M new tokens, temperature 0.7, the same constant learning rate, KL coefficient 0 (no reference
model), one optimiser step per batch. Three systems:

- `trl`: TRL as it comes (`GRPOConfig`'s defaults on a CPU: transformers `generate`, and `bf16=True`, which is
  native on some CPUs and emulated, ~100x slower, on others);
- `trl_fp32`: TRL with `bf16=False`, what its documentation tells a user without native bf16 to set;
- `rlvr`: rlvr as `make train` runs it (`rollout.engine: auto`, dtypes `auto`: chosen from this machine).

Equal work: by default (`--equal-lengths`) every completion is exactly `--max-tokens` tokens in both systems (the
end-of-turn token is held back: TRL's `min_new_tokens`, rlvr's `sampling.min_new_tokens`, and rlvr's overlong
filter is off so that it trains on all of them, as TRL does), so both generate and train on the same number of
tokens per step instead of on lengths that differ by chance. Each system runs in its own child process, one after
the other, so each gets the whole machine and its own peak RSS; the first `--warmup` steps of each are not timed.

Printed: the CPU and torch's capability for it; per system the dtypes it ran in, seconds per step (median), the
generate / train split (generation includes scoring), completion tokens per step and per second, peak RSS. The last
lines are `rlvr_peak_rss_gb=...`, `ratio_vs_trl=<TRL s/step / rlvr s/step>` (TRL as it comes) and `ratio_vs_trl_fp32=...`.

    .venv/bin/python bench/grpo_vs_trl.py [--steps 4] [--warmup 1] [--prompts 2] [--group 8] [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# So small that neither policy moves over the measured steps: both systems then time the same workload, the base
# model's completions, while doing every computation of a real step. (At 1e-6 a step already changes which
# tokens a bf16 sampler draws, and the two systems' completion lengths drift apart by chance.) --lr changes it.
LR = 1e-9
TEMPERATURE = 0.7
SEED = 0


# `--low-memory`: rlvr's documented low-memory setting (README, "Memory"): 8-bit optimiser moments, activations
# recomputed in the backward, freed memory returned to the system at once, and a KV cache sized for this workload
# (16 sequences of under 1,024 tokens need ~0.07 GB).
LOW_MEMORY = {
    "train.optimizer": "adamw_8bit",
    "model.gradient_checkpointing": "true",
    "train.release_memory": "true",
    "rollout.vllm.kv_cache_gb": 0.1,
    "rollout.vllm.max_model_len": 1024,
}


def rlvr_steps(args: argparse.Namespace) -> list[dict]:
    from rlvr.config import load_config
    from rlvr.trainer import Trainer

    overrides = {
        "seed": SEED,
        "output_dir": tempfile.mkdtemp(prefix="bench-rlvr-"),
        "train.prompts_per_step": args.prompts,
        "train.group_size": args.group,
        "train.micro_batch_size": args.prompts * args.group,
        "train.lr": args.lr,
        "algo.kl.coef": 0.0,
        "sampling.temperature": TEMPERATURE,
        "sampling.max_new_tokens": args.max_tokens,
        "rollout.engine": args.rlvr_engine,
        "scoring.workers": 0,  # rewards in-process, as TRL computes them
    }
    if args.equal_lengths:
        overrides.update({"sampling.min_new_tokens": args.max_tokens, "algo.overlong_filter": "false"})
    if args.low_memory:
        overrides.update(LOW_MEMORY)
    trainer = Trainer(load_config(None, [f"{k}={v}" for k, v in overrides.items()] + args.rlvr_set))
    rows = []
    for step in range(args.warmup + args.steps):
        m = trainer.train_step(step)
        tokens = m["response_length"] * args.prompts * args.group
        rows.append({"step": m["step_seconds"], "generate": m["generate_seconds"], "train": m["train_seconds"], "tokens": tokens})
        print(f"rlvr step {step + 1}: {m['step_seconds']:.1f}s, {tokens:.0f} tokens, reward {m['reward']:.3f}", file=sys.stderr)
    engine = type(trainer.engine).__name__
    dtypes = f"rollout {trainer.engine.precision}; learner {trainer.learner_precision}"
    return [dict(r, engine=engine, dtypes=dtypes) for r in rows]


def trl_fp32_steps(args: argparse.Namespace) -> list[dict]:
    return trl_steps(args, bf16=False)


def trl_steps(args: argparse.Namespace, bf16: bool | None = None) -> list[dict]:
    """TRL's GRPOTrainer; `bf16=None` leaves GRPOConfig's own default (True unless fp16 is set)."""
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from rlvr.config import load_config
    from rlvr.envs import make_env
    from rlvr.models import resolve_model_path

    config = load_config(None)
    env = make_env(config.env)
    problems = env.train_problems(0, args.prompts * (args.warmup + args.steps))
    dataset = Dataset.from_list([{"prompt": env.messages(p), "index": i} for i, p in enumerate(problems)])

    def reward(completions, index, **_):
        return [env.rubric.score(c[0]["content"], problems[i]).total for c, i in zip(completions, index)]

    rows: list[dict] = []
    timing = {"generate": 0.0, "started": 0.0, "tokens": 0}

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *_, **__):
            timing.update(generate=0.0, started=time.perf_counter())

        def on_step_end(self, *_, **__):
            seconds = time.perf_counter() - timing["started"]
            generate = timing["generate"]
            rows.append({"step": seconds, "generate": generate, "train": seconds - generate, "tokens": timing["tokens"]})
            print(f"trl step {len(rows)}: {seconds:.1f}s, {timing['tokens']} tokens", file=sys.stderr)

    grpo = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="bench-trl-"),
        per_device_train_batch_size=args.prompts * args.group,
        num_generations=args.group,
        max_completion_length=args.max_tokens,
        temperature=TEMPERATURE,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        beta=0.0,
        num_iterations=1,
        gradient_accumulation_steps=1,
        max_steps=args.warmup + args.steps,
        logging_strategy="no",
        disable_tqdm=True,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=SEED,
        shuffle_dataset=False,
        generation_kwargs={"min_new_tokens": args.max_tokens} if args.equal_lengths else None,
        **({} if bf16 is None else {"bf16": bf16}),
    )
    path = str(resolve_model_path("smollm2-135m"))
    trainer = GRPOTrainer(model=path, reward_funcs=reward, args=grpo, train_dataset=dataset, callbacks=[StepTimer()])
    generate_and_score = trainer._generate_and_score_completions

    def timed(inputs):
        started = time.perf_counter()
        out = generate_and_score(inputs)
        timing["generate"] += time.perf_counter() - started
        timing["tokens"] = int(out["completion_mask"].sum())
        return out

    trainer._generate_and_score_completions = timed
    torch.manual_seed(SEED)
    trainer.train()
    dtypes = "bf16 autocast (generate and train)" if grpo.bf16 else "float32"
    return [dict(r, engine="transformers generate", dtypes=dtypes) for r in rows]


SYSTEMS = {"rlvr": rlvr_steps, "trl": trl_steps, "trl_fp32": trl_fp32_steps}


def child(args: argparse.Namespace) -> None:
    from rlvr.memory import peak_rss_gb

    rows = SYSTEMS[args.system](args)
    Path(args.out).write_text(json.dumps({"rows": rows, "peak_rss_gb": peak_rss_gb()}))


def summarize(name: str, result: dict, warmup: int) -> dict:
    rows = result["rows"][warmup:]
    step = statistics.median(r["step"] for r in rows)
    tokens = statistics.mean(r["tokens"] for r in rows)
    return {
        "system": name,
        "engine": result["rows"][0]["engine"],
        "dtypes": result["rows"][0]["dtypes"],
        "s_per_step": step,
        "generate_s": statistics.median(r["generate"] for r in rows),
        "train_s": statistics.median(r["train"] for r in rows),
        "tokens_per_step": tokens,
        "tokens_per_s": sum(r["tokens"] for r in rows) / sum(r["step"] for r in rows),
        "peak_rss_gb": result["peak_rss_gb"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4, help="timed steps per system")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--lr", type=float, default=LR)
    parser.add_argument("--rlvr-engine", default="auto", help="rollout.engine for rlvr (auto, vllm, transformers)")
    parser.add_argument("--rlvr-set", action="append", default=[], metavar="KEY=VALUE", help="more rlvr config overrides")
    parser.add_argument(
        "--equal-lengths",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="every completion exactly --max-tokens long in both systems (--no-equal-lengths: where each model stops)",
    )
    low = ", ".join(f"{key}={value}" for key, value in LOW_MEMORY.items())
    parser.add_argument(
        "--low-memory", action=argparse.BooleanOptionalAction, default=False, help=f"rlvr in its low-memory setting: {low}"
    )
    parser.add_argument("--systems", default="trl,trl_fp32,rlvr")
    parser.add_argument("--system", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.system:
        return child(args)

    from rlvr.hardware import cpu_description, dtype_support

    bf16 = dtype_support("bfloat16")
    print(f"# {cpu_description()}, {os.cpu_count()} cores, python {platform.python_version()}")
    print(f"# bf16 {'native' if bf16.native else 'emulated'}: {bf16.reason}")
    lengths = f"exactly {args.max_tokens}" if args.equal_lengths else f"<= {args.max_tokens}"
    print(
        f"# SmolLM2-135M-Instruct, chain_sum, {args.prompts} prompts x {args.group} completions, {lengths} "
        f"tokens, T={TEMPERATURE}, lr={args.lr}, beta=0; {args.warmup} warm-up + {args.steps} timed steps each"
    )
    summaries = {}
    for name in args.systems.split(","):
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            command = [sys.executable, __file__, "--system", name, "--out", out.name]
            passed = {k: v for k, v in vars(args).items() if k not in ("system", "out", "systems", "rlvr_set")}
            for key, value in passed.items():
                flag = key.replace("_", "-")
                command.append((f"--{flag}" if value else f"--no-{flag}") if isinstance(value, bool) else f"--{flag}={value}")
            command += [f"--rlvr-set={item}" for item in args.rlvr_set]
            subprocess.run(command, check=True, stdout=sys.stderr)  # the children's chatter stays off stdout
            summaries[name] = summarize(name, json.loads(Path(out.name).read_text()), args.warmup)
    columns = ("s/step", 7), ("generate", 9), ("train", 7), ("tokens/step", 12), ("tokens/s", 9), ("peak RSS", 9)
    print(f"{'system':<8} {'engine':<22} " + " ".join(f"{name:>{width}}" for name, width in columns))
    for s in summaries.values():
        print(
            f"{s['system']:<8} {s['engine']:<22} {s['s_per_step']:>7.2f} {s['generate_s']:>9.2f} {s['train_s']:>7.2f} "
            f"{s['tokens_per_step']:>12.0f} {s['tokens_per_s']:>9.1f} {s['peak_rss_gb']:>7.2f}GB"
        )
    for s in summaries.values():
        print(f"# {s['system']} dtypes: {s['dtypes']}")
    if "rlvr" in summaries:
        rlvr = summaries["rlvr"]
        ratios = (("trl", "ratio_vs_trl"), ("trl_fp32", "ratio_vs_trl_fp32"))
        for name, _ in ratios:
            if name in summaries:
                print(f"# tokens/s, rlvr / {name}: {rlvr['tokens_per_s'] / summaries[name]['tokens_per_s']:.2f}")
        print(f"rlvr_peak_rss_gb={rlvr['peak_rss_gb']:.2f}")
        for name, line in ratios:
            if name in summaries:
                print(f"{line}={summaries[name]['s_per_step'] / rlvr['s_per_step']:.2f}")


if __name__ == "__main__":
    main()
