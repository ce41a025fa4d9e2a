"""One answer to one held-out question: what the model wrote, what it cost, and how it was judged.

`samples.jsonl` holds one `Sample` per line (`to_dict`), so any number in a summary can be recomputed from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

# Written only when present, so files without tools or scoring errors stay as short as they were.
_OPTIONAL = {"tools", "messages", "score_error", "probes", "hacks", "judged", "difficulty", "confidence", "effort"}
# What verification adds; a sample kept from a run that failed before verifying it has none of these.
_VERIFICATION = {
    *("id", "subset", "question", "reference", "sample", "correct", "reward", "extracted", "score_error", "budget"),
    *("probes", "hacks", "judged", "difficulty", "confidence", "effort"),
}


@dataclass
class Sample:
    # Generation (eval.generation)
    prompt: str
    completion: str
    thinking_tokens: int
    answer_tokens: int
    forced: bool  # budget forcing closed the thinking part
    truncated: bool
    # The practical best-of-N selector: the model's own confidence in what it generated (its tokens only).
    mean_logprob: float
    tools: dict[str, Any] | None = None  # with tools: the episode's tool statistics ...
    messages: list[dict[str, Any]] | None = None  # ... and the whole exchange
    # Verification (eval.runner)
    id: str = ""  # the question's id (eval.provenance.question_id), the same in every run
    subset: str = ""
    question: str = ""
    reference: str = ""
    sample: int = 0  # which of the question's n samples
    correct: bool = False
    reward: float = 0.0
    extracted: str | None = None  # the answer it votes for in maj@k (None: none, or a verifier without votes)
    score_error: str | None = None
    budget: int | None = None  # the thinking budget it was generated under
    probes: list[str] | None = None  # the reward-hacking probes that checked it ...
    hacks: dict[str, str] | None = None  # ... and those that flagged it, with their evidence
    # A judged answer (verifier: judge): the judge's verdict and, with judge.check_against, the hard verifier's.
    judged: dict[str, bool] | None = None
    difficulty: float | None = None  # the question's difficulty, when its source gives one
    confidence: float | None = None  # the confidence it stated (env.confidence), when it stated one
    effort: str | None = None  # the effort its prompt stated (a model trained with length control)

    @property
    def tokens(self) -> int:
        return self.thinking_tokens + self.answer_tokens

    @staticmethod
    def generated(
        prompt: str, text: str, thinking: int, answer: int, forced: bool, truncated: bool, logprobs: Sequence[float]
    ) -> Sample:
        mean = float(np.mean(logprobs)) if len(logprobs) else 0.0
        return Sample(prompt, text, thinking, answer, forced, truncated, mean)

    def to_dict(self, verified: bool = True) -> dict[str, Any]:
        """The samples.jsonl line, `tokens` included for readers of the file; without `verified`, what generation
        alone knows (samples kept from a run that failed before verifying them)."""
        dropped = _VERIFICATION if not verified else set()
        row = {key: value for key, value in asdict(self).items() if key not in dropped}
        row = {key: value for key, value in row.items() if not (key in _OPTIONAL and value is None)}
        return {"prompt": row.pop("prompt"), "completion": row.pop("completion"), "tokens": self.tokens, **row}

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> Sample:
        """A samples.jsonl line read back (its derived `tokens` is recomputed, not stored)."""
        names = {field.name for field in fields(cls)}
        return cls(**{key: value for key, value in row.items() if key in names})
