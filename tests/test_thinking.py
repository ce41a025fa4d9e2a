"""Thinking control: budget forcing, continuation cues and reasoning off, on real models through the real engine."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from rlvr.eval.thinking import (
    EFFORT_BUDGETS,
    THINKING_SYSTEM_PROMPT,
    ThinkingResult,
    generate_with_budget,
    resolve_budget,
    split_thinking,
)
from rlvr.rewards import extract_answer
from rlvr.rollout import RolloutEngine, SamplingParams, TransformersEngine
from rlvr.rollout.budget_forcing import CONTINUE_CUE, FORCE_CLOSE_CUE, NO_THINKING_BLOCK, THINK_OPEN, find_close
from rlvr.types import Episode

GREEDY = SamplingParams(greedy=True)


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


def render(tokenizer, questions: Sequence[str]) -> list[list[int]]:
    return [
        tokenizer.apply_chat_template(
            [{"role": "system", "content": THINKING_SYSTEM_PROMPT}, {"role": "user", "content": q}],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=False,
        )
        for q in questions
    ]


class Recorder(RolloutEngine):
    """The real engine, with every call's prompts, token limit and episodes kept for inspection."""

    def __init__(self, engine: RolloutEngine) -> None:
        self.engine = engine
        self.calls: list[tuple[list[list[int]], int, list[Episode]]] = []

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingParams) -> list[Episode]:
        episodes = self.engine.generate(prompts, sampling)
        self.calls.append(([list(p) for p in prompts], sampling.max_new_tokens, episodes))
        return episodes

    def update_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        self.engine.update_weights(weights)


def check_invariants(result: ThinkingResult, tokenizer, budget: int, answer_tokens: int) -> None:
    """What holds for every result, whatever the model wrote."""
    mask, ids = result.generated_mask, result.completion_ids
    assert len(mask) == len(ids)
    assert len(result.logprobs) == sum(mask) == result.thinking_tokens + result.answer_tokens
    assert all(lp <= 0.0 for lp in result.logprobs)
    assert result.thinking_tokens <= budget
    assert result.answer_tokens <= max(answer_tokens, budget)
    # The forced tokens are exactly the cues, in order: one "Wait," per extension, then the close if forced.
    close, wait = encode(tokenizer, FORCE_CLOSE_CUE), encode(tokenizer, CONTINUE_CUE)
    assert [t for t, m in zip(ids, mask) if m == 0] == wait * result.extensions + (close if result.forced else [])
    if result.forced:
        at = len(ids) - mask[::-1].index(0) - len(close)  # where the close cue starts
        assert ids[at : at + len(close)] == close and mask[at : at + len(close)] == [0] * len(close)
        assert sum(mask[:at]) == result.thinking_tokens and sum(mask[at:]) == result.answer_tokens
        assert result.answer.startswith("Answer:")
    if result.forced and not result.stopped_in_thinking:
        assert result.thinking_tokens == budget  # the budget ran out, to the token
    assert result.text == tokenizer.decode(ids, skip_special_tokens=True)


def check_logprobs_by_teacher_forcing(model, result: ThinkingResult) -> None:
    """Scoring prompt + completion in one pass gives back each model token (greedy: the argmax) and its
    log-prob, so every engine call saw exactly the ids kept so far, cues included."""
    sequence = torch.tensor([result.prompt_ids + result.completion_ids])
    with torch.no_grad():
        logprobs = model(input_ids=sequence).logits[0].float().log_softmax(-1)
    start = len(result.prompt_ids)
    positions = [start + i for i, m in enumerate(result.generated_mask) if m]
    tokens = sequence[0, positions]
    predicted = logprobs[[p - 1 for p in positions]]
    assert tokens.tolist() == predicted.argmax(-1).tolist()
    chosen = predicted.gather(-1, tokens[:, None]).squeeze(-1)
    torch.testing.assert_close(chosen, torch.tensor(result.logprobs), atol=1e-4, rtol=0)


# --- budget and effort -------------------------------------------------------------------------------------------


def test_resolve_budget():
    assert resolve_budget(100, None) == 100
    assert resolve_budget(None, "medium") == EFFORT_BUDGETS["medium"] == 256
    assert resolve_budget(None, None) is None
    with pytest.raises(ValueError, match="not both"):
        resolve_budget(64, "low")
    with pytest.raises(ValueError, match="unknown effort 'extreme'.*low, medium, high"):
        resolve_budget(None, "extreme")
    with pytest.raises(ValueError, match="at least 1"):
        resolve_budget(0, None)


