"""Figures and small image renderings shared by the stages (matplotlib, Agg backend)."""

from __future__ import annotations

import itertools

import matplotlib

matplotlib.use("Agg")  # no display on servers; must precede pyplot

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def kernel_image(kernel: np.ndarray, zoom: int = 16, vmax: float | None = None) -> np.ndarray:
    """A K x K kernel as a visible uint8 RGB picture [K*zoom, K*zoom, 3] (viridis, nearest-neighbour zoom).

    `vmax` fixes the colour scale so several kernels can be compared; default: this kernel's max.
    """
    k = np.asarray(kernel, dtype=np.float64)
    top = float(vmax if vmax is not None else k.max()) or 1.0
    rgb = plt.get_cmap("viridis")(np.clip(k / top, 0, 1))[..., :3]
    rgb = np.repeat(np.repeat(rgb, zoom, axis=0), zoom, axis=1)
    return (rgb * 255 + 0.5).astype(np.uint8)


# The density figure's curves by their names in the figure. L_true, the true LR images, is what
# the verdict's density check judges ours against: a wide pale band under the other curves, so
# that ours can be seen lying on it (or leaving it) rather than hiding it.
DENSITY_STYLES: dict[str, dict] = {
    "real": {"color": "k", "ls": "-", "lw": 1.8},
    "clean": {"color": "0.6", "ls": ":", "lw": 1.8},
    "bicubic": {"color": "tab:red", "ls": "--", "lw": 1.8},
    "ours": {"color": "tab:blue", "ls": "-", "lw": 1.8},
    "oracle": {"color": "tab:green", "ls": "-.", "lw": 1.8},
    "L_true": {"color": "tab:orange", "ls": "-", "lw": 6, "alpha": 0.45, "zorder": 1},
}


