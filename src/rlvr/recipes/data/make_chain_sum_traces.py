"""Writes chain_sum_traces.jsonl: worked chain sums for the reasoning recipe's cold start.

Each row is `{"question": ..., "completion": "<think>\\n8 + 2 = 10\\n</think>\\nAnswer: 3"}`: a reasoning-gym
`chain_sum` question (its own generator, seeded apart from the recipe's training and held-out streams) and a
completion that adds the first k terms one at a time inside the thinking, then states the answer line: 50 sums of
each length from two to five terms. Half the traces answer at once (k = 0), the rest stop after a uniform number of
steps, from one to all of them: the cold start teaches the format and the step, but not how far to think. A trace
that stops early still states the right total, as a model answering at once would hope to. How long to think is
left for RL to find, from what pays. Run it again to regenerate the same file:
`python recipes/data/make_chain_sum_traces.py`.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import reasoning_gym

SEED = 4242  # neither the recipe's train_seed (17) nor its eval_seed (1000003)
PER_LENGTH = 50


def worked(expression: str) -> tuple[list[str], int]:
    """The running-total steps of `a + b - c ...`, and the result."""
    parts = expression.split()
    total = int(parts[0])
    steps = []
    for sign, term in zip(parts[1::2], parts[2::2]):
        new = total + int(term) if sign == "+" else total - int(term)
        steps.append(f"{total} {sign} {term} = {new}")
        total = new
    return steps, total


def main() -> None:
    rows = []
    rng = random.Random(SEED)
    for terms in (2, 3, 4, 5):
        dataset = reasoning_gym.create_dataset(
            "chain_sum", min_terms=terms, max_terms=terms, min_digits=1, max_digits=2, seed=SEED + terms, size=PER_LENGTH
        )
        for entry in dataset:
            steps, total = worked(entry["metadata"]["expression"])
            assert str(total) == entry["answer"], entry
            shown = steps[: rng.randint(1, len(steps))] if rng.random() < 0.5 else []
            thinking = "".join(f"{step}\n" for step in shown)
            rows.append({"question": entry["question"], "completion": f"<think>\n{thinking}</think>\nAnswer: {total}"})
    out = Path(__file__).with_name("chain_sum_traces.jsonl")
    out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    print(f"wrote {len(rows)} traces to {out}")


if __name__ == "__main__":
    main()
