"""Synchronous against asynchronous RL on the default recipe: the local trainer, then Ray rollout workers with
`rollout.max_staleness` 1 and 2, the same seed and the same number of steps.

Each variant is `rlvr train default` with a few `--set` overrides, run in its own process one after the other (each
gets the whole machine). Printed, as a markdown table: seconds per step (mean over the steps after the first, and
its ratio to the synchronous local run, the reference), the learner's and the workers' idle shares, the mean and
largest staleness, weight-sync seconds per step, generated tokens per second of wall time, peak memory of the
learner process, and held-out accuracy after training (greedy, n = 200) with its 95% interval and its paired
difference against the synchronous run on the same questions.

On a small machine the learner and a worker compete for the same cores; `cluster.pin_cpus` (on by default here)
gives the learner the first cores and each worker its own, so the overlap is real and the table says what it buys.

    .venv/bin/python bench/async.py [--out runs/async] [--set key=value ...] [--only sync async-1] [--reuse]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: its sibling benchmark's helpers

from algorithms import correctness, run  # noqa: E402

from rlvr.eval.estimators import paired_difference  # noqa: E402
from rlvr.hardware import cpu_description  # noqa: E402

RAY = ["cluster.backend=ray", "cluster.pin_cpus=true", "rollout.workers=1"]
VARIANTS = {
    "sync": [],  # the reference: today's local trainer
    "ray sync": [*RAY, "rollout.max_staleness=0"],  # what Ray alone costs: the local trainer's numbers, on a worker
    "async 1": [*RAY, "rollout.max_staleness=1"],
    "async 2": [*RAY, "rollout.max_staleness=2"],
}


def _rows(folder: Path) -> list[dict]:
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return [row for row in rows if "step_seconds" in row]


def _mean(rows: list[dict], key: str) -> float | None:
    values = [row[key] for row in rows if key in row]
    return statistics.fmean(values) if values else None


def _rollout_idle(rows: list[dict], folder: Path) -> float | None:
    """The workers' idle share over the run: 1 - their own seconds of work (generating and loading weights, as each
    step's worker measured them) over workers x the run's seconds."""
    if not any("async/worker_generate_seconds" in row for row in rows):
        return None
    busy = sum(row["async/worker_generate_seconds"] + row["async/weight_load_seconds"] for row in rows)
    return 1.0 - busy / (_workers(folder) * sum(row["step_seconds"] for row in rows))


def _workers(folder: Path) -> int:
    return yaml.safe_load((folder / "config.yaml").read_text())["rollout"]["workers"]


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs") / "async")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="applied to every variant")
    parser.add_argument("--only", nargs="*", default=None, help="variants to run after the first (default: all)")
    parser.add_argument("--reuse", action="store_true", help="report the finished runs in --out instead of running them")
    args = parser.parse_args()
    names = list(VARIANTS)
    names = names[:1] + [n for n in names[1:] if args.only is None or n in args.only]
    folders = {
        name: args.out / name.replace(" ", "-")
        if args.reuse
        else run(name.replace(" ", "-"), [*args.overrides, *VARIANTS[name]], args.out, index == 0)
        for index, name in enumerate(names)
    }
    summaries = {name: json.loads((folder / "summary.json").read_text()) for name, folder in folders.items()}
    base = names[0]
    base_ids, base_scores = correctness(folders[base])
    steady = {name: _rows(folder)[1:] or _rows(folder) for name, folder in folders.items()}  # step 1 also starts up
    base_seconds = _mean(steady[base], "step_seconds")
    print(f"CPU: {cpu_description()}")
    before = summaries[base]["eval_before"]
    print(f"Starting model: {before['accuracy']:.1%} [{before['ci95'][0]:.1%}, {before['ci95'][1]:.1%}] (n = {before['n']})\n")
    print(
        "| variant | s/step | vs sync | learner idle | rollout idle | staleness mean / max | weight sync s/step "
        "| tokens/s | peak RSS GB | held-out after [95% CI] | vs sync, paired [95% CI] |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, folder in folders.items():
        rows = steady[name]
        seconds = _mean(rows, "step_seconds")
        tokens = sum(row["generated_tokens"] for row in rows) / sum(row["step_seconds"] for row in rows)
        peak = max(value for row in rows for key, value in row.items() if key.startswith("memory/"))
        lag = _mean(rows, "async/staleness_mean")
        largest = max((row["async/staleness_max"] for row in rows if "async/staleness_max" in row), default=None)
        after = summaries[name]["eval_after"]
        ids, scores = correctness(folder)
        if ids != base_ids:
            raise SystemExit(f"{folder}: evaluated other questions than {folders[base]}")
        diff = paired_difference(scores, base_scores)
        paired = "—" if name == base else f"{diff['difference']:+.1%} [{diff['ci95'][0]:+.1%}, {diff['ci95'][1]:+.1%}]"
        staleness = "—" if lag is None else f"{lag:.2f} / {largest:.0f}"
        idle = _fmt(_mean(rows, "async/learner_idle_fraction"), ".0%"), _fmt(_rollout_idle(rows, folder), ".0%")
        print(
            f"| {name} | {seconds:.2f} | {base_seconds / seconds:.2f}x | {idle[0]} | {idle[1]} | {staleness} "
            f"| {_fmt(_mean(rows, 'async/weight_sync_seconds'), '.2f')} | {tokens:.0f} | {peak:.2f} "
            f"| {after['accuracy']:.1%} [{after['ci95'][0]:.1%}, {after['ci95'][1]:.1%}] | {paired} |"
        )


if __name__ == "__main__":
    main()
