"""Generating an evaluation's samples: n per question, in seeded engine calls, with progress between them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from transformers import PreTrainedTokenizerBase

from rlvr.envs import Environment
from rlvr.eval.sample import Sample
from rlvr.eval.settings import EvalSettings
from rlvr.eval.thinking import THINKING_SYSTEM_PROMPT, generate_with_budget
from rlvr.reasoning_diagnostics import split_thinking
from rlvr.rollout import EngineError
from rlvr.rollout.base import RolloutEngine
from rlvr.rollout.tool_loop import ToolLoop
from rlvr.seeds import derive_seed
from rlvr.tools.protocol import ChatFormat
from rlvr.types import Problem

# Samples per engine call: progress is reported between calls, and each call gets its own seed.
GENERATE_CHUNK = 64
Progress = Callable[[int, int, int], None]  # (samples just finished, samples in all, their tokens)


def no_progress(done: int, total: int, tokens: int) -> None:
    pass


def generate(
    engine: RolloutEngine | ToolLoop,
    env: Environment,
    tokenizer: PreTrainedTokenizerBase,
    problems: Sequence[Problem],
    settings: EvalSettings,
    budget: int | None,
    chat: ChatFormat,
    progress: Progress = no_progress,
    total: int = 0,
) -> list[Sample]:
    """`settings.n` samples per problem, problem-major, not yet verified. An engine failure carries the samples
    generated before it (`EngineError.partial`), for the caller to keep."""
    repeated = [p for p in problems for _ in range(settings.n)]
    size = max(1, GENERATE_CHUNK // settings.n) * settings.n  # a question's n samples stay in one call
    samples: list[Sample] = []
    for index, start in enumerate(range(0, len(repeated), size)):
        seed = derive_seed(settings.seed, index)
        try:
            chunk = _generate_chunk(engine, env, tokenizer, repeated[start : start + size], settings, budget, seed, chat)
        except EngineError as error:
            error.partial = [sample.to_dict(verified=False) for sample in samples]
            raise
        samples += chunk
        progress(len(chunk), total, sum(s.tokens for s in chunk))
    return samples


def _count(tokenizer: PreTrainedTokenizerBase, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False).input_ids) if text else 0


def _generate_chunk(
    engine: RolloutEngine | ToolLoop,
    env: Environment,
    tokenizer: PreTrainedTokenizerBase,
    repeated: list[Problem],
    settings: EvalSettings,
    budget: int | None,
    seed: int,
    chat: ChatFormat,
) -> list[Sample]:
    if not settings.budgets and settings.reasoning:  # plain generation: the environment's own prompt
        prompts = [chat.prompt_ids(env.messages(p)) for p in repeated]
        episodes = engine.generate(prompts, settings.sampling_params(settings.max_new_tokens, seed))
        samples = []
        for prompt, e in zip(prompts, episodes):
            # With tools, the model's own tokens only (tool results are not its compute), and the whole exchange.
            model_logprobs = [lp for lp, m in zip(e.logprobs, e.loss_mask) if m]
            # Thinking as training's diagnostics count it (the text inside the tags); the rest of the tokens are answer.
            thinking = 0 if "tools" in e.meta else min(e.generated_tokens, _count(tokenizer, split_thinking(e.text)[0]))
            answer = e.generated_tokens - thinking
            sample = Sample.generated(tokenizer.decode(prompt), e.text, thinking, answer, False, e.truncated, model_logprobs)
            if "tools" in e.meta:
                sample.tools, sample.messages = e.meta["tools"], e.meta["messages"]
            samples.append(sample)
        return samples
    plain = ChatFormat(tokenizer)  # no tools: budget forcing runs without them
    prompts = [plain.prompt_ids(env.messages(replace(p, system_prompt=THINKING_SYSTEM_PROMPT))) for p in repeated]
    sampling = settings.sampling_params(budget or settings.max_new_tokens, seed)
    results = generate_with_budget(
        engine, tokenizer, prompts, sampling, budget, settings.answer_tokens, settings.min_thinking, reasoning=settings.reasoning
    )
    # ThinkingResult.logprobs holds the model's own tokens only (the forced cues have none).
    return [
        Sample.generated(
            tokenizer.decode(r.prompt_ids), r.text, r.thinking_tokens, r.answer_tokens, r.forced, r.truncated, r.logprobs
        )
        for r in results
    ]
