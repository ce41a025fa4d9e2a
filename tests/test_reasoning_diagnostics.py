"""The reasoning diagnostics on hand-made texts and samples: reflection, language mixing, thinking and answer tokens,
wrong answers split into finished and cut off; in a training step's metrics, an evaluation's summary and report."""

from __future__ import annotations

import pytest

from rlvr.config import ConfigError, load_config
from rlvr.eval.report import markdown, plots
from rlvr.eval.sample import Sample
from rlvr.eval.settings import EvalSettings
from rlvr.eval.summary import metrics, overthinking, reasoning_summary
from rlvr.reasoning_diagnostics import DiagnosticsConfig, mixes_languages, reasoning_metrics, reflects, scripts
from rlvr.types import Problem


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3 + 4 = 7. Wait, let me check: 3 + 4 is 7.", True),
        ("hmm, 12 - 5 = 7", True),
        ("Let me verify this: 6 * 3 = 18", True),
        ("Let me double-check the sum.", True),
        ("On second thought, it is 9.", True),
        ("VERIFY: 2 + 2 = 4", True),  # any case
        ("The train awaited its passengers: 7", False),  # whole words only: "await" is not "wait"
        ("Hmmm the answer is 4", False),  # nor is "hmmm" "hmm"
        ("The answer is 7 because 3 + 4 = 7.", False),
        ("", False),
    ],
)
def test_reflection_is_a_self_checking_phrase_as_whole_words(text, expected):
    assert reflects(text) is expected


def test_the_phrase_list_is_the_configs():
    assert reflects("Let me recount: 7") is False
    assert reflects("Let me recount: 7", ("let me recount",)) is True
    assert reflects("wait, 7", ("let me recount",)) is False


@pytest.mark.parametrize(
    ("text", "expected", "found"),
    [
        ("The answer is 7.", False, {"LATIN"}),
        ("首先 3 + 4 = 7, so the answer is 7", True, {"CJK", "LATIN"}),  # Chinese then English: R1-Zero's mixing
        ("答えは七です。ひらがなとカタカナ", False, {"CJK"}),  # Japanese: Han, hiragana and katakana are one family
        ("Ответ: семь, because 3 + 4 = 7", True, {"CYRILLIC", "LATIN"}),
        ("The area is π r^2 = 3.14", False, {"LATIN"}),  # one Greek letter in a formula is not a language
        ("12 + 30 = 42 ≥ 40 → 42", False, set()),  # no letters at all
    ],
)
def test_language_mixing_counts_scripts_with_enough_letters(text, expected, found):
    assert scripts(text) == found
    assert mixes_languages(text) is expected


def test_reasoning_metrics_of_a_batch_hand_computed():
    texts = [
        "<think>3 + 4 = 7. Wait, yes.</think>\nAnswer: 7",  # reflects; thinking 7 words, answer 2
        "First 5 * 2 = 10</think>Answer: 10",  # thinking 6 words, answer 2
        "Answer: 9",  # reasoning off: all answer, 2 words
        "<think>先 2 + 2 = 4 then four",  # mixes CJK and Latin; opened, never closed: all thinking, 8 words
    ]
    words = lambda text: len(text.split())  # noqa: E731 - a whitespace "tokenizer": the counts are checkable by eye
    rows = reasoning_metrics(texts, words, DiagnosticsConfig(min_script_letters=1))
    assert rows["reasoning/reflection_rate"] == pytest.approx(1 / 4)
    assert rows["reasoning/language_mixing_rate"] == pytest.approx(1 / 4)
    assert rows["reasoning/thinking_tokens"] == pytest.approx((7 + 6 + 0 + 8) / 4)
    assert rows["reasoning/answer_tokens"] == pytest.approx((2 + 2 + 2 + 0) / 4)
    assert reasoning_metrics([], words) == {}


def _sample(text: str, thinking: int, answer: int, correct: bool, truncated: bool) -> Sample:
    return Sample("q", text, thinking, answer, False, truncated, 0.0, correct=correct)


def test_an_evaluations_reasoning_summary_splits_wrong_answers_by_truncation():
    samples = [
        _sample("<think>Wait, 7.</think>Answer: 7", 4, 3, correct=True, truncated=False),
        _sample("<think>Let me verify: 8</think>Answer: 9", 5, 3, correct=False, truncated=False),
        _sample("<think>1 + 2 + 3 + 4 + 5 + 6 + 7 + 8", 20, 0, correct=False, truncated=True),
        _sample("Answer: 4", 0, 3, correct=True, truncated=False),
    ]
    expected = {
        "reflection_rate": 0.5,
        "language_mixing_rate": 0.0,
        "thinking_tokens": (4 + 5 + 20 + 0) / 4,
        "answer_tokens": (3 + 3 + 0 + 3) / 4,
        "wrong_finished_rate": 0.25,
        "wrong_truncated_rate": 0.25,
    }
    assert reasoning_summary(samples, DiagnosticsConfig()) == expected
    # The whole summary of an evaluation carries it, and its report shows it.
    problems = [Problem(f"q{i}", "7") for i in range(4)]
    summary = metrics(problems, samples, EvalSettings(resamples=100), seconds=1.0)
    assert summary["reasoning"] == expected
    report = markdown({**summary, "samples_per_question": 1})
    assert "## Reasoning" in report and "| wrong, cut off at the token limit | 25.0% |" in report


