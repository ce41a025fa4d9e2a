"""Evaluation: avg@n, pass@k, maj@k and best-of-k with confidence intervals, compute and thinking budgets."""

from rlvr.eval.runner import evaluate, run_eval
from rlvr.eval.sample import Sample
from rlvr.eval.settings import EvalSettings

__all__ = ["EvalSettings", "Sample", "evaluate", "run_eval"]
