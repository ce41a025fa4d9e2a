"""`rlvr eval --compare A B`: is B really better than A? A paired comparison on the questions both runs answered.

Pairing matters: on the same questions, most of the noise (which questions are hard) cancels, so a paired
interval is much tighter than two overlapping per-run intervals would suggest.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from rlvr.errors import ConfigError
from rlvr.eval.estimators import paired_difference
from rlvr.eval.sample import Sample


def per_question_accuracy(run: Path) -> dict[str, float]:
    """Question id -> mean correctness over its samples, of an evaluation folder (`rlvr eval --out`), a run folder
    (its evaluation after training) or a pipeline's folder (the evaluation after its last training stage)."""
    return sample_accuracy(*evaluation_files(run))


def evaluation_files(folder: Path) -> tuple[Path, Path]:
    """The summary and the samples of the evaluation a folder holds (see `per_question_accuracy`)."""
    pipeline = folder / "pipeline.json"
    if pipeline.exists():
        trained = [Path(stage["folder"]) for stage in json.loads(pipeline.read_text())["stages"] if stage.get("accuracy")]
        if not trained:
            raise ConfigError(f"{folder}: the pipeline has no evaluated training stage yet")
        folder = trained[-1]
    for summary, samples in (("summary.json", "samples.jsonl"), ("eval_after.json", "eval_after.samples.jsonl")):
        if (folder / summary).exists() and (folder / samples).exists():
            return folder / summary, folder / samples
    raise ConfigError(
        f"{folder}: not an evaluation folder (summary.json and samples.jsonl from rlvr eval --out), nor a run or pipeline "
        "evaluated after training (eval_after.json and eval_after.samples.jsonl)"
    )


def sample_accuracy(summary_path: Path, samples_path: Path) -> dict[str, float]:
    """Question id -> mean correctness over its samples (the headline condition: the largest budget or the last
    stated effort, if any), from
    a summary and its samples: an evaluation folder's, or a run's `eval_after.json` and `eval_after.samples.jsonl`."""
    summary = json.loads(summary_path.read_text())
    samples = [Sample.from_dict(json.loads(line)) for line in samples_path.read_text().splitlines()]
    return question_accuracy(samples, summary.get("budget"), summary.get("effort"))


def question_accuracy(samples: Iterable[Sample], budget: int | None = None, effort: str | None = None) -> dict[str, float]:
    """Question id -> mean correctness over its samples under `budget` and the stated `effort` (None: the plain run)."""
    correct: dict[str, list[bool]] = defaultdict(list)
    for sample in samples:
        if sample.budget == budget and sample.effort == effort:
            correct[sample.id].append(sample.correct)
    return {qid: sum(values) / len(values) for qid, values in correct.items()}


def compare_runs(a: Path, b: Path, resamples: int = 10_000, seed: int = 0) -> dict:
    """B minus A in avg@n on the shared questions, with a paired bootstrap 95% interval and p-value."""
    paired = paired_accuracy(per_question_accuracy(a), per_question_accuracy(b), (str(a), str(b)), resamples, seed)
    return {"a": str(a), "b": str(b), **paired}


def paired_accuracy(
    first: dict[str, float], second: dict[str, float], names: tuple[str, str], resamples: int = 10_000, seed: int = 0
) -> dict:
    """Second minus first in per-question accuracy on the questions both have, paired (interval and p-value)."""
    shared = sorted(set(first) & set(second))
    if not shared:
        raise ConfigError(f"{names[0]} and {names[1]} share no questions: compare runs on the same data")
    result = paired_difference([second[q] for q in shared], [first[q] for q in shared], resamples=resamples, seed=seed)
    return {
        "questions": len(shared),
        "only_in_a": len(set(first) - set(second)),
        "only_in_b": len(set(second) - set(first)),
        "a_avg": sum(first[q] for q in shared) / len(shared),
        "b_avg": sum(second[q] for q in shared) / len(shared),
        **result,
    }
