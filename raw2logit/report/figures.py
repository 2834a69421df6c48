"""Figures of the drift controls (matplotlib, written to files; no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd


def _panel(ax, mean: pd.DataFrame, std: pd.DataFrame | None, title: str, vmin: float, vmax: float, cmap: str):
    """One heatmap: per-cell mean (and std), ranks 1-3 per column, a star on each column's best row."""
    values = mean.to_numpy(dtype=float)
    image = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ranks = (-np.nan_to_num(values, nan=-np.inf)).argsort(axis=0).argsort(axis=0) + 1
    small = len(mean.index) > 8 or len(mean.columns) > 8
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
            if rank <= 3:
                ax.text(col + 0.45, row - 0.45, str(rank), ha="right", va="top", fontsize=5 if small else 7,
                        color="black", fontweight="bold")  # fmt: skip
            shade = (values[row, col] - vmin) / max(vmax - vmin, 1e-9)
            ax.text(col, row, text, ha="center", va="center", fontsize=5 if small else 7,
                    color="white" if shade < 0.45 else "black")  # fmt: skip
    ax.set_xticks(
        range(len(mean.columns)),
        [c.replace("_", ",") for c in mean.columns],
        rotation=60,
        ha="right",
        fontsize=7,
    )
    ax.set_yticks(range(len(mean.index)), [r.replace("_", ",") for r in mean.index], fontsize=7)
    ax.set_title(title, fontsize=9)
    return image


def synthesis_heatmap(
    matrix: pd.DataFrame,
    matrix_std: pd.DataFrame,
    corruptions: pd.DataFrame | None,
    corruptions_std: pd.DataFrame | None,
    metric: str,
    path: Path,
) -> Path:
    """The paper's Fig. 4/5 layout: train pipelines (rows) x test pipelines, and x corruptions.

    Numbers are the mean over folds with the standard deviation below; small digits rank the
    top three train pipelines per column, a star marks the best one.
    """
    panels = [(matrix, matrix_std, "test data model (ISP)")]
    if corruptions is not None:
        std = corruptions_std.reindex(columns=corruptions.columns) if corruptions_std is not None else None
        panels.append((corruptions, std, "test corruption (Common Corruptions)"))
    values = np.concatenate([p[0].to_numpy(dtype=float).ravel() for p in panels])
    vmin, vmax = float(np.nanmin(values)), float(np.nanmax(values))
    widths = [len(p[0].columns) for p in panels]
    fig, axes = plt.subplots(1, len(panels), figsize=(1.0 + 0.62 * sum(widths), 1.2 + 0.5 * len(matrix.index)),
                             gridspec_kw={"width_ratios": widths}, squeeze=False)  # fmt: skip
    for ax, (mean, std, title) in zip(axes[0], panels):
        image = _panel(ax, mean, std, title, vmin, vmax, "viridis")
    axes[0][0].set_ylabel("train data model")
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label=metric)
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return path


def signature_figure(by_target: dict[str, list[dict]], metric: str, path: Path) -> Path:
    """The paper's Fig. 6a: the metric against λ per parameter group, and ℓ2 against the metric."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for target, runs in by_target.items():
        lambdas = [r["lambda"] for r in runs]
        after = [r["metric_after"] for r in runs]
        style = dict(marker="o", linewidth=2.5 if target == "all" else 1.2, label=target)
        left.plot(lambdas, after, **style)
        right.plot([max(r["l2"], 1e-12) for r in runs], after, **style)
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
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def _show(ax, image, title=None):
    ax.imshow(np.clip(image, 0, 1))
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def comparison_figure(
    rows: list[tuple[str, np.ndarray, np.ndarray]], labels: tuple[str, str], path: Path
) -> Path:
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
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def curves_figure(history: pd.DataFrame, metric: str, path: Path) -> Path:
    """Validation metric against optimisation step, mean ± std over folds, one line per setting (Fig. 7)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for setting, frame in history.groupby("setting", sort=False):
        stats = frame.groupby("step")["metric"].agg(["mean", "std"]).fillna(0.0)
        ax.plot(stats.index, stats["mean"], label=setting)
        ax.fill_between(stats.index, stats["mean"] - stats["std"], stats["mean"] + stats["std"], alpha=0.2)
    ax.set_xlabel("optimisation step")
    ax.set_ylabel(f"validation {metric}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path