def test_a_bad_diagnostics_key_is_named():
    with pytest.raises(ConfigError, match="diagnostics.reflection_phrases"):
        load_config(None, ["diagnostics.reflection_phrases=[]"])
    assert load_config(None, ["diagnostics.reflection_phrases=[let me recount]"]).diagnostics.reflection_phrases == (
        "let me recount",
    )


def test_overthinking_is_the_thinking_easy_questions_get_beyond_the_smallest_budget():
    def at(budget: int, qid: str, thinking: int, correct: bool) -> Sample:
        sample = _sample("<think>...</think>Answer: 1", thinking, 2, correct=correct, truncated=False)
        sample.id, sample.budget = qid, budget
        return sample

    samples = [
        # budget 8: a solved (easy), b half solved (not easy), c unsolved
        at(8, "a", 6, True), at(8, "a", 8, True),
        at(8, "b", 8, True), at(8, "b", 8, False),
        at(8, "c", 8, False), at(8, "c", 8, False),
        # budget 64: a thinks 30 and 40 (mean 35, 28 more than its 7 at budget 8); b and c think 60 each
        at(64, "a", 30, True), at(64, "a", 40, True),
        at(64, "b", 60, True), at(64, "b", 60, True),
        at(64, "c", 60, False), at(64, "c", 60, True),
    ]  # fmt: skip
    rows = overthinking(samples)
    assert rows == [
        {"budget": 64, "versus": 8, "easy_questions": 1, "extra_thinking_tokens": 28.0, "share_of_thinking": 28.0 / 155.0}
    ]
    assert overthinking([s for s in samples if s.budget == 8]) == []  # one budget: nothing to compare
    report = markdown({**metrics([Problem("q", "1")], samples[:1], EvalSettings(resamples=100), 1.0), "overthinking": rows,
                       "samples_per_question": 1})  # fmt: skip
    assert "Overthinking at budget 64: on the 1 questions solved at budget 8, 28.0 more thinking tokens" in report


def test_accuracy_and_tokens_against_difficulty_count_cut_off_answers_apart():
    problems = [Problem("a", "1", meta={"difficulty": 2}), Problem("b", "1", meta={"difficulty": 4}), Problem("c", "1")]
    samples = [
        _sample("<think>1+1</think>Answer: 2", 4, 2, correct=True, truncated=False),  # a, sample 1
        _sample("<think>1+1</think>Answer: 3", 6, 2, correct=False, truncated=False),  # a, sample 2
        _sample("<think>1+2+3+4+5", 16, 0, correct=False, truncated=True),  # b
        _sample("<think>9+9+9</think>Answer: 27", 10, 4, correct=True, truncated=False),  # b
        _sample("Answer: 1", 0, 2, correct=True, truncated=False),  # c, no difficulty
        _sample("Answer: 1", 0, 2, correct=True, truncated=False),
    ]
    summary = metrics(problems, samples, EvalSettings(n=2, ks=(1,), resamples=100), seconds=1.0)
    rows = summary["difficulty"]
    assert [(r["difficulty"], r["questions"], r["avg@n"]["value"]) for r in rows] == [(2.0, 1, 0.5), (4.0, 1, 0.5)]
    assert (rows[0]["thinking_tokens"], rows[0]["answer_tokens"]) == (5.0, 2.0)
    assert (rows[1]["thinking_tokens"], rows[1]["answer_tokens"]) == (13.0, 2.0)
    assert (rows[0]["wrong_finished_rate"], rows[0]["wrong_truncated_rate"]) == (0.5, 0.0)
    assert (rows[1]["wrong_finished_rate"], rows[1]["wrong_truncated_rate"]) == (0.0, 0.5)
    report = markdown({**summary, "samples_per_question": 2})
    assert "## By difficulty" in report and "| 4 | 1 | 50.0% [" in report and "| 13.0 | 2.0 | 0.0% | 50.0% |" in report
    assert "accuracy and tokens vs difficulty" in plots(summary, samples)
    assert "difficulty" not in metrics(problems[2:], samples[4:], EvalSettings(n=2, ks=(1,), resamples=100), 1.0)
