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
        points = [(row["step"], row[key]) for row in rows if key in row]
        ax.plot([p[0] for p in points], [p[1] for p in points], lw=1)
        ax.set_title(title)
        ax.set_xlabel("step")
    for ax in list(axes.flat)[len(present) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