# --- close detection on real token ids ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pieces, span",
    [
        (["abc</think>x"], (1, 4)),  # abc | </ think > | x
        (["ok.</think>\n\nAnswer: 7"], (2, 5)),
        (["x></think>"], (1, 4)),  # "></" straddles the start of the tag: it belongs to the close
        (["</think>>"], (0, 3)),  # ">>" straddles the end
        (["</th", "ink>\nAnswer: 5"], (0, 4)),  # the tag spelled by unusual tokens: </ th ink >
        (["a</think>b</think>"], (1, 4)),  # the first close counts
        (["no close here </thinking"], None),
        (["</think"], None),
    ],
)
def test_find_close_on_real_tokens(tokenizer, pieces, span):
    ids = [i for piece in pieces for i in encode(tokenizer, piece)]
    assert find_close(tokenizer, ids) == span
    if span is not None:
        start, end = span
        assert "</think>" in tokenizer.decode(ids[start:end])
        assert "</think>" not in tokenizer.decode(ids[: end - 1]) and "</think>" not in tokenizer.decode(ids[start + 1 : end])


def test_find_close_ignores_the_special_tokens_skipped_in_text(tokenizer):
    ids = encode(tokenizer, "ok</think>") + [tokenizer.eos_token_id]
    assert find_close(tokenizer, ids) == (1, 4)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("let me see\n</think>\nAnswer: 7", ("let me see", "Answer: 7")),
        ("<think>\nhmm</think>The answer is 3.", ("hmm", "The answer is 3.")),  # a full transcript
        ("a</think>b</think>c", ("a", "b</think>c")),  # split at the first close
        ("Answer: 7", ("", "Answer: 7")),  # reasoning off: all answer
        ("<think>\nstill thinking", ("still thinking", "")),  # cut inside the thinking: no answer
        ("ok\n</think>\nAnswer:", ("ok", "Answer:")),  # EOS straight after the forced cue
    ],
)
def test_split_thinking(text, expected):
    assert split_thinking(text) == expected


# --- the tiny random model: noise that never closes the tag ------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from rlvr.models import load_policy

    return load_policy(str(tiny_model_dir)).eval()


QUESTIONS = ["What is 2 + 3?", "Name a colour.", "Count to three, please, slowly and carefully."]


@pytest.mark.parametrize("budget", [1, 4, 16])
def test_budget_is_never_exceeded_and_the_close_is_forced(tiny, tokenizer, budget):
    engine = Recorder(TransformersEngine(tiny, tokenizer, batch_size=2))
    prompts = render(tokenizer, QUESTIONS)
    results = generate_with_budget(engine, tokenizer, prompts, GREEDY, budget=budget, answer_tokens=4)
    assert len(results) == len(prompts)
    close = encode(tokenizer, FORCE_CLOSE_CUE)
    for prompt, result in zip(prompts, results):
        check_invariants(result, tokenizer, budget, answer_tokens=4)
        assert result.prompt_ids == prompt + encode(tokenizer, THINK_OPEN + "\n")
        assert result.forced and not result.stopped_in_thinking and result.thinking_tokens == budget
        assert result.completion_ids[budget : budget + len(close)] == close
        assert result.generated_mask == [1] * budget + [0] * len(close) + [1] * result.answer_tokens
        assert 1 <= result.answer_tokens <= 4
        check_logprobs_by_teacher_forcing(tiny, result)
    # One batched call per phase: the thinking, then the answers.
    assert [(len(prompts_), limit) for prompts_, limit, _ in engine.calls] == [(3, budget), (3, 4)]


def test_completion_is_what_the_engine_calls_produced_plus_the_cue(tiny, tokenizer):
    engine = Recorder(TransformersEngine(tiny, tokenizer))
    prompts = render(tokenizer, QUESTIONS)
    sampling = SamplingParams(temperature=1.0, seed=11, max_new_tokens=999)
    results = generate_with_budget(engine, tokenizer, prompts, sampling, budget=6, answer_tokens=5)
    (think_prompts, _, thoughts), (answer_prompts, _, answers) = engine.calls
    close = encode(tokenizer, FORCE_CLOSE_CUE)
    for i, result in enumerate(results):
        assert think_prompts[i] == result.prompt_ids
        assert answer_prompts[i] == result.prompt_ids + thoughts[i].completion_ids + close
        assert result.completion_ids == thoughts[i].completion_ids + close + answers[i].completion_ids
        assert result.logprobs == thoughts[i].logprobs + answers[i].logprobs
    # Same seed, same tokens: the seeded SamplingParams reach every call.
    again = generate_with_budget(TransformersEngine(tiny, tokenizer), tokenizer, prompts, sampling, budget=6, answer_tokens=5)
    assert [r.completion_ids for r in again] == [r.completion_ids for r in results]


