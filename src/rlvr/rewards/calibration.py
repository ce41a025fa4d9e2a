"""A stated confidence after the answer, and the Brier-score reward that teaches it to mean something.

With `env.confidence`, the prompt asks for a last line `Confidence: <0 to 1>` (a percentage reads too), the
probability the model gives its own answer. The rubric splits that line off before any verifier or shaping term
reads the completion (an answer extractor's last-number fallback would otherwise read the confidence as the
answer), and records it. `env.brier_weight` adds RLCR's calibration term (Damani et al. 2025, "Beyond Binary
Rewards"): minus the Brier score, -(confidence - correct)^2, which is 0 for a sure right answer and -1 for a sure
wrong one; a completion that states no confidence gets -1, the worst a stated one can get, so stating always pays.
"""

from __future__ import annotations

import re

CONFIDENCE = "confidence"  # the Score.info key of a stated confidence
CONFIDENCE_INSTRUCTION = "Then add a last line 'Confidence: <p>', the probability (0 to 1) that your answer is right."
_LINE = re.compile(r"\**confidence\**\s*[:=]\s*\**\s*(\d+(?:\.\d+)?|\.\d+)\s*(%?)\s*\**\.?", re.IGNORECASE)


def split_confidence(text: str) -> tuple[str, float | None]:
    """(the completion without its last line, the confidence it states) when the last non-empty line is a
    `Confidence:` line; a value above 1 (or with `%`) is a percentage. A confidence line whose value is not a
    probability (150%) is still split off, with None. Any other text comes back as it is, with None."""
    body, _, last = text.rstrip().rpartition("\n")
    match = _LINE.fullmatch(last.strip())
    if match is None:
        return text, None
    value = float(match[1])
    if match[2] or value > 1:
        value /= 100
    return body, value if 0.0 <= value <= 1.0 else None


def brier_reward(confidence: float | None, correct: bool) -> float:
    """Minus the Brier score of one answer; -1 (the worst) when no confidence was stated."""
    if confidence is None:
        return -1.0
    return -((confidence - float(correct)) ** 2)
