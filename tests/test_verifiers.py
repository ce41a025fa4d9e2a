"""The math, QA and length verifiers: a math-verify oracle table, extraction precedence, hostile input, EM/F1 by hand."""

from __future__ import annotations

import random
import threading
import time

import pytest

from rlvr.rewards import REWARDS
from rlvr.rewards.length import length_reward, overlong_penalty
from rlvr.rewards.math import extract_math_answer, math_equal, math_reward, normalize_reference
from rlvr.rewards.qa import exact_match, exact_match_reward, f1_reward, normalize_text, qa_prediction, token_f1
from rlvr.types import Problem


def problem(answer: str, **meta) -> Problem:
    return Problem(question="q", answer=answer, meta=meta)


def test_rewards_are_registered():
    from rlvr.rewards import VERIFIERS

    assert {"math", "exact_match", "f1", "length", "gym", "code", "format", "think_format", "correct"} <= set(REWARDS)
    assert set(VERIFIERS) == {"math", "exact_match", "f1", "gym", "code", "instructions", "judge"}


# --- math-verify oracle: (reference, prediction) -------------------------------------------------------------

EQUIVALENT = [
    ("\\frac{1}{2}", "0.5"),
    ("\\frac12", "1/2"),
    ("\\frac{1}{2}", "\\dfrac{1}{2}"),
    ("0.5", "50\\%"),  # a percentage is read as x/100 ...
    ("0.5", "50%"),
    ("\\{1,2\\}", "\\{2,1\\}"),  # sets are unordered
    ("\\{1,2\\}", "{2,1}"),  # bare braces, as models write them, are a set too
    ("\\sqrt{8}", "2\\sqrt{2}"),
    ("(x+1)^2", "x^2+2x+1"),
    ("1000", "1,000"),
    ("[1,2)", "[1, 2)"),
    ("-3", "-3.0"),
    ("\\dfrac{3}{4}", "0.75"),
    ("2^{10}", "1024"),
    ("1000000", "10^6"),
    ("1/3", "0.333333"),  # numeric comparison rounds to 6 decimals
    ("\\pi", "3.1415926535"),
    ("\\infty", "\\infty"),
    ("\\$5", "5"),  # currency and units are stripped
    ("5 \\text{ cm}", "5"),
    ("\\text{(B)}", "B"),
]

NOT_EQUIVALENT = [
    ("3", "4"),
    ("2", "-2"),
    ("\\frac{1}{2}", "\\frac{1}{3}"),
    ("10", "100"),
    ("x+1", "x+2"),
    ("x^2", "x^3"),
    ("\\{1,2\\}", "\\{1,2,3\\}"),
    ("[1,2)", "[1,2]"),  # open and closed ends differ
    ("(1,2)", "[1,2]"),
    ("\\sqrt{2}", "1.41"),  # too few decimals
    ("\\pi", "3.14159"),  # likewise: rounding is to 6 decimals
    ("1/3", "0.33"),
    ("100000001", "100000000"),
    ("1234", "12,34"),  # not a thousands separator: read as the set {12, 34}
    ("y", "x"),
]


@pytest.mark.parametrize("reference, prediction", EQUIVALENT)
def test_math_equal_equivalent(reference, prediction):
    assert math_equal(prediction, reference)


@pytest.mark.parametrize("reference, prediction", NOT_EQUIVALENT)
def test_math_equal_not_equivalent(reference, prediction):
    assert not math_equal(prediction, reference)


@pytest.mark.parametrize(
    "reference, prediction, expected",
    [
        # Percentages are lenient both ways: 50% equals 0.5 *and* 50, and a gold 50 accepts "50%".
        ("50\\%", "0.5", True),
        ("50\\%", "50", True),
        ("50", "50\\%", True),
        # An equation is compared by its right-hand side, in either direction.
        ("5", "x=5", True),
        ("x=5", "5", True),
        # `1e3` is not scientific notation to math-verify's LaTeX parser: it reads 1*e*3 (Euler's e).
        ("1000", "1e3", False),
        # `(1,2)` as gold is an open interval, yet it accepts the set {1,2}; `(2,1)` is rejected.
        ("(1,2)", "\\{1,2\\}", True),
        ("(1,2)", "(2,1)", False),
    ],
)
def test_math_verify_quirks_we_rely_on_or_accept(reference, prediction, expected):
    assert math_equal(prediction, reference) is expected


def test_boxing_bare_answers_matters():
    # Unboxed, math-verify's plain-expression extractor would read "2\sqrt{2}" as 2 and accept it for a gold 2.
    assert not math_equal("2\\sqrt{2}", "2")
    assert math_equal("$\\frac{1}{2}$.", "0.5")  # inline-math delimiters and a full stop are dropped


def test_math_equal_works_outside_the_main_thread():
    # signal.alarm only works in the main thread; there math_equal runs math-verify without its timeout.
    results: list[bool] = []
    worker = threading.Thread(target=lambda: results.append(math_equal("\\frac12", "0.5")))
    worker.start()
    worker.join(timeout=30)
    assert results == [True]