def test_reasoning_off_answers_after_an_empty_thinking_block(tiny, tokenizer):
    engine = Recorder(TransformersEngine(tiny, tokenizer))
    prompts = render(tokenizer, QUESTIONS)
    results = generate_with_budget(engine, tokenizer, prompts, GREEDY, budget=16, answer_tokens=6, reasoning=False)
    assert [limit for _, limit, _ in engine.calls] == [6]
    for prompt, result in zip(prompts, results):
        assert result.prompt_ids == prompt + encode(tokenizer, NO_THINKING_BLOCK)
        assert result.thinking_tokens == 0 and not result.forced and result.extensions == 0
        assert result.generated_mask == [1] * len(result.completion_ids) and result.answer_tokens == len(result.completion_ids)
        assert 1 <= result.answer_tokens <= 6
        check_logprobs_by_teacher_forcing(tiny, result)


def test_no_budget_falls_back_to_max_new_tokens(tiny, tokenizer):
    sampling = SamplingParams(greedy=True, max_new_tokens=5)
    engine = TransformersEngine(tiny, tokenizer)
    results = generate_with_budget(engine, tokenizer, render(tokenizer, QUESTIONS[:1]), sampling, budget=None, answer_tokens=3)
    assert results[0].forced and results[0].thinking_tokens == 5


@pytest.mark.parametrize(
    "kwargs, message",
    [({"budget": 0}, "budget must be at least 1"), ({"answer_tokens": 0}, "answer_tokens"), ({"min_thinking": -1}, ">= 0")],
)
def test_bad_arguments(tiny, tokenizer, kwargs, message):
    arguments = {"budget": 4, "answer_tokens": 4, **kwargs}
    with pytest.raises(ValueError, match=message):
        generate_with_budget(TransformersEngine(tiny, tokenizer), tokenizer, render(tokenizer, ["q"]), GREEDY, **arguments)


# --- a scripted model: closes, early stops and extensions, deterministically ------------------------------------


def bigram_model(tokenizer, successor: dict[int, int]) -> LlamaForCausalLM:
    """A real Llama whose layers add nothing (zero output projections), so the next token depends on the current
    one only: greedy decoding follows `successor`. It drives the real engine through paths the random model never
    takes (writing the close, ending the turn inside the thinking)."""
    sources = sorted(successor)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    assert len(sources) <= config.hidden_size
    model = LlamaForCausalLM(config).float().eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.embed_tokens.weight.zero_()
        model.lm_head.weight.zero_()
        for slot, token in enumerate(sources):
            model.model.embed_tokens.weight[token, slot] = 1.0
            model.lm_head.weight[successor[token], slot] = 5.0
    return model


def scripted(tokenizer, close_after_ok: bool) -> LlamaForCausalLM:
    """After "\\n" (the end of "<think>\\n") the model writes "ok", then either "</think>\\n" and "ok" again, forever,
    or its EOS. After "Wait," it writes "ok"; after the forced "Answer:" it writes " 7" and EOS."""
    token = {t: encode(tokenizer, t)[0] for t in ["\n", "ok", "</", "think", ">", ",", ":", " ", "7"]}
    assert encode(tokenizer, "ok</think>\n") == [token[t] for t in ["ok", "</", "think", ">", "\n"]]
    chain = ["\n", "ok", "</", "think", ">", "\n"] if close_after_ok else []
    successor = {token[a]: token[b] for a, b in zip(chain, chain[1:])}
    if not close_after_ok:
        successor |= {token["\n"]: token["ok"], token["ok"]: tokenizer.eos_token_id}
    successor |= {token[","]: token["ok"], token[":"]: token[" "], token[" "]: token["7"], token["7"]: tokenizer.eos_token_id}
    return bigram_model(tokenizer, successor)


