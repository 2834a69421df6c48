"""Figures of the drift controls (matplotlib; no display needed).

Each figure has a ``draw_*`` function that returns the matplotlib ``Figure`` (the report draws some of
them again as inline SVG, tests inspect them) and, where a run writes it as a file, a function that
saves it as PNG and returns the path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

# Demosaicing, sharpening and denoising leave artifacts along the image border (the kernels run off the
# image); a display scale is taken from the interior so they do not set it. Pixels left out: this
# many, or an eighth of the shorter side for small images.
DISPLAY_BORDER = 8
# A residual image is scaled so that this percentile of |difference| (interior, all rows) is full
# brightness: a 59 dB fit (RMS error 0.001) is as visible as a 25 dB one.
RESIDUAL_PERCENTILE = 99.0


def save_png(fig: Figure, path: str | Path, dpi: int = 130, **options) -> Path:
    """Write ``fig`` as a PNG and close it; returns the path."""
    path = Path(path)
    fig.savefig(path, dpi=dpi, **options)
    plt.close(fig)
    return path


def integer_axis(axis) -> None:
    """Ticks only at whole numbers (epochs, steps): no "1.25" epoch."""
    axis.set_major_locator(MaxNLocator(integer=True))


def display_border(height: int, width: int) -> int:
    """How many pixels along each edge a display scale leaves out (``DISPLAY_BORDER`` at most)."""
    return min(DISPLAY_BORDER, min(height, width) // 8)


def interior(images: np.ndarray, spatial_axes: tuple[int, int] = (1, 2)) -> np.ndarray:
    """``images`` without a ``display_border`` along the two ``spatial_axes`` (default: (N, H, W, ...))."""
    height, width = images.shape[spatial_axes[0]], images.shape[spatial_axes[1]]
    border = display_border(height, width)
    if border == 0:
        return images
    index = [slice(None)] * images.ndim
    index[spatial_axes[0]] = slice(border, height - border)
    index[spatial_axes[1]] = slice(border, width - border)
    return images[tuple(index)]


# -- synthesis: the cross-pipeline heatmap (paper Fig. 4/5) -------------------------------------------
def _panel(ax, mean: pd.DataFrame, std: pd.DataFrame | None, title: str, vmin: float, vmax: float):
    """One heatmap: per-cell mean (and std), ranks 1-3 per column, a star on each column's best row."""
    values = mean.to_numpy(dtype=float)
    image = ax.imshow(values, cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
    # As the report's tables rank: ties share the better rank (1 + the rows strictly better).
    finite = np.nan_to_num(values, nan=-np.inf)
    ranks = 1 + (finite[None, :, :] > finite[:, None, :]).sum(axis=1)
    size = 5 if len(mean.index) > 8 or len(mean.columns) > 8 else 7
    for row in range(values.shape[0]):
        for col in range(values.shape[1]):
            if np.isnan(values[row, col]):
                continue
            text = f"{values[row, col]:.2f}"
            if std is not None and not np.isnan(std.iloc[row, col]):
                text += f"\n±{std.iloc[row, col]:.2f}"
            rank = ranks[row, col]
            if rank == 1:
                text = "★" + text
            shade = (values[row, col] - vmin) / max(vmax - vmin, 1e-9)
            colour = "white" if shade < 0.45 else "black"  # readable on the cell's colour
            if rank <= 3:
                ax.text(col + 0.45, row - 0.45, str(rank), ha="right", va="top", fontsize=size, color=colour,
                        fontweight="bold")  # fmt: skip
            ax.text(col, row, text, ha="center", va="center", fontsize=size, color=colour)
    # The names as written everywhere else (bi_s_me, gaussian_noise), so they can be searched for.
    ax.set_xticks(
        range(len(mean.columns)), [str(c) for c in mean.columns], rotation=60, ha="right", fontsize=7
    )
    ax.set_yticks(range(len(mean.index)), [str(r) for r in mean.index], fontsize=7)
    ax.set_xlabel(title, fontsize=8)
    return image


def draw_heatmap(matrix: pd.DataFrame, matrix_std: pd.DataFrame | None, corruptions: pd.DataFrame | None,
                 corruptions_std: pd.DataFrame | None, metric: str) -> Figure:  # fmt: skip
    """The paper's Fig. 4/5 layout: train pipelines (rows) x test pipelines, and x corruptions, on one
    colour scale. Numbers are the mean over folds with the standard deviation below; small digits rank
    the top three train pipelines per column, a star marks the best one."""
    panels = [(matrix, matrix_std, "test data model")]
    if corruptions is not None:
        std = corruptions_std.reindex(columns=corruptions.columns) if corruptions_std is not None else None
        panels.append((corruptions, std, "test corruption (Common Corruptions)"))
    values = np.concatenate([p[0].to_numpy(dtype=float).ravel() for p in panels])
    vmin, vmax = float(np.nanmin(values)), float(np.nanmax(values))
    widths = [max(len(p[0].columns), 2.5) for p in panels]
    fig, axes = plt.subplots(1, len(panels), figsize=(1.6 + 0.62 * sum(widths), 1.4 + 0.5 * len(matrix.index)),
                             gridspec_kw={"width_ratios": widths}, squeeze=False, sharey=True)  # fmt: skip
    for ax, (mean, std, title) in zip(axes[0], panels):
        image = _panel(ax, mean, std, title, vmin, vmax)
    for ax in axes[0][1:]:
        ax.tick_params(labelleft=False)  # the rows are the same train pipelines
    axes[0][0].set_ylabel("train data model")
    fig.suptitle(
        f"{metric}: train data model × test data model / corruption (mean ± std over folds)", fontsize=9
    )
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label=metric)
    return fig


