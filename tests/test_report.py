"""The run report's curves."""

from rlvr.report import moving_average, plot_curves


def test_moving_average_by_hand():
    assert moving_average([1.0, 3.0, 5.0, 7.0], window=2) == [1.0, 2.0, 4.0, 6.0]
    assert moving_average([2.0, 4.0, 6.0], window=5) == [2.0, 3.0, 4.0]


def test_curves_include_a_per_subset_panel(tmp_path):
    rows = [{"step": s, "reward": s / 10, "accuracy": s / 20, "gsm/accuracy": s / 30, "gym/accuracy": 0.5} for s in range(1, 12)]
    path = plot_curves(rows, tmp_path / "curves.png")
    assert path is not None and path.stat().st_size > 10_000
    assert plot_curves([], tmp_path / "none.png") is None


def test_curves_with_a_curriculum_plot_accuracy_and_length_per_difficulty(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from rlvr.step_metrics import difficulties_in

    rows = [
        {"step": s, "reward": 0.1, "curriculum/difficulty": 2 + s // 6, "difficulty/2/accuracy": 0.5,
         "difficulty/2/response_length": 9.0, **({"difficulty/10/accuracy": 0.2} if s > 5 else {})}
        for s in range(1, 12)
    ]  # fmt: skip
    assert difficulties_in(rows) == ["2", "10"]  # by value, not as text
    titles = []
    monkeypatch.setattr(plt, "close", lambda fig: titles.extend(ax.get_title() for ax in fig.axes))
    assert plot_curves(rows, tmp_path / "curves.png") is not None
    assert {"curriculum difficulty", "train accuracy per difficulty", "response length per difficulty"} <= set(titles)


def test_an_asynchronous_runs_curves_show_staleness_idle_time_and_its_histogram(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    rows = [
        {"step": s, "reward": 0.1, "async/staleness_mean": 0.75, "async/staleness/0": 0.25, "async/staleness/1": 0.75,
         "async/learner_idle_fraction": 0.4, "async/rollout_idle_fraction": 0.1}
        for s in range(1, 5)
    ]  # fmt: skip
    bars = {}

    def close(fig):
        for ax in fig.axes:
            if ax.get_title() == "staleness of trained episodes (share)":
                bars.update({p.get_x(): p.get_height() for p in ax.patches})

    monkeypatch.setattr(plt, "close", close)
    assert plot_curves(rows, tmp_path / "curves.png") is not None
    assert sorted(bars.values()) == [0.25, 0.75]  # the run's shares per lag
