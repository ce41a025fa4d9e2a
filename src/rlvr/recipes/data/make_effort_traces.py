"""Writes effort_traces.jsonl: worked three-term chain sums at every effort, for the length-control recipe's cold start.

Each row is a chat trace (`messages`): the recipe's system prompt followed by the effort line training states
(`rlvr.length_control.effort_line`), a reasoning-gym `chain_sum` question (seeded apart from the recipe's streams),
and an answer written at that effort:

- off: no thinking, the answer line at once;
- low: the whole sum in one line inside the thinking;
- medium: one step per term;
- high: the steps, then a check that undoes them.

The recipe's efforts (`length_control.efforts`) are these traces' mean thinking tokens, printed when it runs:
regenerate the file after changing the recipe's system prompt or levels, with
`python recipes/data/make_effort_traces.py`.
"""

from __future__ import annotations

import json
from pathlib import Path

import reasoning_gym
import yaml

from rlvr.length_control import OFF, effort_line, stated
from rlvr.models import load_tokenizer
from rlvr.types import Problem

HERE = Path(__file__).parent
RECIPE = HERE.parent / "length-control.yaml"
SEED = 5151  # neither the recipe's train_seed (17) nor its eval_seed (1000003)
PER_EFFORT = 100


def steps(expression: str) -> tuple[list[str], int]:
    """The running-total steps of `a + b - c`, and the result."""
    parts = expression.split()
    total, lines = int(parts[0]), []
    for sign, term in zip(parts[1::2], parts[2::2]):
        new = total + int(term) if sign == "+" else total - int(term)
        lines.append(f"{total} {sign} {term} = {new}")
        total = new
    return lines, total


def check(expression: str, total: int) -> str:
    """Undo the terms from the result back to the first one."""
    parts = expression.split()
    value, undone = total, []
    for sign, term in reversed(list(zip(parts[1::2], parts[2::2]))):
        back = value - int(term) if sign == "+" else value + int(term)
        undone.append(f"{value} {'-' if sign == '+' else '+'} {term} = {back}")
        value = back
    return "Check: " + ", ".join(undone) + f". {value} is the first term, so {total} is right."


def thinking(level: str, expression: str) -> tuple[str | None, int]:
    lines, total = steps(expression)
    if level == OFF:
        return None, total
    if level == "low":
        return f"{expression} = {total}", total
    if level == "medium":
        return "\n".join(lines), total
    return "\n".join([*lines, check(expression, total)]), total


def main() -> None:
    recipe = yaml.safe_load(RECIPE.read_text())
    system, efforts = recipe["env"]["system_prompt"], recipe["length_control"]["efforts"]
    tokenizer = load_tokenizer(recipe["model"]["path"])
    dataset = reasoning_gym.create_dataset(
        "chain_sum", min_terms=3, max_terms=3, min_digits=1, max_digits=2, seed=SEED, size=PER_EFFORT * (len(efforts) + 1)
    )
    rows, spent = [], {}
    for index, entry in enumerate(dataset):
        level = [OFF, *efforts][index % (len(efforts) + 1)]
        thought, total = thinking(level, entry["metadata"]["expression"])
        assert str(total) == entry["answer"], entry
        problem = stated(Problem(entry["question"], entry["answer"]), level, efforts.get(level, 0))
        answer = f"Answer: {total}" if thought is None else f"<think>\n{thought}\n</think>\nAnswer: {total}"
        messages = [
            {"role": "system", "content": f"{system} {effort_line(problem)}"},
            {"role": "user", "content": entry["question"]},
            {"role": "assistant", "content": answer},
        ]
        rows.append({"messages": messages})
        if thought is not None:
            spent.setdefault(level, []).append(len(tokenizer(thought, add_special_tokens=False).input_ids))
    out = HERE / "effort_traces.jsonl"
    out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    means = {level: round(sum(counts) / len(counts), 1) for level, counts in spent.items()}
    print(f"wrote {len(rows)} traces to {out}; mean thinking tokens per effort: {means} (the recipe says {efforts})")


if __name__ == "__main__":
    main()