# --- extraction and reference normalisation ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so the answer is \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
        ("\\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt{3}}{2}"),  # nested braces
        ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),  # escaped braces are not groups
        ("first \\boxed{3}, finally \\boxed{4}", "4"),  # the last box wins
        ("\\boxed{3} and then \\boxed{4", "3"),  # an unclosed box is skipped
        ("\\boxed{3}\nAnswer: 4", "3"),  # a box beats an Answer line
        ("<answer>4</answer> \\boxed{3}", "3"),  # ... and an answer tag
        ("<answer> 7 </answer>", "7"),
        ("Answer: 4\n<answer>5</answer>", "5"),  # a tag beats an Answer line
        ("<answer>1</answer> then <answer>2</answer>", "2"),
        ("**Answer:** 42.", "42"),
        ("Answer: 5\nno wait\nAnswer: -12", "-12"),  # the last Answer line
        ("#### 3\nAnswer: 4", "4"),  # an Answer line beats a GSM8K mark
        ("She has 5 apples.\n#### 1,234", "1234"),
        ("#### 12\nThat took 3 steps", "12"),  # a GSM8K mark beats the last number
        ("It is 1,250 in total, I think", "1250"),  # fallback: the last number
        ("no digits here", None),
        ("", None),
    ],
)
def test_extract_math_answer(text, expected):
    assert extract_math_answer(text) == expected


@pytest.mark.parametrize(
    "reference, expected",
    [
        ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72", "72"),
        ("It costs 1,000 + 234.\n#### 1,234", "1234"),
        ("#### -5", "-5"),
        ("\\frac{1}{2}", "\\frac{1}{2}"),  # not GSM8K: only stripped
        (" \\{1,2\\} ", "\\{1,2\\}"),
    ],
)
def test_normalize_reference(reference, expected):
    assert normalize_reference(reference) == expected


def test_math_reward_on_a_gsm8k_problem():
    gsm8k = problem("He pays 1000 + 234 dollars.\n#### 1,234")
    assert math_reward("1000 + 234 = 1234\nAnswer: 1,234", gsm8k) == 1.0
    assert math_reward("The total is \\boxed{1234.0}", gsm8k) == 1.0
    assert math_reward("Answer: 1233", gsm8k) == 0.0
    assert math_reward("I don't know", gsm8k) == 0.0


# --- hostile input: 0, no exception, fast ---------------------------------------------------------------------

_rng = random.Random(0)
HOSTILE = {
    "unclosed box": "\\boxed{",
    "10k nested braces": "\\boxed{" + "{" * 10_000 + "1" + "}" * 10_000 + "}",
    "10k open braces": "\\boxed{" * 10_000,
    "random bytes": bytes(_rng.randrange(256) for _ in range(4000)).decode("latin-1"),
    "empty": "",
    "nul bytes": "\x00" * 100,
    "deep fractions": "\\boxed{" + "\\frac{" * 150 + "}",
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_completions_score_zero_quickly(name):
    start = time.monotonic()
    assert math_reward(HOSTILE[name], problem("5")) == 0.0
    assert math_equal(HOSTILE[name], "5", timeout_seconds=1) is False
    assert math_equal("5", HOSTILE[name], timeout_seconds=1) is False  # a hostile reference too
    assert time.monotonic() - start < 5


def test_expensive_expression_is_cut_off_by_the_timeout():
    # Short but ruinous for SymPy: only math-verify's timeout stops it.
    start = time.monotonic()
    assert math_equal("9^{9^{9^{9}}}", "5", timeout_seconds=1) is False
    assert time.monotonic() - start < 3


# --- QA: exact match and token F1 ------------------------------------------------------------------------------


def test_normalize_text():
    assert normalize_text("  The Cat,  sat on a MAT!  ") == "cat sat on mat"
    assert normalize_text("An apple") == "apple"
    assert normalize_text("theatre") == "theatre"  # articles only as whole words


@pytest.mark.parametrize(
    "prediction, gold, em, f1",
    [
        ("the cat sat", "cat sat down", 0.0, 0.8),  # P = 2/2, R = 2/3: 2 * (1 * 2/3) / (1 + 2/3)
        ("The Eiffel Tower!", "eiffel tower", 1.0, 1.0),
        ("Paris", "London", 0.0, 0.0),
        ("a b c d", "a b", 0.0, 0.5),  # "a" is an article: tokens b c d vs b; P = 1/3, R = 1: 2 * (1/3) / (4/3)
        ("x x y", "x y y", 0.0, 2 / 3),  # multiplicity: common = {x: 1, y: 1}; P = R = 2/3
        ("the", "", 1.0, 1.0),  # both empty after normalisation
        ("", "cat", 0.0, 0.0),
    ],
)
def test_exact_match_and_f1_by_hand(prediction, gold, em, f1):
    assert exact_match(prediction, gold) == em
    assert token_f1(prediction, gold) == pytest.approx(f1)


def test_qa_prediction_prefers_answer_line_then_last_line():
    assert qa_prediction("Thinking...\nAnswer: Paris.") == "Paris"
    assert qa_prediction("It was built in 1889.\nThe Eiffel Tower\n") == "The Eiffel Tower"  # not "1889"
    assert qa_prediction("") == ""


def test_qa_rewards_take_the_best_alias():
    usa = problem("United States of America", aliases=["USA", "the United States"])
    assert exact_match_reward("Answer: the USA", usa) == 1.0
    assert f1_reward("Answer: United States", usa) == 1.0  # exact against the alias "the United States"
    assert f1_reward("Answer: the states of America", usa) == pytest.approx(2 * (3 / 3) * (3 / 4) / (1 + 3 / 4))
    assert exact_match_reward("Answer: Canada", usa) == 0.0
    assert f1_reward("I think\nUSA", problem("USA")) == 1.0  # no aliases: just the answer


# --- length: DAPO soft overlong penalty ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "num_tokens, expected",
    [(0, 0.0), (80, 0.0), (81, -0.05), (90, -0.5), (99, -0.95), (100, -1.0), (101, -1.0), (10_000, -1.0)],
)
def test_overlong_penalty_boundaries(num_tokens, expected):
    assert overlong_penalty(num_tokens, max_tokens=100, buffer=20) == pytest.approx(expected)


