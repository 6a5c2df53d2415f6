"""Figures read at a glance: the comparison chart with many variants and a weak first epoch, the confusion
matrix with class names."""

import numpy as np

from mnist_pipeline.core import plots


def test_comparison_plots_validation_error_on_a_log_axis_with_whole_epochs(tmp_path):
    curves = {f"variant-{i}": [0.10 if i == 0 else 0.95, 0.97 + i * 0.002, 0.99 + i * 0.0005] for i in range(9)}
    rows = [{"variant": name, "test_accuracy": curve[-1]} for name, curve in curves.items()]
    fig = plots.comparison_figure(rows, curves)
    lines = fig.axes[1]
    assert lines.get_yscale() == "log" and lines.get_ylabel().startswith("validation error")
    plotted = {line.get_label(): line for line in lines.get_lines()}
    assert list(plotted) == list(curves)
    assert plotted["variant-0"].get_xdata().tolist() == [1, 2, 3]  # epochs counted from 1
    np.testing.assert_allclose(plotted["variant-0"].get_ydata(), [0.90, 0.03, 0.01])
    assert len({line.get_color() for line in plotted.values()}) == 9  # one colour each
    fig.canvas.draw()
    ticks = [t for t in lines.get_xticks() if lines.get_xlim()[0] <= t <= lines.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)  # no ticks at 0.25
    # The weak first epoch (90% error) does not flatten the others: 3% and 1% error lie a fifth of the
    # height apart; on the former linear accuracy axis (0.10 to 1) it was 2% of it.
    low, high = lines.get_ylim()
    assert (np.log10(0.03) - np.log10(0.01)) / (np.log10(high) - np.log10(low)) > 0.15
    assert plots.comparison(rows, curves, tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_the_confusion_matrix_names_the_classes_on_both_axes(tmp_path):
    classes = ["T-shirt/top", "Trouser", "Pullover"]
    fig = plots.confusion_figure(np.array([[5, 1, 0], [0, 6, 0], [2, 0, 4]]), classes, "shallow_cnn-none")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == classes
    assert [t.get_text() for t in ax.get_yticklabels()] == classes
    assert ax.get_xticklabels()[0].get_rotation() == 40  # long names slant instead of overlapping
    assert sorted(t.get_text() for t in ax.texts) == ["1", "2", "4", "5", "6"]  # zero cells stay empty
    digits = plots.confusion_figure(np.eye(10, dtype=int), [str(d) for d in range(10)])
    assert digits.axes[0].get_xticklabels()[0].get_rotation() == 0
    path = plots.confusion_matrix(np.eye(3, dtype=int), tmp_path / "cm.png", classes)
    assert path.read_bytes()[:4] == b"\x89PNG"
