"""A menu of choices on our own task: the default recipe trained once per algorithm (or per optimiser), same seed
and budget.

Each variant is `rlvr train default` with a few `--set` overrides, run in its own process one after the other (so
each gets the whole machine and its own vLLM engine). Printed, as a markdown table: held-out accuracy after
training (greedy, n = 200) with its 95% bootstrap interval, the paired difference against the first variant on the
same questions with its 95% interval, the per-step training reward's paired difference against the first variant
(step by step, the same prompts) with its 95% interval, the mean training reward over each fifth of the run (the
reward curve), and seconds per step. The starting model is evaluated once, in the first variant.

    .venv/bin/python bench/algorithms.py [--menu algorithms|optimizers] [--out runs/<menu>] [--set key=value ...]
                                         [--only gspo cispo]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from rlvr.eval.estimators import paired_difference
from rlvr.hardware import cpu_description

MENUS = {
    "algorithms": {
        "grpo + ppo_clip": [],
        "gspo": ["algo.loss=gspo"],
        "cispo": ["algo.loss=cispo"],
        "reinforce_pp": ["algo.advantage=reinforce_pp"],
    },
    "optimizers": {
        "adamw": [],
        "adamw_8bit": ["train.optimizer=adamw_8bit"],
        "adamw_bf16": ["train.optimizer=adamw_bf16"],
    },
}


def _folder(name: str) -> str:
    return name.replace(" + ", "-").replace(" ", "-")


def run(name: str, overrides: list[str], out: Path, first: bool) -> Path:
    folder = _folder(name)
    settings = [f"output_dir={out}", f"name={folder}", *([] if first else ["eval.before=false"]), *overrides]
    command = [sys.executable, "-m", "rlvr.cli", "train", "default", "--overwrite", *[f"--set={s}" for s in settings]]
    print(f"# {name}: {' '.join(command[2:])}", file=sys.stderr, flush=True)
    subprocess.run(command, check=True)
    return out / folder


def correctness(run_dir: Path) -> tuple[list[str], list[float]]:
    """Each held-out sample's question id and whether it was right, in evaluation order (the same in every run: a
    question may appear twice in a generated split, so samples are paired by position, not by id)."""
    rows = [json.loads(line) for line in (run_dir / "eval_after.samples.jsonl").read_text().splitlines()]
    return [row["id"] for row in rows], [float(row["correct"]) for row in rows]


def step_rewards(run_dir: Path) -> list[float]:
    return [json.loads(line)["reward"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def reward_curve(run_dir: Path, parts: int = 5) -> list[float]:
    rewards = step_rewards(run_dir)
    size = max(1, len(rewards) // parts)
    return [sum(chunk) / len(chunk) for chunk in (rewards[i : i + size] for i in range(0, size * parts, size)) if chunk]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--menu", choices=sorted(MENUS), default="algorithms")
    parser.add_argument("--out", type=Path, default=None, help="default: runs/<menu>")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="applied to every variant")
    parser.add_argument("--only", nargs="*", default=None, help="variants to run after the first (default: all)")
    parser.add_argument("--reuse", action="store_true", help="report the finished runs in --out instead of running them")
    args = parser.parse_args()
    variants = MENUS[args.menu]
    args.out = args.out or Path("runs") / args.menu
    names = list(variants)
    names = names[:1] + [n for n in names[1:] if args.only is None or n in args.only]
    folders = {
        name: args.out / _folder(name) if args.reuse else run(name, [*args.overrides, *variants[name]], args.out, index == 0)
        for index, name in enumerate(names)
    }

    summaries = {name: json.loads((folder / "summary.json").read_text()) for name, folder in folders.items()}
    base_name = names[0]
    base_ids, base = correctness(folders[base_name])
    before = summaries[base_name]["eval_before"]
    print(f"CPU: {cpu_description()}")
    print(f"Starting model: {before['accuracy']:.1%} [{before['ci95'][0]:.1%}, {before['ci95'][1]:.1%}] (n = {before['n']})\n")
    print(
        "| variant | held-out after [95% CI] | vs first, paired [95% CI] | reward per step vs first, paired [95% CI] "
        "| mean reward by fifth of the run | s/step |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for name, folder in folders.items():
        after = summaries[name]["eval_after"]
        ids, scores = correctness(folder)
        if ids != base_ids:
            raise SystemExit(f"{folder}: evaluated other questions than {folders[base_name]}")
        diff = paired_difference(scores, base)
        curve = " / ".join(f"{value:.2f}" for value in reward_curve(folder))
        steps = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        seconds = sum(step["step_seconds"] for step in steps) / len(steps)
        paired = "—" if name == base_name else f"{diff['difference']:+.1%} [{diff['ci95'][0]:+.1%}, {diff['ci95'][1]:+.1%}]"
        per_step = paired_difference(step_rewards(folder), step_rewards(folders[base_name]))
        low, high = per_step["ci95"]
        rewards = "—" if name == base_name else f"{per_step['difference']:+.3f} [{low:+.3f}, {high:+.3f}]"
        print(
            f"| {name} | {after['accuracy']:.1%} [{after['ci95'][0]:.1%}, {after['ci95'][1]:.1%}] | {paired} | {rewards} "
            f"| {curve} | {seconds:.1f} |"
        )


if __name__ == "__main__":
    main()
