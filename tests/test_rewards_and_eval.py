"""Answer extraction and the rubric, by hand."""

import pytest

from rlvr.rewards import Rubric, Score, extract_answer, format_reward, think_format_reward
from rlvr.types import Problem


@pytest.mark.parametrize(
    "text, expected",
    [
        ("3 + 4 = 7\nAnswer: 7", "7"),
        ("Answer: 5\nwait, no.\nAnswer: -12.", "-12"),  # the last marked line wins
        ("**Answer:** 42", "42"),
        ("The sum of 56 and 47 is 103.", "103"),  # fallback: the last number
        ("It is 1,250 in total", "1250"),
        ("no digits here", None),
        ("<answer>42</answer>\nAnswer: 7", "42"),  # an R1-style tag wins over the Answer line
        ("<think>1 2</think><answer>\n1 2\n3 4\n</answer>", "1 2\n3 4"),  # and may span lines
        ("<answer> </answer> Answer: 7", "7"),  # an empty tag is no answer
        ("", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_format_reward_wants_a_final_answer_line():
    problem = Problem(question="q", answer="1")
    assert format_reward("thinking...\nAnswer: 1", problem) == 1.0
    assert format_reward("Answer: 1\nand then more text", problem) == 0.0
    assert format_reward("the answer is 1", problem) == 0.0


def test_rubric_weights_components():
    problem = Problem(question="q", answer="7", verifier="exact_match")
    rubric = Rubric({"correct": 1.0, "format": 0.1})
    score = rubric.score("Answer: 7", problem)
    assert (score.total, score.components) == (pytest.approx(1.1), {"correct": 1.0, "format": 1.0})
    score = rubric.score("it is 7", problem)  # no Answer line: exact match reads the last line, "it is 7"
    assert (score.total, score.components) == (pytest.approx(0.0), {"correct": 0.0, "format": 0.0})
    assert rubric.score("Answer: 8", problem).total == pytest.approx(0.1)
    assert rubric.failed("timed out") == Score(0.0, {"correct": 0.0, "format": 0.0}, error="timed out")
    with pytest.raises(ValueError, match="unknown reward"):
        Rubric({"corect": 1.0})


def test_correct_calls_the_problems_own_verifier():
    rubric = Rubric({"correct": 1.0})
    assert rubric.score("Answer: 1/2", Problem("q", "0.5", verifier="math")).total == 1.0
    assert rubric.score("Answer: Paris", Problem("q", "paris", verifier="exact_match")).total == 1.0
    with pytest.raises(ValueError, match="'nope' is not a registered verifier"):
        rubric.score("Answer: 1", Problem("q", "1", verifier="nope"))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<think>2 + 2 is 4</think><answer>4</answer>", 1.0),
        ("  <think>\nsteps\n</think>\n\n<answer>4</answer>\n", 1.0),
        ("<think></think><answer>4</answer>", 0.0),  # empty thinking
        ("<think>x</think><answer> </answer>", 0.0),  # empty answer
        ("<think>x</think>4", 0.0),  # no answer tags
        ("preamble <think>x</think><answer>4</answer>", 0.0),  # text outside the structure
        ("<think>x</think><answer>4</answer> trailing", 0.0),
        ("<think>a</think><think>b</think><answer>4</answer>", 0.0),  # repeated tag
        ("<think>x</think><answer>4</answer><answer>5</answer>", 0.0),
    ],
)
def test_think_format(text, expected):
    assert think_format_reward(text, Problem("q", "4")) == expected