def synthesis_heatmap(matrix: pd.DataFrame, matrix_std: pd.DataFrame, corruptions: pd.DataFrame | None,
                      corruptions_std: pd.DataFrame | None, metric: str, path: Path) -> Path:  # fmt: skip
    """``draw_heatmap`` saved as ``path`` (PNG); returns the path."""
    fig = draw_heatmap(matrix, matrix_std, corruptions, corruptions_std, metric)
    return save_png(fig, path, dpi=150, bbox_inches="tight")


# -- forensics ---------------------------------------------------------------------------------------
def draw_signature(by_target: Mapping[str, Sequence[Mapping]], metric: str) -> Figure:
    """The paper's Fig. 6a: the metric after the search against λ, and against ℓ2, one line per θ group.

    Args:
        by_target: θ group -> runs, each with ``lambda``, ``metric_before``, ``metric_after``, ``l2``
            (as ``assemble_signature`` groups them and ``signature.json`` stores them).
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for number, (target, runs) in enumerate(by_target.items()):
        style = dict(marker="o", linewidth=2.5 if target == "all" else 1.2, label=target)
        left.plot(
            [r["lambda"] for r in runs], [r["metric_after"] for r in runs], **style, gid=f"series-{number}"
        )
        right.plot([max(r["l2"], 1e-12) for r in runs], [r["metric_after"] for r in runs], **style)
    clean = np.mean([r["metric_before"] for runs in by_target.values() for r in runs])
    for ax in (left, right):
        ax.axhline(clean, color="grey", linestyle="--", linewidth=1, label="clean")
        ax.set_xscale("log")
        ax.set_ylabel(f"{metric} after the search")
        ax.grid(alpha=0.3)
    left.set_xlabel("λ (weight of ||V - V~||²)")
    right.set_xlabel("ℓ2 = ||V - V~||² (held-out mean)")
    left.legend(fontsize=7)
    fig.tight_layout()
    return fig


def signature_figure(by_target: dict[str, list[dict]], metric: str, path: Path) -> Path:
    """``draw_signature`` saved as ``path`` (PNG); returns the path."""
    return save_png(draw_signature(by_target, metric), path)


def draw_over_epochs(
    epochs: Sequence[float], values: Sequence[float], quantity: str, xlabel: str = "epoch"
) -> Figure:
    """One quantity of the forensic search (metric, ℓ2, loss) after each epoch; ticks at whole epochs."""
    fig, ax = plt.subplots(figsize=(4.0, 2.6))
    ax.plot(list(epochs), list(values), marker="o", markersize=3, gid="series-0")
    ax.set_title(quantity, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(quantity)
    integer_axis(ax.xaxis)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


# -- views side by side, and residuals ----------------------------------------------------------------
def _show(ax, image, title=None):
    ax.imshow(np.clip(image, 0, 1))
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def draw_comparison(rows: Sequence[tuple[str, np.ndarray, np.ndarray]], labels: tuple[str, str]) -> Figure:
    """Pairs of views side by side with their absolute difference per channel (paper Fig. 6b).

    Args:
        rows: (name, view A (3, H, W), view B (3, H, W)) per image.
        labels: titles of A and B.
    """
    fig, axes = plt.subplots(len(rows), 5, figsize=(11, 2.3 * len(rows)), squeeze=False)
    for row, (name, a, b) in enumerate(rows):
        a, b = np.transpose(a, (1, 2, 0)), np.transpose(b, (1, 2, 0))
        _show(axes[row][0], a, f"{name}: {labels[0]}")
        _show(axes[row][1], b, labels[1])
        difference = np.abs(a - b)
        scale = max(float(difference.max()), 1e-6)
        for channel, colour in enumerate("RGB"):
            ax = axes[row][2 + channel]
            ax.imshow(difference[..., channel], cmap="magma", vmin=0, vmax=scale)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"|A - B| {colour} (max {scale:.3f})", fontsize=8)
    fig.tight_layout()
    return fig


def comparison_figure(
    rows: list[tuple[str, np.ndarray, np.ndarray]], labels: tuple[str, str], path: Path
) -> Path:
    """``draw_comparison`` saved as ``path`` (PNG); returns the path."""
    return save_png(draw_comparison(rows, labels), path, dpi=110)


def residual_gain(examples: Sequence[tuple[str, np.ndarray, np.ndarray]]) -> float:
    """The factor that brings the ``RESIDUAL_PERCENTILE`` of |fitted - target| (interior of every
    example, (H, W, 3) each) to 1; 1 when they are equal."""
    differences = [
        np.abs(interior(np.asarray(f, float)[None] - np.asarray(t, float)[None])) for _, t, f in examples
    ]
    if not differences:
        return 1.0
    high = float(np.percentile(np.concatenate([d.ravel() for d in differences]), RESIDUAL_PERCENTILE))
    return 1.0 / high if high > 0 else 1.0


def draw_residuals(examples: Sequence[tuple[str, np.ndarray, np.ndarray]], title: str) -> Figure:
    """Target, fitted view and gain x |difference| per (name, target, fitted) example, images (H, W, 3) in
    [0, 1]; one gain for all rows (``residual_gain``), stated in the column title."""
    gain = residual_gain(examples)
    fig, axes = plt.subplots(
        max(len(examples), 1), 3, figsize=(8, 2.6 * max(len(examples), 1)), squeeze=False
    )
    for row, (name, target, fitted) in enumerate(examples):
        difference = np.abs(np.asarray(fitted, float) - np.asarray(target, float))
        panels = (target, fitted, np.clip(gain * difference, 0, 1))
        labels = (f"{name}: device", "fitted data model",
                  f"|difference| × {gain:.3g} ({RESIDUAL_PERCENTILE:g}th percentile = full scale)")  # fmt: skip
        for ax, image, label in zip(axes[row], panels, labels):
            _show(ax, image, label)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def residual_figure(examples: Sequence[tuple[str, np.ndarray, np.ndarray]], title: str, path: Path) -> Path:
    """``draw_residuals`` saved as ``path`` (PNG); returns the path."""
    return save_png(draw_residuals(examples, title), path, dpi=110)


# -- optimization: validation curves (paper Fig. 7) -----------------------------------------------------
def draw_curves(history: pd.DataFrame, metric: str) -> Figure:
    """Validation metric against optimisation step, mean ± std over folds, one line per setting.

    Args:
        history: rows of ``step``, ``setting``, ``metric`` (and ``fold``), as ``history.csv`` holds them.
    """
    fig, ax = plt.subplots(figsize=(7, 4))
    for number, (setting, frame) in enumerate(history.groupby("setting", sort=False)):
        stats = frame.groupby("step")["metric"].agg(["mean", "std"]).fillna(0.0)
        ax.plot(stats.index, stats["mean"], marker="o", markersize=3, label=setting, gid=f"series-{number}")
        ax.fill_between(stats.index, stats["mean"] - stats["std"], stats["mean"] + stats["std"], alpha=0.2)
    ax.set_xlabel("optimisation step")
    ax.set_ylabel(f"validation {metric}")
    integer_axis(ax.xaxis)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def curves_figure(history: pd.DataFrame, metric: str, path: Path) -> Path:
    """``draw_curves`` saved as ``path`` (PNG); returns the path."""
    return save_png(draw_curves(history, metric), path)
