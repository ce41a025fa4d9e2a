"""Plots of a run's curves from metrics.jsonl."""

from __future__ import annotations

from pathlib import Path

CURVES = [
    ("reward", "reward"),
    ("accuracy", "train accuracy"),
    ("response_length", "response length (tokens)"),
    ("entropy", "entropy"),
    ("grad_norm", "grad norm"),
    ("tokens_per_second", "tokens/s"),
]


SMOOTHING = 5


def plot_curves(rows: list[dict], path: Path) -> Path | None:
    """A grid of per-step curves; returns None when there is nothing to plot."""
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = [(key, title) for key, title in CURVES if any(key in row for row in rows)]
    fig, axes = plt.subplots(2, (len(present) + 1) // 2, figsize=(4 * ((len(present) + 1) // 2), 6), squeeze=False)
    for ax, (key, title) in zip(axes.flat, present):
        steps = [row["step"] for row in rows if key in row]
        values = [row[key] for row in rows if key in row]
        ax.plot(steps, values, lw=1, alpha=0.5)
        if len(values) >= 2 * SMOOTHING:  # per-step values are noisy: overlay a moving average
            window = [
                sum(values[max(0, i - SMOOTHING + 1) : i + 1]) / len(values[max(0, i - SMOOTHING + 1) : i + 1])
                for i in range(len(values))
            ]
            ax.plot(steps, window, lw=2, color="C0")
        ax.set_title(title)
        ax.set_xlabel("step")
    for ax in list(axes.flat)[len(present) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
