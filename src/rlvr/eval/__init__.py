"""Evaluation: held-out accuracy with confidence intervals."""

from rlvr.eval.accuracy import evaluate, wilson_interval

__all__ = ["evaluate", "wilson_interval"]
