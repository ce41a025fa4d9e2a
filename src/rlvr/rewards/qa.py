"""Short-answer QA rewards: SQuAD-style exact match and token F1 against one or more gold aliases."""

from __future__ import annotations

import re
import string
from collections import Counter

from rlvr.rewards.answers import ANSWER_LINE, answer_tag, extract_answer
from rlvr.rewards.base import register_verifier
from rlvr.types import Problem

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_text(text: str) -> str:
    """SQuAD's normalisation: lowercase, drop punctuation, drop the articles a/an/the, collapse whitespace."""
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_text(prediction) == normalize_text(gold))


def token_f1(prediction: str, gold: str) -> float:
    """Harmonic mean of token precision and recall after normalisation (tokens counted with multiplicity)."""
    pred_tokens = normalize_text(prediction).split()
    gold_tokens = normalize_text(gold).split()
    if not pred_tokens or not gold_tokens:
        # SQuAD's convention: two empty answers agree, an empty one against a non-empty one scores 0.
        return float(pred_tokens == gold_tokens)
    common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if common == 0:
        return 0.0
    precision = common / len(pred_tokens)
    recall = common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def golds(problem: Problem) -> list[str]:
    """The reference and any aliases in `problem.meta["aliases"]`; a prediction is scored against the best one."""
    aliases = problem.meta.get("aliases") or []
    return [problem.answer, *(str(a) for a in aliases)]


def qa_prediction(text: str) -> str:
    """The `<answer>` tag or the `Answer: ...` line, else the last non-empty line.

    `extract_answer` is used only when a marked answer exists: its last-number fallback suits arithmetic, but for
    a text answer it would turn "Paris, since 1889" into "1889".
    """
    if answer_tag(text) or ANSWER_LINE.search(text):
        return extract_answer(text) or ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def qa_vote(text: str) -> str | None:
    """A short answer votes by its SQuAD-normalised text."""
    return normalize_text(qa_prediction(text)) or None


@register_verifier("exact_match", vote=qa_vote)
def exact_match_reward(text: str, problem: Problem) -> float:
    prediction = qa_prediction(text)
    return max(exact_match(prediction, gold) for gold in golds(problem))


@register_verifier("f1", vote=qa_vote)
def f1_reward(text: str, problem: Problem) -> float:
    prediction = qa_prediction(text)
    return max(token_f1(prediction, gold) for gold in golds(problem))
