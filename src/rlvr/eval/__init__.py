"""Evaluation: avg@n, pass@k, maj@k and best-of-k with confidence intervals, compute and thinking budgets."""

from rlvr.eval.runner import EvalSettings, evaluate, run_eval

__all__ = ["EvalSettings", "evaluate", "run_eval"]