@pytest.mark.parametrize("max_tokens, buffer", [(100, 0), (100, 101), (0, 0), (100, -5)])
def test_overlong_penalty_rejects_bad_settings(max_tokens, buffer):
    with pytest.raises(ValueError):
        overlong_penalty(50, max_tokens, buffer)


def test_length_reward_reads_meta_and_falls_back_to_words():
    assert length_reward("short", problem("1", completion_tokens=90, max_tokens=100, overlong_buffer=20)) == pytest.approx(-0.5)
    # Without completion_tokens: 90 whitespace-separated words stand in for tokens.
    assert length_reward("w " * 90, problem("1", max_tokens=100, overlong_buffer=20)) == pytest.approx(-0.5)
    # Without a buffer: 20% of max_tokens, so 100 - 20 = 80 tokens are free.
    assert length_reward("", problem("1", completion_tokens=80, max_tokens=100)) == 0.0
    assert length_reward("", problem("1", completion_tokens=100, max_tokens=100)) == -1.0
    with pytest.raises(ValueError, match="max_tokens"):
        length_reward("text", problem("1"))


# --- reasoning-gym oracle: each task's own scorer gives its own answer 1.0 and a wrong one less ----------------


def _plus_one(answer: str) -> str:
    return str(int(answer) + 1)


def _swap_first_two(answer: str, sep: str = ", ") -> str:
    parts = answer.split(sep)
    return sep.join([parts[1], parts[0], *parts[2:]]) if len(parts) > 1 and parts[0] != parts[1] else answer + sep + "x"


def _bump_first_number(answer: str) -> str:
    first = answer.split()[0]
    return answer.replace(first, str(int(first) + 1), 1)


GYM_ORACLE = [  # (task, config, a certainly wrong answer made from the right one)
    ("chain_sum", {}, _plus_one),
    ("basic_arithmetic", {}, _plus_one),
    ("leg_counting", {}, _plus_one),
    ("gcd", {}, _plus_one),
    ("lcm", {}, _plus_one),
    ("count_bits", {}, _plus_one),
    ("letter_counting", {}, _plus_one),
    ("products", {}, _plus_one),
    ("simple_equations", {}, _plus_one),
    ("maze", {}, _plus_one),
    ("spell_backward", {}, lambda a: a[::-1] + "q"),
    ("word_sorting", {}, _swap_first_two),
    ("number_sorting", {}, lambda a: _swap_first_two(a.strip("[]")).join("[]")),
    ("family_relationships", {}, lambda a: "grandmother" if a != "grandmother" else "uncle"),
    ("rotate_matrix", {}, _bump_first_number),  # multi-line grid answers, given in <answer> tags
    ("spiral_matrix", {}, _bump_first_number),
]


@pytest.mark.parametrize("task, config, perturb", GYM_ORACLE, ids=[row[0] for row in GYM_ORACLE])
def test_gym_verifier_against_the_tasks_own_scorer(task, config, perturb):
    import reasoning_gym

    from rlvr.rewards.gym import gym_meta

    dataset = reasoning_gym.create_dataset(task, seed=7, size=5, **config)
    for entry in dataset:
        problem = Problem("q", str(entry["answer"]), verifier="gym", meta=gym_meta(task, config, entry))
        answer, wrong = str(entry["answer"]), perturb(str(entry["answer"]))
        text = f"<answer>\n{answer}\n</answer>" if "\n" in answer else f"Let me think.\nAnswer: {answer}"
        assert REWARDS["gym"](text, problem) == 1.0, (task, answer)
        assert REWARDS["gym"](text.replace(answer, wrong), problem) < 1.0, (task, answer, wrong)
        # The scorer the task itself hands out agrees on both.
        assert dataset.score_answer(answer, entry) == 1.0 and dataset.score_answer(wrong, entry) < 1.0
