"""Stated confidence: the line split off before scoring, the Brier reward, and calibration in training rows and
evaluation reports, all on hand-made completions whose numbers are computed by hand."""

import pytest

from rlvr.config import load_config
from rlvr.envs import make_env
from rlvr.errors import ConfigError
from rlvr.eval.calibration import calibration_summary, expected_calibration_error, reliability
from rlvr.eval.report import markdown, plots
from rlvr.eval.runner import _verify
from rlvr.eval.sample import Sample
from rlvr.eval.settings import EvalSettings
from rlvr.eval.summary import metrics
from rlvr.rewards import Rubric
from rlvr.rewards.calibration import CONFIDENCE_INSTRUCTION, brier_reward, split_confidence
from rlvr.scoring import Scorer
from rlvr.step_metrics import calibration_metrics
from rlvr.types import Episode, Problem


@pytest.mark.parametrize(
    "text, body, confidence",
    [
        ("Answer: 4\nConfidence: 0.8", "Answer: 4", 0.8),
        ("Answer: 4\nConfidence: 80%\n\n", "Answer: 4", 0.8),
        ("Answer: 4\nconfidence = 75", "Answer: 4", 0.75),
        ("Answer: 4\n**Confidence:** 0.9", "Answer: 4", 0.9),
        ("Answer: 4\nConfidence: .5.", "Answer: 4", 0.5),
        ("Answer: 4\nConfidence: 1", "Answer: 4", 1.0),
        ("Answer: 4\nConfidence: 150%", "Answer: 4", None),  # not a probability: split off all the same
        ("Answer: 4", "Answer: 4", None),
        ("Confidence: 0.9\nAnswer: 4", "Confidence: 0.9\nAnswer: 4", None),  # only a last line counts
        ("Answer: 4\nConfidence: high", "Answer: 4\nConfidence: high", None),
        ("Confidence: 0.3", "", 0.3),
    ],
)
def test_the_last_confidence_line_is_split_off(text, body, confidence):
    assert split_confidence(text) == (body, confidence)


def test_brier_reward_by_hand():
    assert brier_reward(0.8, True) == pytest.approx(-0.04)
    assert brier_reward(0.8, False) == pytest.approx(-0.64)
    assert brier_reward(0.0, False) == 0.0
    assert brier_reward(None, True) == -1.0  # stating nothing is the worst


def test_the_rubric_scores_the_answer_without_its_confidence_and_adds_the_brier_term():
    rubric = Rubric({"correct": 1.0, "format": 0.1}, confidence=True, brier_weight=0.5)
    problem = Problem("2 + 2?", "4")
    score = rubric.score("Answer: 4\nConfidence: 0.9", problem)
    assert score.components == {"correct": 1.0, "format": 1.0, "brier": pytest.approx(-0.01)}
    assert score.info["confidence"] == 0.9
    assert score.total == pytest.approx(1.0 + 0.1 - 0.5 * 0.01)
    # Without an Answer line the math verifier reads the last number: the confidence, were it not split off.
    prose = "The sum is 4.\nConfidence: 0.9"
    assert Rubric({"correct": 1.0}).score(prose, problem).components["correct"] == 0.0
    assert Rubric({"correct": 1.0}, confidence=True).score(prose, problem).components["correct"] == 1.0
    unstated = rubric.score("Answer: 5", problem)
    assert unstated.components["brier"] == -1.0 and "confidence" not in unstated.info
    assert rubric.failed("timed out").components == {"correct": 0.0, "format": 0.0, "brier": 0.0}


def test_the_config_asks_for_the_confidence_in_the_prompt_and_checks_the_brier_weight():
    env = make_env(load_config(None, ["env.confidence=true", "env.brier_weight=1.0"]).env)
    assert env.messages(env.eval_problems()[0])[0]["content"].endswith(CONFIDENCE_INSTRUCTION)
    assert env.rubric.confidence and env.rubric.brier_weight == 1.0
    assert CONFIDENCE_INSTRUCTION not in make_env(load_config(None, []).env).messages(env.eval_problems()[0])[0]["content"]
    with pytest.raises(ConfigError, match="brier_weight scores a stated confidence: set confidence: true too"):
        load_config(None, ["env.brier_weight=1.0"])


def test_reliability_ece_and_brier_by_hand():
    confidences, correct = [0.95, 0.9, 0.15, 0.5], [True, False, False, True]
    rows = reliability(confidences, correct)
    assert [(r["range"], r["answers"]) for r in rows] == [([0.1, 0.2], 1), ([0.5, 0.6], 1), ([0.9, 1.0], 2)]
    assert rows[2]["confidence"] == pytest.approx(0.925) and rows[2]["accuracy"] == 0.5
    # |0 - .15| / 4 + |1 - .5| / 4 + |.5 - .925| * 2 / 4
    assert expected_calibration_error(rows) == pytest.approx(0.0375 + 0.125 + 0.2125)
    assert reliability([1.0], [True])[0]["range"] == [0.9, 1.0]  # a sure answer is in the top bin

    samples = [Sample("q", "", 0, 1, False, False, 0.0, correct=y, confidence=c) for c, y in zip(confidences, correct)]
    samples.append(Sample("q", "", 0, 1, False, False, 0.0, correct=True))  # stated nothing
    summary = calibration_summary(samples)
    assert summary["stated_rate"] == 0.8 and summary["answers"] == 4
    assert summary["ece"] == pytest.approx(0.375)
    assert summary["brier"] == pytest.approx((0.05**2 + 0.9**2 + 0.15**2 + 0.5**2) / 4)
    assert summary["mean_confidence"] == pytest.approx(0.625) and summary["accuracy"] == 0.5
    assert calibration_summary(samples[4:]) == {"stated_rate": 0.0, "answers": 0}


def test_an_evaluation_records_each_confidence_votes_without_it_and_reports_calibration():
    rubric = Rubric({"correct": 1.0}, confidence=True)
    problems = [Problem("a", "4"), Problem("b", "7")]
    samples = [
        Sample.generated("p", "It is 4.\nConfidence: 0.9", 0, 6, False, False, []),
        Sample.generated("p", "It is 8.\nConfidence: 60%", 0, 6, False, False, []),
    ]
    _verify(Scorer(rubric, workers=0), problems, samples, EvalSettings(), max_tokens=32)
    assert [(s.correct, s.confidence, s.extracted) for s in samples] == [(True, 0.9, "4"), (False, 0.6, "8")]
    summary = metrics(problems, samples, EvalSettings(resamples=100), 1.0, calibration=True)
    assert summary["calibration"]["brier"] == pytest.approx((0.1**2 + 0.6**2) / 2)
    report = markdown({**summary, "samples_per_question": 1})
    assert "## Calibration (stated confidence)" in report and "| 0.9-1.0 | 1 | 90.0% | 100.0% |" in report
    assert "reliability" in plots(summary, samples)
    assert "calibration" not in metrics(problems, samples, EvalSettings(resamples=100), 1.0)


def test_a_steps_calibration_metrics_by_hand():
    def episode(correct, info):
        return Episode([0], [1], [0.0], [1], rewards={"correct": float(correct)}, meta={"score_info": info})

    episodes = [episode(True, {"confidence": 0.75}), episode(False, {"confidence": 0.25}), episode(True, {})]
    assert calibration_metrics(episodes) == {
        "calibration/stated_rate": pytest.approx(2 / 3),
        "calibration/mean_confidence": 0.5,
        "calibration/brier": pytest.approx((0.25**2 + 0.25**2) / 2),
    }
    assert calibration_metrics(episodes[2:]) == {"calibration/stated_rate": 0.0}
