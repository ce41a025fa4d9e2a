"""Writes word_problems.jsonl: one-step arithmetic word problems in GSM8K's format.

Each row is `{"question": ..., "answer": "<worked solution with <<a+b=c>> calculator marks>\\n#### c"}`, the
layout of GSM8K's own files, so the file stands in for a dataset a user brings that was not written for rlvr.
Run it again to regenerate the same file: `python recipes/data/make_word_problems.py`.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

NAMES = ["Ava", "Ben", "Chloe", "Dev", "Emma", "Finn", "Grace", "Hugo", "Isla", "Jack", "Kai", "Lena", "Maya", "Noah"]
ITEMS = ["apples", "marbles", "stickers", "books", "pencils", "cookies", "shells", "stamps", "cards", "coins"]


def add(rng: random.Random) -> tuple[str, str]:
    name, item, a, b = rng.choice(NAMES), rng.choice(ITEMS), rng.randint(2, 40), rng.randint(2, 40)
    question = f"{name} has {a} {item}. {name} gets {b} more. How many {item} does {name} have now?"
    return question, f"{name} has {a} + {b} = <<{a}+{b}={a + b}>>{a + b} {item}.\n#### {a + b}"


def subtract(rng: random.Random) -> tuple[str, str]:
    name, friend, item = *rng.sample(NAMES, 2), rng.choice(ITEMS)
    a = rng.randint(10, 60)
    b = rng.randint(1, a - 1)
    question = f"{name} had {a} {item} and gave {b} of them to {friend}. How many {item} does {name} have left?"
    return question, f"{name} has {a} - {b} = <<{a}-{b}={a - b}>>{a - b} {item} left.\n#### {a - b}"


def multiply(rng: random.Random) -> tuple[str, str]:
    item, a, b = rng.choice(ITEMS), rng.randint(2, 12), rng.randint(2, 9)
    question = f"A box holds {a} {item}. How many {item} are in {b} boxes?"
    return question, f"{b} boxes hold {a} * {b} = <<{a}*{b}={a * b}>>{a * b} {item}.\n#### {a * b}"


def divide(rng: random.Random) -> tuple[str, str]:
    item, each, children = rng.choice(ITEMS), rng.randint(2, 10), rng.randint(2, 6)
    total = each * children
    question = f"{total} {item} are shared equally among {children} children. How many {item} does each child get?"
    return question, f"Each child gets {total} / {children} = <<{total}/{children}={each}>>{each} {item}.\n#### {each}"


def main(count: int = 600, seed: int = 2024) -> None:
    rng = random.Random(seed)
    makers = [add, subtract, multiply, divide]
    rows, seen = [], set()
    while len(rows) < count:
        question, answer = rng.choice(makers)(rng)
        if question not in seen:
            seen.add(question)
            rows.append({"question": question, "answer": answer})
    path = Path(__file__).with_name("word_problems.jsonl")
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


if __name__ == "__main__":
    main()
