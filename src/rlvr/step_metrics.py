"""The names of a run's per-step metrics, in one place: the trainer builds them with these functions, and the run
report, the progress bar and the tool-use collapse monitor read them back with the readers at the bottom, instead
of each re-deriving key names by string convention.

A metrics.jsonl row is flat: `reward`, `accuracy`, ...; per data subset `<subset>/accuracy`, ...; the verifiers'
diagnostics `verify/<name>`; tool use `tools/calls_per_episode`, `tools/<tool>/call_rate`, and per subset
`<subset>/tools/...`; the reward-hacking probes `hack/<probe>/rate` (the share of the episodes it checked that
it flagged), `hack/rate` (flagged by any) and per subset `<subset>/hack/<probe>/rate`; a judge's agreement with a
hard verifier `judge/agreement`, `judge/false_positive_rate`, `judge/false_negative_rate`, `judge/kappa`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rlvr.curriculum import difficulty_of
from rlvr.length_control import EFFORT, TARGET
from rlvr.types import Episode, Problem

_TOOLS = "tools/"
_CALL_RATE = "/call_rate"
_SUBSET_METRICS = ("reward", "accuracy", "response_length", "episodes")
_HACK = "hack/"
_RATE = "/rate"
# Where the scorer leaves each episode's probe verdicts: probe name -> flagged, for the probes that checked it.
PROBES_META = "probes"


def subset_key(subset: str, metric: str) -> str:
    return f"{subset}/{metric}"


def tool_rate_key(tool: str, subset: str | None = None) -> str:
    return f"{subset + '/' if subset else ''}{_TOOLS}{tool}{_CALL_RATE}"


def _by_subset(episodes: Sequence[Episode]) -> dict[str, list[Episode]]:
    subsets: dict[str, list[Episode]] = defaultdict(list)
    for episode in episodes:
        subsets[episode.meta.get("subset", "default")].append(episode)
    return dict(sorted(subsets.items()))


def subset_metrics(episodes: Sequence[Episode], mixed: bool = False) -> dict[str, float]:
    """Reward, accuracy and length per data subset, when the data mixes several (`mixed`: the environment does,
    even if this batch drew from one) or the batch does: a mixture can improve on average while one of its
    subsets collapses."""
    subsets = _by_subset(episodes)
    if len(subsets) < 2 and not mixed:
        return {}
    metrics: dict[str, float] = {}
    for name, members in subsets.items():
        values = (
            float(np.mean([e.reward for e in members])),
            float(np.mean([e.rewards["correct"] == 1.0 for e in members])),
            float(np.mean([e.num_tokens for e in members])),
            len(members),
        )
        metrics.update({subset_key(name, metric): value for metric, value in zip(_SUBSET_METRICS, values)})
        metrics.update(hack_metrics(members, name))
    return metrics


def difficulty_metrics(episodes: Sequence[Episode], problems: Sequence[Problem]) -> dict[str, float]:
    """Accuracy, length and truncation per difficulty (`difficulty/<d>/...`), when the step's problems have one
    (`episode.group` indexes `problems`): what thinking costs and buys as the questions get harder."""
    by_level: dict[float, list[Episode]] = {}
    for episode in episodes if problems else ():  # no problems: a rollout that did not record them
        level = difficulty_of(problems[episode.group])
        if level is not None:
            by_level.setdefault(level, []).append(episode)
    metrics: dict[str, float] = {}
    for level, members in sorted(by_level.items()):
        key = f"difficulty/{level:g}"
        metrics[f"{key}/accuracy"] = float(np.mean([e.rewards["correct"] == 1.0 for e in members]))
        metrics[f"{key}/response_length"] = float(np.mean([e.num_tokens for e in members]))
        metrics[f"{key}/truncated_rate"] = float(np.mean([e.truncated for e in members]))
        metrics[f"{key}/episodes"] = len(members)
    return metrics


def calibration_metrics(episodes: Sequence[Episode]) -> dict[str, float]:
    """The stated confidences of a step (`env.confidence`): the share that stated one, their mean, and their Brier
    score, (confidence - correct)^2, over those that did."""
    stated = [
        (e.meta["score_info"]["confidence"], e.rewards["correct"] == 1.0)
        for e in episodes
        if "confidence" in e.meta.get("score_info", {})
    ]
    metrics = {"calibration/stated_rate": len(stated) / len(episodes) if episodes else 0.0}
    if stated:
        metrics["calibration/mean_confidence"] = float(np.mean([c for c, _ in stated]))
        metrics["calibration/brier"] = float(np.mean([(c - float(y)) ** 2 for c, y in stated]))
    return metrics


def effort_metrics(episodes: Sequence[Episode], problems: Sequence[Problem]) -> dict[str, float]:
    """Per stated effort (`length_control`): its target, the thinking tokens spent (`meta["thinking_tokens"]`) and
    accuracy, as `effort/<level>/...`; nothing when no problem states one."""
    by_level: dict[str, list[Episode]] = {}
    for episode in episodes if problems else ():
        level = problems[episode.group].meta.get(EFFORT)
        if level is not None:
            by_level.setdefault(level, []).append(episode)
    metrics: dict[str, float] = {}
    for level, members in sorted(by_level.items()):
        metrics[f"effort/{level}/target"] = problems[members[0].group].meta[TARGET]
        metrics[f"effort/{level}/thinking_tokens"] = float(np.mean([e.meta["thinking_tokens"] for e in members]))
        metrics[f"effort/{level}/accuracy"] = float(np.mean([e.rewards["correct"] == 1.0 for e in members]))
    return metrics


def difficulties_in(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The difficulties that metrics rows have `difficulty/<d>/...` keys for, easiest first (as the keys spell them)."""
    found = {key.split("/")[1] for row in rows for key in row if key.startswith("difficulty/") and key.count("/") == 2}
    return sorted(found, key=float)


