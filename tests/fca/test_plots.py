import numpy as np
import pytest

from fca.plots import running_mean


def test_running_mean_averages_each_value_with_the_ones_before_it():
    x = np.array([1.0, 3.0, 5.0, 7.0, 9.0])
    assert np.allclose(running_mean(x, 2), [1.0, 2.0, 4.0, 6.0, 8.0])
    assert np.allclose(running_mean(x, 10), np.cumsum(x) / np.arange(1, 6))  # a window longer than the run: the mean so far
    assert np.array_equal(running_mean(x, 1), x)


def _blank_share(fig) -> float:
    """The share of the saved PNG's pixels that are plain white canvas."""
    import io

    import matplotlib.image as mpimg

    buf = io.BytesIO()
    fig.savefig(buf, format="png")  # as fca.plots.save_figure saves it
    buf.seek(0)
    rgb = mpimg.imread(buf, format="png")[..., :3]
    return float((rgb > 0.99).all(-1).mean())


def test_a_kernel_gallery_is_sized_to_its_kernels_and_keeps_its_colour_bar_labels():
    """The patches stage draws one kernel with a two-line title, the report up to gallery_size + 3."""
    from fca.plots import kernel_gallery

    g = np.exp(-((np.arange(13) - 6.0) ** 2) / 8)
    k = np.outer(g, g) / np.outer(g, g).sum()
    widths = []
    for n, title in ((1, "0: gaussian\nσ_eff 1.41"), (3, "ours, image {}"), (9, "ours, image {}")):
        fig = kernel_gallery([(title.format(i), k) for i in range(n)])
        fig.canvas.draw()
        widths.append(fig.get_size_inches()[0])
        right = fig.bbox.x1
        labels = [t for ax in fig.axes for t in ax.get_yticklabels() if t.get_text()]
        assert labels and all(t.get_window_extent().x1 <= right for t in labels), f"{n} kernels: a colour bar label is cut off"
        assert _blank_share(fig) < 0.4, f"{n} kernels: mostly empty canvas"
    assert widths[2] - widths[1] == pytest.approx(3 * (widths[1] - widths[0]))  # the same width per kernel


def test_the_density_figure_draws_l_true_as_the_reference_under_the_other_curves():
    from fca.plots import density_figure

    freq = np.linspace(0.02, 0.5, 8)
    fig = density_figure(freq, {name: np.full(8, 0.1) for name in ("real", "bicubic", "ours", "oracle", "L_true")})
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert set(lines) == {"real", "bicubic", "ours", "oracle", "L_true"}
    others = [line for name, line in lines.items() if name != "L_true"]
    assert all(lines["L_true"].get_linewidth() > 2 * line.get_linewidth() for line in others)
    assert all(lines["L_true"].get_zorder() < line.get_zorder() for line in others)
    assert lines["ours"].get_color() == "tab:blue" and lines["ours"].get_linestyle() == "-"
