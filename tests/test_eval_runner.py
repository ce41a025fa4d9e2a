"""The evaluation runner on a tiny random model: the accounting, the vote keys, budgets, and the report files."""

from __future__ import annotations

import json

import pytest

from conftest import Replies
from rlvr.config import SamplingConfig
from rlvr.data import Source
from rlvr.env_config import MixtureEnvConfig
from rlvr.envs import make_env
from rlvr.eval import EvalSettings, Sample, run_eval
from rlvr.eval.report import markdown, write_report
from rlvr.eval.summary import accuracy_by_tokens, compute_accounting
from rlvr.models import load_policy, load_tokenizer
from rlvr.rewards import REWARDS, VERIFIERS, VOTE_KEYS, register_verifier
from rlvr.rollout import TransformersEngine
from rlvr.scoring import Scorer


def test_vote_keys_group_what_counts_as_one_answer():
    assert VOTE_KEYS["math"]("so\n\\boxed{\\frac{1}{ 2}}") == VOTE_KEYS["math"]("Answer: \\frac{1}{2}") == "\\frac{1}{2}"
    assert VOTE_KEYS["gym"]("Answer: 42") == "42" and VOTE_KEYS["gym"]("no number") is None
    assert VOTE_KEYS["exact_match"]("Answer: The Eiffel Tower.") == "eiffel tower"
    assert "code" not in VOTE_KEYS  # two passing programs are not one answer: no maj@k for code


def test_a_verifier_declares_its_vote_key_where_it_registers():
    try:

        @register_verifier("test_upper", vote=lambda text: text.strip().upper() or None)
        def upper(text, problem):
            return float(text.strip().upper() == problem.answer)

        assert VERIFIERS["test_upper"] is upper and VOTE_KEYS["test_upper"](" yes ") == "YES"
    finally:
        for registry in (REWARDS, VERIFIERS, VOTE_KEYS):
            del registry["test_upper"]


def test_accuracy_by_tokens_and_compute_by_hand():
    outcomes = [(1, True), (2, True), (3, False), (4, True), (5, False), (6, False), (7, False), (8, False)]
    samples = [Sample("q", "a", 0, t, forced=False, truncated=t == 8, mean_logprob=0.0, correct=c) for t, c in outcomes]
    bins = accuracy_by_tokens(samples, bins=2)
    assert [b["samples"] for b in bins] == [4, 4] and [b["accuracy"] for b in bins] == [0.75, 0.0]
    compute = compute_accounting(samples, n=4, seconds=2.0)
    assert compute["tokens_per_question"]["mean"] == (10 + 26) / 2
    assert compute["tokens_per_sample"]["median"] == 4.5 and compute["tokens_per_second"] == 18.0
    assert compute["truncated_rate"] == 1 / 8


@pytest.fixture(scope="module")
def setup(tiny_model_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "gsm.jsonl"
    path.write_text("".join(json.dumps({"question": f"{i} plus {i}?", "answer": f"#### {2 * i}"}) + "\n" for i in range(6)))
    tokenizer = load_tokenizer(str(tiny_model_dir))
    engine = TransformersEngine(load_policy(str(tiny_model_dir)), tokenizer, batch_size=16)
    env = make_env(MixtureEnvConfig(sources=[Source(path=str(path), use="eval")]))
    return engine, env, tokenizer


def test_n_samples_per_question_and_the_summary(setup, tmp_path):
    engine, env, tokenizer = setup
    settings = EvalSettings(n=3, ks=(1, 3), sampling=SamplingConfig(max_new_tokens=5), resamples=500)
    summary, samples = run_eval(engine, env, tokenizer, Scorer(env.rubric, workers=0), settings, {"model": "tiny"})
    assert len(samples) == 18 and [s.sample for s in samples[:6]] == [0, 1, 2, 0, 1, 2]
    assert len({s.id for s in samples}) == 6 and all(s.tokens <= 5 for s in samples)
    assert samples[0].question in samples[0].prompt and samples[0].completion
    assert summary["decoding"]["greedy"] is False and summary["model"] == "tiny"
    assert {"avg@n", "pass@1", "pass@3", "maj@3", "bo@3"} <= set(summary)
    assert summary["avg@n"]["value"] == pytest.approx(sum(s.correct for s in samples) / 18)
    # Seeded: the same settings give the same samples.
    again, _ = run_eval(engine, env, tokenizer, Scorer(env.rubric, workers=0), settings, {"model": "tiny"})
    assert again["avg@n"] == summary["avg@n"] and again["compute"]["tokens_per_sample"] == summary["compute"]["tokens_per_sample"]
    write_report(tmp_path, summary, samples)
    assert "| all |" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "report.html").read_text().count("<img") >= 2
    with pytest.raises(ValueError, match="k must be <= n"):
        run_eval(engine, env, tokenizer, Scorer(env.rubric, workers=0), EvalSettings(n=2, ks=(4,)))