def hack_rate_key(probe: str | None = None, subset: str | None = None) -> str:
    """`hack/<probe>/rate`, or `hack/rate` for any probe; under `<subset>/` for one subset."""
    return f"{subset + '/' if subset else ''}{_HACK}{probe + _RATE if probe else _RATE.lstrip('/')}"


def hack_metrics(episodes: Sequence[Episode], subset: str | None = None) -> dict[str, float]:
    """Each probe's flag rate over the episodes it checked, and the share flagged by any probe (none: no keys)."""
    verdicts = [e.meta[PROBES_META] for e in episodes if e.meta.get(PROBES_META)]
    if not verdicts:
        return {}
    names = sorted({name for verdict in verdicts for name in verdict})
    metrics = {hack_rate_key(None, subset): float(np.mean([any(verdict.values()) for verdict in verdicts]))}
    for name in names:
        metrics[hack_rate_key(name, subset)] = float(np.mean([v[name] for v in verdicts if name in v]))
    return metrics


def verifier_metrics(episodes: Sequence[Episode]) -> dict[str, float]:
    """The verifiers' diagnostics (e.g. `verify/code/pass_fraction`), each averaged over the episodes that report
    it, and how many completions could not be scored (timeouts, crashed workers)."""
    values: dict[str, list[float]] = defaultdict(list)
    for episode in episodes:
        for name, value in episode.meta.get("score_info", {}).items():
            values[name].append(value)
    metrics = {f"verify/{name}": float(np.mean(v)) for name, v in sorted(values.items())}
    metrics["score_errors"] = sum("score_error" in e.meta for e in episodes)
    return {**metrics, **hack_metrics(episodes), **judge_metrics(episodes)}


# What the judge verifier reports in a score's info (so `verify/judge/...` too): its verdict, and where a hard
# verifier checks the same items (`judge.check_against`), that verifier's.
JUDGE_VERDICT = "judge/verdict"
JUDGE_HARD = "judge/hard_correct"


def judge_agreement(pairs: Sequence[tuple[bool, bool]]) -> dict[str, float]:
    """How a soft verifier's verdicts agree with a hard one's on the same items, from (judge says correct, hard
    verifier says correct) pairs: `judge/agreement` (the share where they agree), `judge/false_positive_rate`
    (judged correct among the hard-wrong), `judge/false_negative_rate` (judged wrong among the hard-correct) and
    Cohen's `judge/kappa` (agreement beyond chance). A rate whose denominator is 0 is left out, as is kappa when
    chance alone agrees on every item."""
    if not pairs:
        return {}
    n = len(pairs)
    agree = sum(judge == hard for judge, hard in pairs) / n
    hard_wrong = [judge for judge, hard in pairs if not hard]
    hard_right = [judge for judge, hard in pairs if hard]
    metrics = {"judge/checked": float(n), "judge/agreement": agree}
    if hard_wrong:
        metrics["judge/false_positive_rate"] = sum(hard_wrong) / len(hard_wrong)
    if hard_right:
        metrics["judge/false_negative_rate"] = (len(hard_right) - sum(hard_right)) / len(hard_right)
    judge_yes, hard_yes = sum(judge for judge, _ in pairs) / n, len(hard_right) / n
    chance = judge_yes * hard_yes + (1 - judge_yes) * (1 - hard_yes)
    if chance < 1:
        metrics["judge/kappa"] = (agree - chance) / (1 - chance)
    return metrics


