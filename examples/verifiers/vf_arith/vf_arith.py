"""vf-arith: adding two numbers, as an environment written for the `verifiers` package.

A self-contained example for rlvr's `env.name: verifiers` (its tests and README): the datasets are generated in
code, so nothing is downloaded, and the rubric is a correctness function (async, as many are) and a format
function, both closures over the parser as environments usually write them, plus a weight-0 metric read from
each row's `info`.
"""

from __future__ import annotations

import random
import re

import verifiers as vf
from datasets import Dataset

SYSTEM_PROMPT = "Add the numbers. End with a line 'Answer: <number>'."
FEW_SHOT = [
    {"role": "user", "content": "What is 3 + 4?"},
    {"role": "assistant", "content": "3 + 4 = 7\nAnswer: 7"},
]
ANSWER_LINE = re.compile(r"^Answer:\s*(-?\d+)\s*$", re.MULTILINE)


def final_answer(text: str) -> str | None:
    """The number on the last `Answer:` line, if there is one."""
    found = ANSWER_LINE.findall(text)
    return found[-1] if found else None


def problems(count: int, digits: int, seed: int, avoid: set[str] = frozenset()) -> list[dict]:
    rng = random.Random(seed)
    rows: list[dict] = []
    while len(rows) < count:
        a, b = rng.randrange(10**digits), rng.randrange(10**digits)
        question = f"What is {a} + {b}?"
        if question not in avoid:
            rows.append({"question": question, "answer": str(a + b), "info": {"terms": [a, b]}})
    return rows


def load_environment(num_train: int = 200, num_eval: int = 50, digits: int = 2, seed: int = 0) -> vf.Environment:
    held_out = problems(num_eval, digits, seed + 1)
    train = problems(num_train, digits, seed, avoid={row["question"] for row in held_out})
    parser = vf.Parser(extract_fn=final_answer)

    async def correct_answer(completion, answer, **kwargs) -> float:
        return float(parser.parse_answer(completion) == answer)

    def answer_format(completion, **kwargs) -> float:
        return float(parser.parse_answer(completion) is not None)

    def carries(info) -> float:
        a, b = info["terms"]
        return float((a % 10) + (b % 10) >= 10)

    rubric = vf.Rubric(funcs=[correct_answer, answer_format], weights=[1.0, 0.2], parser=parser)
    rubric.add_metric(carries)
    return vf.SingleTurnEnv(
        dataset=Dataset.from_list(train),
        eval_dataset=Dataset.from_list(held_out),
        system_prompt=SYSTEM_PROMPT,
        few_shot=FEW_SHOT,
        parser=parser,
        rubric=rubric,
    )
