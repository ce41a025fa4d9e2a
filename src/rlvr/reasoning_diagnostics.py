"""What a reasoning model's text shows about how it reasons: the diagnostics of R1-Zero's story, per training step and
per evaluation.

- **Reflection rate**: the share of responses that check themselves ("wait", "let me verify", ...), the behaviour
  R1-Zero reported emerging under RL. A phrase counts as whole words, any case; the list is `diagnostics.
  reflection_phrases`. In an evaluation under budget forcing with `min_thinking`, the "Wait," the evaluator writes
  counts too: it is in the text the model continued from.
- **Language-mixing rate**: the share of responses whose letters come from more than one script (Latin and CJK,
  say), the failure R1 added a language-consistency reward against. A script counts from `min_script_letters`
  letters on, so a lone π in a formula does not; Han, kana and Hangul are one family (a Japanese answer is not mixed).
- **Thinking and answer tokens**: the mean tokens in each part, split at the first `</think>`.

Leaf module (pydantic and the standard library): the config, the trainer and evaluation all import it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from functools import lru_cache

from pydantic import BaseModel, ConfigDict, Field

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
REFLECTION_PHRASES = (
    "wait",
    "hmm",
    "let me check",
    "let me verify",
    "let me double-check",
    "double-check",
    "double check",
    "check again",
    "re-check",
    "recheck",
    "verify",
    "on second thought",
    "let me reconsider",
    "let me re-examine",
    "that's not right",
    "that is not right",
    "i made a mistake",
)
# Scripts of one writing system, counted as one: Japanese mixes Han and kana, Korean may mix Hangul and Han.
_FAMILIES = {"CJK": "CJK", "HIRAGANA": "CJK", "KATAKANA": "CJK", "HANGUL": "CJK", "HALFWIDTH": "CJK", "FULLWIDTH": "CJK"}


class DiagnosticsConfig(BaseModel):
    """`diagnostics:` in a recipe: what the reasoning diagnostics look for."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reflection_phrases: tuple[str, ...] = Field(
        REFLECTION_PHRASES, min_length=1, description="self-checking phrases (whole words, any case): the reflection rate"
    )
    min_script_letters: int = Field(
        2, ge=1, description="letters of a script a response needs before that script counts towards language mixing"
    )


def split_thinking(text: str) -> tuple[str, str]:
    """(thinking, answer) of a finished completion, both stripped.

    The split is at the first `THINK_CLOSE`; a leading `THINK_OPEN` is dropped (our completions start inside the
    thinking, but a full transcript may carry it). With no close, text that opens a thinking block is all thinking,
    and any other text (reasoning off) is all answer.
    """
    head, close, tail = text.partition(THINK_CLOSE)
    head = head.lstrip()
    opened = head.startswith(THINK_OPEN)
    if opened:
        head = head[len(THINK_OPEN) :]
    if close or opened:
        return head.strip(), tail.strip()
    return "", text.strip()


@lru_cache(maxsize=64)
def _phrase_pattern(phrases: tuple[str, ...]) -> re.Pattern[str]:
    # Whole words: "wait" in "Wait, 3 + 4 = 7" but not in "awaited"; longest first, so "let me check" is one match.
    alternatives = "|".join(re.escape(p) for p in sorted(phrases, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


def reflects(text: str, phrases: Sequence[str] = REFLECTION_PHRASES) -> bool:
    """Whether the text holds a self-checking phrase."""
    return _phrase_pattern(tuple(phrases)).search(text) is not None


def _script(char: str) -> str | None:
    """The script family of a letter (LATIN, CYRILLIC, CJK, ...); None for anything that is not a letter."""
    if not unicodedata.category(char).startswith("L"):
        return None
    name = unicodedata.name(char, "")
    first = name.split(" ", 1)[0]
    return _FAMILIES.get(first, first) or None


def scripts(text: str, min_letters: int = 2) -> set[str]:
    """The scripts the text's letters come from, each with at least `min_letters` letters."""
    counts: dict[str, int] = {}
    for char in text:
        if (script := _script(char)) is not None:
            counts[script] = counts.get(script, 0) + 1
    return {script for script, count in counts.items() if count >= min_letters}


def mixes_languages(text: str, min_letters: int = 2) -> bool:
    """Whether the text writes in more than one script."""
    return len(scripts(text, min_letters)) > 1


def reasoning_rates(texts: Sequence[str], config: DiagnosticsConfig) -> dict[str, float]:
    """The shares of the (non-empty batch of) completions that reflect and that mix languages."""
    return {
        "reflection_rate": sum(reflects(text, config.reflection_phrases) for text in texts) / len(texts),
        "language_mixing_rate": sum(mixes_languages(text, config.min_script_letters) for text in texts) / len(texts),
    }


def reasoning_metrics(
    texts: Sequence[str], count_tokens: Callable[[str], int], config: DiagnosticsConfig = DiagnosticsConfig()
) -> dict[str, float]:
    """The diagnostics of a training step's completions, as metrics-row keys: the rates over responses, the token
    counts means over them (`count_tokens`: the tokenizer's count of a text)."""
    if not texts:
        return {}
    parts = [split_thinking(text) for text in texts]
    return {
        **{f"reasoning/{key}": value for key, value in reasoning_rates(texts, config).items()},
        "reasoning/thinking_tokens": sum(count_tokens(thinking) for thinking, _ in parts) / len(texts),
        "reasoning/answer_tokens": sum(count_tokens(answer) for _, answer in parts) / len(texts),
    }
