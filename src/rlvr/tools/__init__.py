"""Tools that model-written programs run through: a hardened sandbox for untrusted Python."""

from rlvr.tools.sandbox import IsolationInfo, SandboxLimits, SandboxResult, isolation, run_file, run_python

__all__ = ["IsolationInfo", "SandboxLimits", "SandboxResult", "isolation", "run_file", "run_python"]
