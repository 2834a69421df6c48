"""The figures the runs save (and the report draws again): names as written elsewhere, whole-number
epoch and step ticks, residuals that show a fine fit."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from raw2logit.report.figures import (
    RESIDUAL_PERCENTILE,
    draw_curves,
    draw_heatmap,
    draw_over_epochs,
    draw_residuals,
    draw_signature,
    residual_figure,
)


def tick_labels(axis) -> list[str]:
    return [label.get_text() for label in axis.get_ticklabels()]


def visible_ticks(ax, axis: str = "x") -> np.ndarray:
    ax.figure.canvas.draw()
    low, high = ax.get_xlim() if axis == "x" else ax.get_ylim()
    ticks = ax.get_xticks() if axis == "x" else ax.get_yticks()
    return ticks[(ticks >= low) & (ticks <= high)]


def test_heatmap_labels_are_the_pipeline_and_corruption_names(synthesis_template):
    folder = synthesis_template / "synthesis"
    matrix, corruptions = (
        pd.read_csv(folder / f"{name}.csv", index_col=0) for name in ("matrix", "corruptions")
    )
    fig = draw_heatmap(matrix, None, corruptions, None, "accuracy")
    left, right = fig.axes[:2]
    assert tick_labels(left.xaxis) == list(matrix.columns)  # bi_s_me, not bi,s,me
    assert tick_labels(left.yaxis) == list(matrix.index)
    assert tick_labels(right.xaxis) == list(corruptions.columns) and "gaussian_noise" in corruptions.columns
    assert not any(label.get_visible() for label in right.get_yticklabels())  # the rows are labelled once
    plt.close(fig)


def test_heatmap_ranks_ties_as_the_report_tables_do():
    matrix = pd.DataFrame({"bi_s_me": [0.5, 0.2, 0.2], "ma_u_ga": [0.1, 0.3, 0.3]},
                          index=["bi_s_me", "ma_u_ga", "me_s_ga"])  # fmt: skip
    fig = draw_heatmap(matrix, None, None, None, "accuracy")
    ranks = sorted(t.get_text() for t in fig.axes[0].texts if t.get_text().isdigit())
    assert ranks == ["1", "1", "1", "2", "2", "3"]  # column 1: 1, 2, 2; column 2: 3, 1, 1
    plt.close(fig)


def test_epoch_and_step_axes_have_whole_number_ticks(optimization_template, forensics_template):
    history = pd.read_csv(optimization_template / "optimization" / "history.csv")
    assert history["step"].nunique() > 1
    curves = draw_curves(history, "accuracy")
    ticks = visible_ticks(curves.axes[0])
    assert len(ticks) >= 2 and np.all(ticks == np.round(ticks))
    result = json.loads((forensics_template / "forensics" / "result.json").read_text())
    epochs = [entry["epoch"] for entry in result["history"]]
    assert epochs == [1, 2]  # two epochs: a linear axis would tick at 1.25, 1.5, 1.75
    fig = draw_over_epochs(epochs, [entry["l2"] for entry in result["history"]], "ℓ2")
    ticks = visible_ticks(fig.axes[0])
    assert list(ticks) == [1, 2]
    plt.close("all")


def test_residuals_of_a_59_db_fit_are_visible(tmp_path):
    """A fit at 59 dB PSNR (RMS error 0.0011) has residuals a fixed ×10 would leave black."""
    rng = np.random.default_rng(0)
    target = rng.uniform(0.2, 0.8, size=(32, 32, 3))
    error = 10 ** (-59 / 20)
    fitted = target + rng.normal(0.0, error, size=target.shape)
    assert 10 * np.log10(1 / np.mean((fitted - target) ** 2)) > 58.5
    fig = draw_residuals([("pair", target, fitted)], "a good fit")
    residual = np.asarray(fig.axes[2].images[0].get_array())
    assert residual.mean() > 0.2 and residual.max() == 1.0  # not all black
    assert np.clip(10 * np.abs(fitted - target), 0, 1).mean() < 0.02  # what ×10 showed
    title = fig.axes[2].get_title()
    assert "×" in title and f"{RESIDUAL_PERCENTILE:g}th percentile" in title
    gain = float(title.split("×")[1].split()[0])
    assert 1 / (4 * error) < gain < 1 / error  # the percentile of |N(0, σ)| is a few σ
    plt.close(fig)
    assert residual_figure([("pair", target, fitted)], "a good fit", tmp_path / "r.png").stat().st_size > 0


def test_signature_draws_one_line_per_group(forensics_sweep_template):
    signature = json.loads((forensics_sweep_template / "forensics" / "signature.json").read_text())
    fig = draw_signature(signature["targets"], signature["metric"])
    lines = [line for line in fig.axes[0].get_lines() if line.get_gid()]
    assert [line.get_label() for line in lines] == list(signature["targets"])
    plt.close(fig)