def density_figure(freq: np.ndarray, curves: dict[str, np.ndarray], title: str = "Frequency density") -> plt.Figure:
    """Density curves on a log y-axis: one line per named curve, x in cycles/pixel."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for name, values in curves.items():
        ax.semilogy(freq, values, **DENSITY_STYLES.get(name, {"ls": "-", "lw": 1.8}), label=name)
    ax.set_xlabel("radial frequency (cycles / pixel)")
    ax.set_ylabel("share of power (log)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def kernel_gallery(columns: list[tuple[str, np.ndarray]], cell: float = 1.6) -> plt.Figure:
    """Kernels side by side on one shared colour scale (so widths and peaks compare).

    The canvas is sized to what it shows: `cell` inches per kernel, the colour bar's strip and
    one title line per line of the longest title, laid out by matplotlib's compressed layout,
    which closes the gaps around fixed-aspect images (a canvas of fixed proportions leaves a
    one-kernel gallery mostly blank and clips its colour bar's labels)."""
    vmax = max(float(np.max(k)) for _, k in columns)
    title_lines = max(name.count("\n") + 1 for name, _ in columns)
    fig, axes = plt.subplots(1, len(columns), figsize=(cell * len(columns) + 0.75, cell + 0.18 * title_lines + 0.1), dpi=110,
                             squeeze=False, layout="compressed")
    for ax, (name, k) in zip(axes[0], columns):
        im = ax.imshow(k, cmap="viridis", vmin=0, vmax=vmax, interpolation="nearest")
        ax.set_title(name, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.9, pad=0.02)
    return fig


def image_grid(rows: list[list[np.ndarray]], column_titles: list[str]) -> plt.Figure:
    """A grid of RGB images [H, W, 3] in [0, 1]; images in a row are shown at the same size."""
    n_rows, n_cols = len(rows), len(column_titles)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.2 * n_cols, 2.2 * n_rows), dpi=110, squeeze=False)
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            ax = axes[r][c]
            ax.imshow(np.clip(img, 0, 1), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(column_titles[c], fontsize=8)
    fig.tight_layout()
    return fig


def curves_figure(panels: list[tuple[str, np.ndarray, dict[str, np.ndarray]]]) -> plt.Figure:
    """Training curves: one panel per (title, x, {name: y})."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.0 * len(panels), 3.6), dpi=110, squeeze=False)
    for ax, (title, x, ys) in zip(axes[0], panels):
        for name, y in ys.items():
            ax.plot(x, y, label=name, lw=1.4)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def running_mean(x: np.ndarray, window: int) -> np.ndarray:
    """The mean of each value and the window - 1 before it (fewer at the start): a noisy per-step
    training loss drawn so that its trend shows."""
    x = np.asarray(x, dtype=np.float64)
    c = np.concatenate([[0.0], np.cumsum(x)])
    i = np.arange(1, len(x) + 1)
    lo = np.maximum(i - window, 0)
    return (c[i] - c[lo]) / (i - lo)


def save_figure(fig: plt.Figure, path) -> None:
    """Save a figure as PNG atomically and free it."""
    from fca.fsutil import atomic_file

    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def bar_comparison(df, label: str, columns: list[str]) -> plt.Figure:
    """One panel per metric column, one bar per row of `df` (labelled by `label`)."""
    fig, axes = plt.subplots(1, len(columns), figsize=(3.4 * len(columns), 3.2), dpi=110, squeeze=False)
    for ax, col in zip(axes[0], columns):
        ax.bar(df[label].astype(str), df[col], color=["tab:blue", "tab:orange", "tab:green", "tab:red"][: len(df)])
        ax.set_title(col, fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def scatter_figure(x: np.ndarray, series: dict[str, np.ndarray], xlabel: str, ylabel: str, title: str) -> plt.Figure:
    """Predicted against true values: one marker set per named series, and the y = x line."""
    fig, ax = plt.subplots(figsize=(4.6, 4.4), dpi=110)
    lo = min(float(np.min(x)), *(float(np.min(v)) for v in series.values()))
    hi = max(float(np.max(x)), *(float(np.max(v)) for v in series.values()))
    ax.plot([lo, hi], [lo, hi], color="0.5", lw=1, ls="--", label="y = x")
    for (name, y), marker in zip(series.items(), "os^D"):
        r = float(np.corrcoef(x, y)[0, 1]) if len(x) > 2 else float("nan")
        ax.scatter(x, y, s=14, marker=marker, alpha=0.75, label=f"{name} (r = {r:.2f})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def noise_level_figure(brightness: np.ndarray, curves: dict[str, np.ndarray]) -> plt.Figure:
    """Noise variance (per pixel and channel) against brightness: one line per named noise."""
    fig, ax = plt.subplots(figsize=(5.2, 3.6), dpi=110)
    for (name, var), marker in zip(curves.items(), itertools.cycle("os^Dv")):
        style = {"color": "black", "lw": 2.2} if name.startswith("camera") else {"lw": 1.4}  # the reference stands out
        ax.plot(brightness, var, marker=marker, label=name, **style)
    ax.set_xlabel("brightness (luma of the LR signal, bin centre)")
    ax.set_ylabel("noise variance per pixel and channel")
    ax.set_ylim(bottom=0)
    ax.set_title("Noise at each brightness", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def noise_model_figure(brightness: np.ndarray, std: np.ndarray, measured: np.ndarray) -> plt.Figure:
    """G's noise std per channel (rows of std [3, B], in 8-bit levels) at grey pixels of each brightness:
    solid over the brightness range each channel's level was measured over (measured [3, 2]), dashed
    beyond it, where the curve is extrapolated."""
    fig, ax = plt.subplots(figsize=(5.2, 3.6), dpi=110)
    for row, (lo, hi), (name, colour) in zip(np.asarray(std) * 255, np.asarray(measured), (("R", "tab:red"), ("G", "tab:green"), ("B", "tab:blue"))):
        ax.plot(brightness, row, color=colour, lw=1.0, ls="--")
        inside = np.concatenate([[lo], brightness[(brightness > lo) & (brightness < hi)], [hi]])
        ax.plot(inside, np.interp(inside, brightness, row), color=colour, lw=2.2, label=f"{name} (measured {lo:.2f} .. {hi:.2f})")
    ax.set_xlabel("brightness of a grey pixel")
    ax.set_ylabel("noise std (8-bit levels)")
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    ax.set_title("G's noise at each brightness (dashed: extrapolated)", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return fig


def histograms_figure(panels: list[tuple[str, np.ndarray, str]], bins: int = 20) -> plt.Figure:
    """Histograms side by side: one panel per (title, values, x label); counts on the y axis."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.0 * len(panels), 3.2), dpi=110, squeeze=False)
    for ax, (title, values, xlabel) in zip(axes[0], panels):
        values = np.asarray(values, dtype=np.float64)
        ax.hist(values[np.isfinite(values)], bins=bins, color="tab:blue", alpha=0.8)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("images")
        ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def kernel_grid(rows: list[list[np.ndarray]], column_titles: list[str], row_titles: list[str]) -> plt.Figure:
    """Kernels in a grid (one row per image), each row on its own colour scale (its kernels compare)."""
    n_rows, n_cols = len(rows), len(column_titles)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.5 * n_cols + 0.6, 1.5 * n_rows), dpi=110, squeeze=False)
    for r, row in enumerate(rows):
        vmax = max(float(np.max(k)) for k in row)
        for c, k in enumerate(row):
            ax = axes[r][c]
            ax.imshow(k, cmap="viridis", vmin=0, vmax=vmax, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(column_titles[c], fontsize=8)
            if c == 0:
                ax.set_ylabel(row_titles[r], fontsize=7)
    fig.tight_layout()
    return fig
