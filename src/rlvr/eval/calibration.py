"""Does the model know when it is right? The calibration of the confidences it states (`env.confidence`).

Expected calibration error (Guo et al. 2017): the stated confidences binned into `bins` equal-width bins, and the
gap between each bin's accuracy and its mean confidence, weighted by its share of the answers. The Brier score is
the mean of (confidence - correct)^2. Both are over the answers that stated a confidence; `stated_rate` says how
many did, since a model that states none has nothing to be calibrated about.
"""

from __future__ import annotations

from collections.abc import Sequence

from rlvr.eval.sample import Sample

BINS = 10


def reliability(confidences: Sequence[float], correct: Sequence[bool], bins: int = BINS) -> list[dict]:
    """The non-empty bins, lowest first: their range, answers, mean confidence and accuracy. A confidence of
    exactly 1 falls in the top bin."""
    members: dict[int, list[int]] = {}
    for index, confidence in enumerate(confidences):
        members.setdefault(min(int(confidence * bins), bins - 1), []).append(index)
    rows = []
    for b, indices in sorted(members.items()):
        rows.append(
            {
                "range": [b / bins, (b + 1) / bins],
                "answers": len(indices),
                "confidence": sum(confidences[i] for i in indices) / len(indices),
                "accuracy": sum(correct[i] for i in indices) / len(indices),
            }
        )
    return rows


def expected_calibration_error(rows: Sequence[dict]) -> float:
    total = sum(row["answers"] for row in rows)
    return sum(row["answers"] / total * abs(row["accuracy"] - row["confidence"]) for row in rows) if total else 0.0


def calibration_summary(samples: Sequence[Sample], bins: int = BINS) -> dict:
    """Stated rate, ECE, Brier score, mean confidence against accuracy, and the reliability bins."""
    stated = [s for s in samples if s.confidence is not None]
    result: dict = {"stated_rate": len(stated) / len(samples) if samples else 0.0, "answers": len(stated)}
    if not stated:
        return result
    confidences = [float(s.confidence) for s in stated if s.confidence is not None]
    correct = [s.correct for s in stated]
    rows = reliability(confidences, correct, bins)
    return {
        **result,
        "ece": expected_calibration_error(rows),
        "brier": sum((c - float(y)) ** 2 for c, y in zip(confidences, correct)) / len(stated),
        "mean_confidence": sum(confidences) / len(stated),
        "accuracy": sum(correct) / len(stated),
        "bins": rows,
    }
