"""Answer extraction, the rubric and the confidence interval, by hand."""

import pytest

from rlvr.envs.base import Problem, Rubric
from rlvr.eval import wilson_interval
from rlvr.rewards import extract_answer, format_reward


@pytest.mark.parametrize(
    "text, expected",
    [
        ("3 + 4 = 7\nAnswer: 7", "7"),
        ("Answer: 5\nwait, no.\nAnswer: -12.", "-12"),  # the last marked line wins
        ("**Answer:** 42", "42"),
        ("The sum of 56 and 47 is 103.", "103"),  # fallback: the last number
        ("It is 1,250 in total", "1250"),
        ("no digits here", None),
        ("", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_format_reward_wants_a_final_answer_line():
    problem = Problem(question="q", answer="1", score=lambda a: float(a == "1"))
    assert format_reward("thinking...\nAnswer: 1", problem) == 1.0
    assert format_reward("Answer: 1\nand then more text", problem) == 0.0
    assert format_reward("the answer is 1", problem) == 0.0


def test_rubric_weights_components():
    problem = Problem(question="q", answer="7", score=lambda a: float(a == "7"))
    rubric = Rubric({"correct": 1.0, "format": 0.1})
    assert rubric.score("Answer: 7", problem) == (pytest.approx(1.1), {"correct": 1.0, "format": 1.0})
    assert rubric.score("it is 7", problem) == (pytest.approx(1.0), {"correct": 1.0, "format": 0.0})
    assert rubric.score("Answer: 8", problem)[0] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="unknown reward"):
        Rubric({"corect": 1.0})


def test_wilson_interval_by_hand():
    z2 = 1.959964**2
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(z2 / (10 + z2))
    low, high = wilson_interval(5, 10)
    assert low + high == pytest.approx(1.0)  # symmetric around 1/2
    low, high = wilson_interval(32, 200)
    assert low == pytest.approx(0.1157, abs=1e-4) and high == pytest.approx(0.2171, abs=1e-4)
