"""The judge's generation backend (`rlvr.rewards.judge`) on a rollout engine: the run's own (`judge.model:
policy`, the model being trained as it is now), or a transformers engine on a model folder (a run, a checkpoint, any
Hugging Face folder), loaded at the first answer it grades.

Engines have no deadline of their own, so the backend generates with `generate_streaming`, whose callback hears
each step's ids, and stops the call by raising from it once the deadline has passed: both engines then leave
nothing behind (the transformers engine drops the batch, vLLM aborts its requests). A reply that had already
ended its turn is kept; the others were cut at the deadline.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from rlvr.config import RunConfig
from rlvr.hardware import resolve_device
from rlvr.models import load_reference, load_tokenizer, resolve_model_path
from rlvr.rewards.judge import Judge, Reply
from rlvr.rollout.base import RolloutEngine, SamplingParams
from rlvr.rollout.hf import TransformersEngine
from rlvr.rollout.stop_tokens import stop_token_ids

POLICY = "policy"
# A training run's verdicts, in its folder: a resumed run grades no answer twice.
JUDGE_CACHE = "judge_cache.jsonl"


class _PastDeadline(BaseException):
    """Raised from an engine's token callback to stop generating. Not an Exception: an engine wraps those as its
    own failures (EngineError), and this one is not a failure (vLLM still aborts its requests on it)."""


class EngineBackend:
    """A `JudgeBackend` on a rollout engine: each prompt one user message in the tokenizer's chat template, greedy."""

    def __init__(self, identity: str, load: Callable[[], tuple[RolloutEngine, PreTrainedTokenizerBase]]) -> None:
        self.identity = identity
        self._load = load

    @cached_property
    def _loaded(self) -> tuple[RolloutEngine, PreTrainedTokenizerBase, set[int]]:
        engine, tokenizer = self._load()
        model = getattr(engine, "model", None)  # the ids that end a turn, read as the tool loop reads them
        return engine, tokenizer, stop_token_ids(model, tokenizer) if model is not None else {tokenizer.eos_token_id}

    def generate(self, prompts: Sequence[str], max_new_tokens: int, deadline: float) -> list[Reply]:
        engine, tokenizer, stops = self._loaded
        ids = [
            tokenizer.encode(
                tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True),
                add_special_tokens=False,
            )
            for p in prompts
        ]
        told: list[list[int]] = [[] for _ in prompts]

        def on_tokens(row: int, new: list[int]) -> None:
            told[row] += new
            if time.monotonic() > deadline:
                raise _PastDeadline

        try:
            episodes = engine.generate_streaming(ids, SamplingParams(max_new_tokens=max_new_tokens, greedy=True), on_tokens)
        except _PastDeadline:
            return [
                Reply(tokenizer.decode(row, skip_special_tokens=True), "end" if row and row[-1] in stops else "deadline")
                for row in told
            ]
        return [Reply(episode.text, "length" if episode.truncated else "end") for episode in episodes]


def _folder_identity(path: Path) -> str:
    # The folder and when its files last changed: a model saved again over the same folder is another judge.
    return f"{path}@{max((f.stat().st_mtime_ns for f in path.iterdir() if f.is_file()), default=0)}"


def make_judge(
    config: RunConfig, policy: RolloutEngine, tokenizer: PreTrainedTokenizerBase, cache_file: Path | None = None
) -> Judge:
    """The judge `config.judge` describes, generating with `policy` (the run's engine and tokenizer) for `model:
    policy`; a model folder is resolved now, so a wrong path fails at start-up, and loaded (on `train.device`, not
    trained) at the first answer it grades. `cache_file` keeps the verdicts where the cache is on."""
    settings = config.judge
    if settings.model == POLICY:
        backend = EngineBackend(f"{POLICY}:{config.model.path}", lambda: (policy, tokenizer))
    else:
        path = resolve_model_path(settings.model)

        def load() -> tuple[RolloutEngine, PreTrainedTokenizerBase]:
            model = load_reference(str(path)).to(resolve_device(config.train.device))
            judge_tokenizer = load_tokenizer(str(path))
            return TransformersEngine(model, judge_tokenizer, settings.batch_size, shares_weights=False), judge_tokenizer

        backend = EngineBackend(_folder_identity(path), load)
    # A judge that trains along with the policy changes its mind: its verdicts are kept only when asked.
    cache = settings.cache if settings.cache is not None else settings.model != POLICY
    timeout = settings.timeout_seconds or config.scoring.timeout_seconds
    return Judge(
        backend, settings.prompt, settings.max_new_tokens, settings.batch_size, timeout, settings.check_against, cache, cache_file
    )