def test_budgets_give_a_curve_and_never_overspend(setup):
    engine, env, tokenizer = setup
    settings = EvalSettings(n=1, budgets=(2, 6), answer_tokens=3, resamples=200)
    summary, samples = run_eval(engine, env, tokenizer, Scorer(env.rubric, workers=0), settings)
    assert [row["budget"] for row in summary["budgets"]] == [2, 6] and summary["budget"] == 6
    assert all(s.thinking_tokens <= s.budget and s.answer_tokens <= 3 for s in samples)
    assert all("<think>" in s.prompt and "Answer:" in s.completion for s in samples if s.forced)
    assert "thinking budget" in markdown(summary)
    [over] = summary["overthinking"]  # budget 6 against budget 2, on the questions solved at 2
    assert (over["budget"], over["versus"]) == (6, 2) and over["easy_questions"] <= len(samples) // 2


def test_no_majority_vote_where_answers_cannot_vote(setup):
    from rlvr.eval.summary import metrics as summary_metrics
    from rlvr.types import Problem

    problems = [Problem("q1", "2", verifier="math", subset="math"), Problem("q2", "", verifier="code", subset="code")]
    outcomes = [(True, "2"), (False, "3"), (False, None), (True, None)]
    samples = [Sample("q", "a", 0, 3, False, False, -1.0, correct=correct, extracted=answer) for correct, answer in outcomes]
    metrics = summary_metrics(problems, samples, EvalSettings(n=2, ks=(1, 2), resamples=100), seconds=1.0)
    assert "maj@2" not in metrics and "maj@2" not in metrics["subsets"]["code"]
    assert metrics["subsets"]["math"]["maj@2"]["value"] == 0.5  # a 1-1 tie between "2" (right) and "3" (wrong)


def test_length_aware_rewards_see_the_limit_in_evaluation(setup, tiny_model_dir, tmp_path):
    """A recipe with the length reward must evaluate like any other: each sample's tokens and the limit reach it."""
    engine, env, tokenizer = setup
    path = tmp_path / "gsm.jsonl"
    path.write_text("".join(json.dumps({"question": f"{i} plus {i}?", "answer": f"#### {2 * i}"}) + "\n" for i in range(3)))
    shaped = make_env(MixtureEnvConfig(sources=[Source(path=str(path), use="eval")], rewards={"length": 1.0}))
    settings = EvalSettings(n=1, sampling=SamplingConfig(max_new_tokens=4), resamples=100)
    summary, samples = run_eval(engine, shaped, tokenizer, Scorer(shaped.rubric, workers=0), settings)
    assert summary["score_errors"] == 0 and not any(s.score_error for s in samples)
    # Truncated at the 4-token limit, a sample gets DAPO's full penalty: reward = correct + format - 1.
    assert all(s.reward <= 0.1 for s in samples if s.truncated)


def test_plain_generation_counts_the_thinking_as_training_does(tokenizer):
    env = make_env(MixtureEnvConfig(sources=[Source(path="gym:chain_sum", use="eval", eval_size=2)]))
    texts = ["<think>\n3 + 4 = 7\n</think>\nAnswer: 7", "Answer: 7"]
    replies = iter(texts)
    engine = Replies(tokenizer, lambda prompt: next(replies))
    _, samples = run_eval(engine, env, tokenizer, Scorer(env.rubric, workers=0), EvalSettings(resamples=100))
    thinking = len(tokenizer("3 + 4 = 7", add_special_tokens=False).input_ids)
    generated = len(tokenizer.encode(texts[0], add_special_tokens=False)) + 1
    assert (samples[0].thinking_tokens, samples[0].answer_tokens) == (thinking, generated - thinking)
    assert samples[1].thinking_tokens == 0 and samples[1].tokens == len(tokenizer.encode(texts[1], add_special_tokens=False)) + 1
