"""Reward-hacking probes: per verifier, checks run on every scored completion that flag known exploits.

`base` holds the registry (`register_probe`, `PROBES`, `Finding`, `run_probes`); the built-in probes register
themselves per family: `code` (programs that attack their tests, and tests too weak to tell), `answers` (several
answers where one is asked for) and `thinking` (a format reward earned with an empty or copied thinking part).
`monitor` is the alarm on their per-step rates.
"""

from rlvr.rewards.probes import answers, code, flattery, thinking  # noqa: F401  (they register themselves)
from rlvr.rewards.probes.base import PROBES, Finding, Probe, ProbeInput, hacked, register_probe, run_probes
from rlvr.rewards.probes.monitor import HackMonitor

__all__ = ["PROBES", "Finding", "HackMonitor", "Probe", "ProbeInput", "hacked", "register_probe", "run_probes"]