def judge_metrics(episodes: Sequence[Episode]) -> dict[str, float]:
    """`judge/...`: the judge's agreement with the hard verifier over the episodes both scored (none judged or
    none checked: no keys; the judge's own rates are `verify/judge/...`)."""
    infos = [e.meta.get("score_info", {}) for e in episodes]
    return judge_agreement(
        [(i[JUDGE_VERDICT] == 1.0, i[JUDGE_HARD] == 1.0) for i in infos if JUDGE_VERDICT in i and JUDGE_HARD in i]
    )


def tool_rates(stats: Sequence[Mapping[str, Any]], tools: Sequence[str], subset: str | None = None) -> dict[str, float]:
    """The metrics of episodes' tool statistics (`episode.meta["tools"]`, from the tool loop)."""
    prefix = f"{subset}/{_TOOLS}" if subset else _TOOLS
    calls = sum(sum(s["calls"].values()) for s in stats)
    metrics = {
        f"{prefix}calls_per_episode": calls / len(stats),
        f"{prefix}error_rate": sum(s["errors"] for s in stats) / calls if calls else 0.0,
        f"{prefix}turns": float(np.mean([s["turns"] for s in stats])),
        f"{prefix}result_tokens": float(np.mean([s["tool_tokens"] for s in stats])),
    }
    for name in tools:  # the share of episodes that called the tool at least once
        metrics[tool_rate_key(name, subset)] = float(np.mean([s["calls"].get(name, 0) > 0 for s in stats]))
    return metrics


def tool_metrics(episodes: Sequence[Episode], tools: Sequence[str], per_subset: bool = False) -> dict[str, float]:
    """`tools/...` over the batch and, with `per_subset`, `<subset>/tools/...` for each data subset."""
    episodes = [e for e in episodes if "tools" in e.meta]
    if not episodes:
        return {}
    metrics = tool_rates([e.meta["tools"] for e in episodes], tools)
    if per_subset:
        for name, members in _by_subset(episodes).items():
            metrics.update(tool_rates([e.meta["tools"] for e in members], tools, name))
    return metrics


# ---------------------------------------------------------------- readers


def call_rates(row: Mapping[str, Any]) -> dict[str, float]:
    """Tool name -> the share of the step's episodes that called it (overall, not per subset)."""
    return {
        key.removeprefix(_TOOLS).removesuffix(_CALL_RATE): value
        for key, value in row.items()
        if key.startswith(_TOOLS) and key.endswith(_CALL_RATE)
    }


def hack_rates(row: Mapping[str, Any]) -> dict[str, float]:
    """Probe name -> its flag rate this step (overall, not per subset; `hack/rate` excluded)."""
    return {
        key.removeprefix(_HACK).removesuffix(_RATE): value
        for key, value in row.items()
        if key.startswith(_HACK) and key.endswith(_RATE) and key != hack_rate_key()
    }


def tools_in(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The tools whose call rates the rows log."""
    return sorted({tool for row in rows for tool in call_rates(row)})


def subsets_in(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The data subsets the rows log metrics for (a run on mixed data)."""
    suffix = subset_key("", "accuracy")
    keys = {key for row in rows for key in row if key.endswith(suffix) and not key.startswith(SUITE_PREFIX)}
    return sorted(key.removesuffix(suffix) for key in keys)


SUITE_PREFIX = "suite/"  # `train.eval_every`: the regression suite's results in a step's row


def suite_key(evaluation: str, metric: str) -> str:
    return f"{SUITE_PREFIX}{evaluation}/{metric}"


def suite_evals_in(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The regression suite's evaluations the rows log accuracies for."""
    suffix = "/accuracy"
    keys = {key for row in rows for key in row if key.startswith(SUITE_PREFIX) and key.endswith(suffix)}
    return sorted(key.removeprefix(SUITE_PREFIX).removesuffix(suffix) for key in keys)
