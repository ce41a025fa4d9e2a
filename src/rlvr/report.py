"""Plots of a run's curves from metrics.jsonl."""

from __future__ import annotations

from pathlib import Path

from rlvr.step_metrics import (
    difficulties_in,
    subset_key,
    subsets_in,
    suite_evals_in,
    suite_key,
    tool_rate_key,
    tools_in,
)

CURVES = [
    ("reward", "reward"),
    ("accuracy", "train accuracy"),
    ("response_length", "response length (tokens)"),
    ("reasoning/thinking_tokens", "thinking tokens"),
    ("reasoning/reflection_rate", "reflection rate ('wait', 'verify', ...)"),
    ("reasoning/language_mixing_rate", "language-mixing rate"),
    ("curriculum/difficulty", "curriculum difficulty"),
    ("calibration/brier", "Brier score of the stated confidence"),
    ("loss", "loss"),
    ("entropy", "entropy"),
    ("grad_norm", "grad norm"),
    ("tokens_per_second", "tokens/s"),
    ("async/staleness_mean", "staleness (policy versions, mean)"),
    ("async/learner_idle_fraction", "learner idle share (waiting for rollouts)"),
    ("async/rollout_idle_fraction", "rollout workers' idle share"),
]
STALENESS_SHARE = "async/staleness/"  # + lag: the share of a step's episodes that lagged by that many versions
SMOOTHING = 5


def moving_average(values: list[float], window: int = SMOOTHING) -> list[float]:
    """Trailing mean over up to `window` values (shorter at the start)."""
    return [sum(values[max(0, i - window + 1) : i + 1]) / len(values[max(0, i - window + 1) : i + 1]) for i in range(len(values))]


def _series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    return [row["step"] for row in rows if key in row], [row[key] for row in rows if key in row]


def plot_curves(rows: list[dict], path: Path) -> Path | None:
    """A grid of per-step curves, plus train accuracy per subset when the data mixes several; None when there is
    nothing to plot."""
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = [(key, title) for key, title in CURVES if any(key in row for row in rows)]
    subsets, tools, suite = subsets_in(rows), tools_in(rows), suite_evals_in(rows)
    levels = difficulties_in(rows)
    lags = sorted({int(key.removeprefix(STALENESS_SHARE)) for row in rows for key in row if key.startswith(STALENESS_SHARE)})
    panels = len(present) + bool(subsets) + bool(tools) + bool(suite) + 2 * bool(levels) + bool(lags)
    columns = (panels + 1) // 2
    fig, axes = plt.subplots(2, columns, figsize=(4 * columns, 6), squeeze=False)
    for ax, (key, title) in zip(axes.flat, present):
        steps, values = _series(rows, key)
        ax.plot(steps, values, lw=1, alpha=0.5)
        if len(values) >= 2 * SMOOTHING:  # per-step values are noisy: overlay a moving average
            ax.plot(steps, moving_average(values), lw=2, color="C0")
        ax.set_title(title)
        ax.set_xlabel("step")
    if subsets:
        ax = axes.flat[len(present)]
        for subset in subsets:
            steps, values = _series(rows, subset_key(subset, "accuracy"))
            ax.plot(steps, moving_average(values) if len(values) >= 2 * SMOOTHING else values, lw=2, label=subset)
        ax.set_title(f"train accuracy per subset (mean of {SMOOTHING})")
        ax.set_xlabel("step")
        ax.legend(fontsize="small")
    if tools:
        ax = axes.flat[len(present) + bool(subsets)]
        for tool in tools:
            steps, values = _series(rows, tool_rate_key(tool))
            ax.plot(steps, values, lw=2, label=tool)
        ax.set_title("tool call rate (episodes calling it)")
        ax.set_xlabel("step")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize="small")
    if suite:
        ax = axes.flat[len(present) + bool(subsets) + bool(tools)]
        for evaluation in suite:
            steps, values = _series(rows, suite_key(evaluation, "accuracy"))
            ax.plot(steps, values, lw=2, marker="o", label=evaluation)
        ax.set_title("regression suite accuracy (held out)")
        ax.set_xlabel("step")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize="small")
    if levels:  # per difficulty: accuracy, and the tokens it takes
        first = len(present) + bool(subsets) + bool(tools) + bool(suite)
        for ax, metric, title in (
            (axes.flat[first], "accuracy", "train accuracy per difficulty"),
            (axes.flat[first + 1], "response_length", "response length per difficulty"),
        ):
            for level in levels:
                steps, values = _series(rows, f"difficulty/{level}/{metric}")
                ax.plot(steps, values, lw=1.5, marker=".", label=level)
            ax.set_title(title)
            ax.set_xlabel("step")
            ax.legend(fontsize="small", title="difficulty")
    if lags:  # asynchronous: how old the trained episodes were, over the whole run
        ax = axes.flat[panels - 1]
        shares = [sum(row.get(f"{STALENESS_SHARE}{lag}", 0.0) for row in rows) / len(rows) for lag in lags]
        ax.bar([str(lag) for lag in lags], shares)
        ax.set_title("staleness of trained episodes (share)")
        ax.set_xlabel("policy versions behind the learner")
    for ax in list(axes.flat)[panels:]:
        ax.axis("off")
    # Fixed margins, not tight_layout: measuring every label's extent costs seconds per plot, for every run.
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.09, top=0.93, wspace=0.3, hspace=0.45)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
