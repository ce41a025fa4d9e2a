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
