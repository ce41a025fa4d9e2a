"""The probe registry: what a reward-hacking probe is, which episodes it checks, and running the ones that apply.

A probe looks at one scored completion for one known way of earning a reward without doing the task (a program
that exits before its tests run, a hedged "4 or 5", an empty thinking part that still earns the format reward)
and returns a `Finding`. It is tied to what it guards: the verifiers whose problems it checks (`verifiers`, a
problem's `verifier`) and the shaping rewards whose earnings it checks (`rewards`, a rubric's weighted terms).
A judge reward would register its probes with `rewards=("judge",)` the same way.

Probes never raise on model output: a probe that crashes reports the crash in its finding (not flagged), so a
bug in a probe costs its signal, never the episode's reward.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rlvr.registry import Registry
from rlvr.types import Problem


@dataclass(frozen=True)
class Finding:
    """One probe's verdict on one completion: `flagged` when it saw the exploit, `reason` the evidence (short)."""

    probe: str
    flagged: bool
    reason: str = ""
    error: str | None = None  # the probe itself crashed (then never flagged)


@dataclass
class ProbeInput:
    """What a probe sees: the completion, its problem, and the reward components it earned (before weighting).

    Derived views (the parsed program, the extracted answer) are cached here so that the probes of one verifier
    parse a completion once between them.
    """

    text: str
    problem: Problem
    components: Mapping[str, float]
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def verified(self) -> bool:
        """Whether the verifier said correct: the `correct` term, or the verifier's own when a rubric names it."""
        return self.components.get("correct", self.components.get(self.problem.verifier, 0.0)) == 1.0

    def earned(self, rewards: tuple[str, ...]) -> bool:
        return any(self.components.get(name, 0.0) > 0 for name in rewards)


ProbeFn = Callable[[ProbeInput], "Finding | tuple[bool, str]"]


@dataclass(frozen=True)
class Probe:
    name: str
    fn: ProbeFn
    verifiers: tuple[str, ...] = ()  # problems with one of these verifiers are checked
    rewards: tuple[str, ...] = ()  # ... and completions scored by a rubric that weights one of these rewards

    def applies(self, problem: Problem, weights: Mapping[str, float]) -> bool:
        return problem.verifier in self.verifiers or any(weights.get(name, 0.0) != 0 for name in self.rewards)

    def __call__(self, item: ProbeInput) -> Finding:
        try:
            result = self.fn(item)
        except Exception as exc:  # a probe bug must not cost the episode its reward; the finding carries it
            return Finding(self.name, False, error=f"{type(exc).__name__}: {exc}")
        if isinstance(result, Finding):
            return result
        flagged, reason = result
        return Finding(self.name, bool(flagged), reason if flagged else "")


PROBES: Registry[Probe] = Registry("reward-hacking probe")


def register_probe(name: str, verifiers: tuple[str, ...] = (), rewards: tuple[str, ...] = ()) -> Callable[[ProbeFn], ProbeFn]:
    """Register `fn(item: ProbeInput) -> (flagged, reason)` (or a `Finding`) as the probe `name`, run on every
    scored completion whose problem has one of `verifiers` or whose rubric weights one of `rewards`."""
    if not verifiers and not rewards:
        raise ValueError(f"probe {name!r} guards nothing: give the verifiers or rewards it checks")

    def add(fn: ProbeFn) -> ProbeFn:
        PROBES.register(name)(Probe(name, fn, tuple(verifiers), tuple(rewards)))
        return fn

    return add


def run_probes(text: str, problem: Problem, components: Mapping[str, float], weights: Mapping[str, float]) -> list[Finding]:
    """The findings of every registered probe that applies to this completion, in registration order."""
    item = ProbeInput(text, problem, components)
    return [probe(item) for probe in PROBES.values() if probe.applies(problem, weights)]


def hacked(findings: list[Finding]) -> list[str]:
    """The names of the probes that flagged."""
    return [finding.probe for finding in findings if finding.flagged]