def test_a_close_within_the_budget_keeps_the_answer_and_continues_it(tokenizer):
    model = scripted(tokenizer, close_after_ok=True)
    engine = Recorder(TransformersEngine(model, tokenizer))
    (result,) = generate_with_budget(engine, tokenizer, render(tokenizer, ["q"]), GREEDY, budget=16, answer_tokens=16)
    check_invariants(result, tokenizer, budget=16, answer_tokens=16)
    # Thinking = "ok</think>" (4 tokens, the close counted); the 12 tokens after it, cut by the budget, are
    # the start of the answer, which a second call continues for the 4 answer tokens left.
    assert (result.thinking_tokens, result.answer_tokens, result.forced, result.truncated) == (4, 16, False, True)
    assert [limit for _, limit, _ in engine.calls] == [16, 4]
    assert result.text == "ok</think>\n" * 4  # 20 tokens: four rounds of "ok</think>\n"
    assert split_thinking(result.text) == ("ok", ("ok</think>\n" * 3).strip())
    check_logprobs_by_teacher_forcing(model, result)


@pytest.mark.parametrize("max_extensions, thinking", [(1, 5), (3, 7)])
def test_an_early_close_is_replaced_by_wait(tokenizer, max_extensions, thinking):
    model = scripted(tokenizer, close_after_ok=True)
    engine = Recorder(TransformersEngine(model, tokenizer))
    prompts = render(tokenizer, ["q"])
    (result,) = generate_with_budget(engine, tokenizer, prompts, GREEDY, 16, 16, min_thinking=8, max_extensions=max_extensions)
    check_invariants(result, tokenizer, budget=16, answer_tokens=16)
    # Each early close is dropped (its "ok" kept) and "\nWait," appended; the last allowed close stands.
    assert result.extensions == max_extensions and result.thinking_tokens == thinking and not result.forced
    assert result.thinking == ("ok" + CONTINUE_CUE) * max_extensions + "ok"
    # Each round thinks within what is left of the budget: 16 - the "ok"s kept so far.
    assert [limit for _, limit, _ in engine.calls][: max_extensions + 1] == [16 - k for k in range(max_extensions + 1)]
    check_logprobs_by_teacher_forcing(model, result)


def test_an_eos_inside_the_thinking_is_dropped_and_the_close_forced(tokenizer):
    model = scripted(tokenizer, close_after_ok=False)
    engine = Recorder(TransformersEngine(model, tokenizer))
    (result,) = generate_with_budget(engine, tokenizer, render(tokenizer, ["q"]), GREEDY, budget=16, answer_tokens=8)
    check_invariants(result, tokenizer, budget=16, answer_tokens=8)
    assert result.stopped_in_thinking and result.forced and result.thinking_tokens == 1 and result.answer_tokens == 3
    assert result.text == "ok" + FORCE_CLOSE_CUE + " 7"
    assert extract_answer(result.answer) == "7"
    assert tokenizer.eos_token_id not in result.completion_ids[:-1]  # the dropped EOS is nowhere but at the end
    check_logprobs_by_teacher_forcing(model, result)
    # With a minimum, the early EOS is taken away and "Wait," appended instead.
    (longer,) = generate_with_budget(engine, tokenizer, render(tokenizer, ["q"]), GREEDY, 16, 8, min_thinking=4, max_extensions=1)
    check_invariants(longer, tokenizer, budget=16, answer_tokens=8)
    assert longer.text == "ok" + CONTINUE_CUE + "ok" + FORCE_CLOSE_CUE + " 7"
    assert (longer.extensions, longer.thinking_tokens, longer.stopped_in_thinking) == (1, 2, True)


# --- the packaged model ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_budget_forcing_on_the_packaged_model(tokenizer):
    from rlvr.models import load_policy

    model = load_policy("smollm2-135m").eval()
    engine = Recorder(TransformersEngine(model, tokenizer, batch_size=8))
    questions = ["What is 7 + 5?", "What is 12 - 4?", "What is 6 * 3?", "What is 20 / 4?", "What is 9 + 8?", "What is 15 - 7?"]
    prompts = render(tokenizer, questions)
    for budget in (8, 32):
        engine.calls.clear()
        results = generate_with_budget(engine, tokenizer, prompts, GREEDY, budget=budget, answer_tokens=16)
        assert len(engine.calls) == 2  # the thinking of all six in one call, then all their answers in one
        for result in results:
            check_invariants(result, tokenizer, budget, answer_tokens=16)
            assert result.answer_tokens > 0 and result.answer, result.text
            # After the forced "Answer:" the model writes an answer our extractor reads.
            assert extract_answer(result.answer) is not None, result.text
