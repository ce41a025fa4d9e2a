"""Finding the final answer in a completion: the patterns every verifier reads answers with."""

from __future__ import annotations

import re

ANSWER_LINE = re.compile(r"^\s*\**answer\**\s*[:：]\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)


def answer_tags(text: str) -> list[str]:
    """The contents of every non-empty `<answer>...</answer>`, in order."""
    return [tag.strip() for tag in _ANSWER_TAG.findall(text) if tag.strip()]


def answer_tag(text: str) -> str | None:
    """The content of the last non-empty `<answer>...</answer>` (R1-style prompts; may span lines, e.g. a grid)."""
    tags = answer_tags(text)
    return tags[-1] if tags else None


def extract_answer(text: str) -> str | None:
    """The final answer in a completion.

    1. The last `<answer>...</answer>` tag, for prompts that ask for R1's format.
    2. Else the last line of the form `Answer: <answer>` (the marked place this project's prompt asks for).
    3. Otherwise, as a documented fallback, the last number in the text: a weak base
       model often states the right number in prose, and RL cannot start from a
       reward of zero.
    Returns None when none is present.
    """
    tagged = answer_tag(text)
    if tagged:
        return tagged
    marked = ANSWER_LINE.findall(text)
    if marked:
        answer = marked[-1].strip().strip("*").strip()
        return answer.rstrip(".") if answer else None
    numbers = NUMBER.findall(text)
    return numbers[-1].replace(",", "") if numbers else None


def squash(answer: str | None) -> str | None:
    """Whitespace-insensitive text of an answer, for majority votes: `1/2` and `0.5` still vote apart (documented)."""
    return "".join(answer.split()) if answer else None
