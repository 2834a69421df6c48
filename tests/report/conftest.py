"""Artifact folders as the modes write them, built directly (no training): one per mode.

The synthesis folder follows ``raw2logit.controls.synthesis.assemble``'s format: per-fold cell
values -> mean/std over folds in ``matrix.csv`` / ``matrix_std.csv`` (index ``train``), a
``corruptions.csv`` with ``clean`` first (its std file has no ``clean``), ``ranking.csv``,
``best_train_per_test.csv``, ``heatmap.png`` and ``summary.json``. Values are realistic
accuracies: about 0.93 on a model's own pipeline, 0.75-0.85 off it, 0.4-0.8 under corruptions.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

from raw2logit.isp import STATIC_PIPELINE_NAMES, CameraParams, StaticPipeline
from raw2logit.report.figures import synthesis_heatmap
from raw2logit.report.stages import save_stage_figure

CORRUPTIONS = ("gaussian_noise", "shot_noise", "motion_blur", "contrast", "jpeg_compression")
FOLDS = 3


def small_png(path: Path, title: str) -> Path:
    """A real, small matplotlib PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(2.4, 1.6))
    ax.plot([0, 1, 2, 3], [0.5, 0.7, 0.65, 0.9])
    ax.set_title(title, fontsize=7)
    fig.savefig(path, dpi=60)
    plt.close(fig)
    return path


def write_provenance(directory: Path, mode: str) -> None:
    run = {
        "seed": 7,
        "config": {"mode": mode, "seed": 7, "folds": FOLDS},
        "packages": {"raw2logit": "0.1.0", "torch": torch.__version__, "numpy": np.__version__, "mlflow": None},
        "git_commit": "0123456789abcdef0123456789abcdef01234567-dirty",
        "python": "3.11.2",
        "platform": "Linux-6.1-x86_64",
        "command": f"run.py mode={mode} seed=7",
        "started": "2025-01-01T12:00:00+0000",
        "mlflow_run_id": "a1b2c3",
        "tracking_uri": "sqlite:///outputs/mlflow.db",
    }
    (directory / "run.json").write_text(json.dumps(run, indent=2))
    (directory / "config.yaml").write_text(f"mode: {mode}\nseed: 7\nfolds: {FOLDS}\nlambda: 0.001\n")


def write_stage_figure(directory: Path) -> Path:
    raw = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    return save_stage_figure(StaticPipeline("bi_s_me", CameraParams.published("microscopy")), raw, directory / "stages.png")


def write_synthesis(directory: Path, seed: int = 0) -> Path:
    """A synthesis run folder in ``assemble``'s format; returns ``directory``."""
    rng = np.random.default_rng(seed)
    names = list(STATIC_PIPELINE_NAMES)
    folder = directory / "synthesis"
    folder.mkdir(parents=True, exist_ok=True)
    base = np.where(np.eye(len(names), dtype=bool), 0.93, rng.uniform(0.75, 0.85, (len(names), len(names))))
    per_fold = np.clip(base[None] + rng.normal(0, 0.02, (FOLDS, len(names), len(names))), 0, 1)
    corrupted = np.clip(rng.uniform(0.4, 0.8, (1, len(names), len(CORRUPTIONS))) + rng.normal(0, 0.03, (FOLDS, len(names), len(CORRUPTIONS))), 0, 1)  # fmt: skip
    matrix = pd.DataFrame(per_fold.mean(0), index=names, columns=names)
    matrix_std = pd.DataFrame(per_fold.std(0), index=names, columns=names)
    corruptions = pd.DataFrame(corrupted.mean(0), index=names, columns=list(CORRUPTIONS))
    corruptions_std = pd.DataFrame(corrupted.std(0), index=names, columns=list(CORRUPTIONS))
    corruptions.insert(0, "clean", np.diag(matrix.to_numpy()))
    for frame, name in ((matrix, "matrix"), (matrix_std, "matrix_std"), (corruptions, "corruptions"),
                        (corruptions_std, "corruptions_std")):  # fmt: skip
        frame.to_csv(folder / f"{name}.csv", index_label="train")
    ranking = pd.DataFrame({"average": matrix.mean(axis=1), "average_corrupted": corruptions[list(CORRUPTIONS)].mean(axis=1)})
    ranking = ranking.sort_values("average", ascending=False)
    ranking.insert(0, "rank", np.arange(1, len(ranking) + 1))
    ranking.to_csv(folder / "ranking.csv", index_label="train")
    best = {test: str(matrix[test].idxmax()) for test in names}
    pd.DataFrame({"best_train": best, "accuracy": {t: matrix.loc[best[t], t] for t in names}}).to_csv(
        folder / "best_train_per_test.csv", index_label="test"
    )
    values = matrix.to_numpy()
    diagonal, off = np.diag(values), values[~np.eye(len(names), dtype=bool)]
    summary = {
        "mode": "synthesis",
        "metric": "accuracy",
        "cells": FOLDS * len(names),
        "folds": list(range(FOLDS)),
        "train_pipelines": names,
        "test_pipelines": names,
        "isp": {"train": float(diagonal.mean()), "test": float(off.mean())},
        "best_train_pipeline": str(ranking.index[0]),
        "best_train_per_test": best,
        "corruptions": {
            "severity": 3,
            "train": float(corruptions["clean"].mean()),
            "test": float(corruptions[list(CORRUPTIONS)].to_numpy().mean()),
        },
    }
    summary["isp"]["change"] = summary["isp"]["test"] - summary["isp"]["train"]
    summary["corruptions"]["change"] = summary["corruptions"]["test"] - summary["corruptions"]["train"]
    (directory / "summary.json").write_text(json.dumps(summary, indent=2))
    synthesis_heatmap(matrix, matrix_std, corruptions, corruptions_std, "accuracy", folder / "heatmap.png")
    write_provenance(directory, "synthesis")
    write_stage_figure(directory)
    return directory


def forensics_result() -> dict:
    rng = np.random.default_rng(1)
    history = [
        {"epoch": e, "metric": 0.92 - 0.1 * e, "l2": 0.002 * e, "loss": -0.5 - 0.3 * e + 0.001 * e} for e in range(6)
    ]
    theta_before = {"white_balance": [1.0, 1.2, 1.5], "gamma": [2.2], "colour_matrix": np.eye(3).tolist()}
    theta_after = {
        "white_balance": [1.1, 1.15, 1.7],
        "gamma": [2.6],
        "colour_matrix": (np.eye(3) + rng.normal(0, 0.05, (3, 3))).tolist(),
    }
    return {
        "lambda": 0.001,
        "target": "all",
        "regularizer": "l2",
        "metric": "accuracy",
        "metric_before": 0.9175,
        "metric_after": 0.4125,
        "l2": 0.0123,
        "theta_before": theta_before,
        "theta_after": theta_after,
        "history": history,
    }


def write_forensics(directory: Path, sweep: bool = False) -> Path:
    folder = directory / "forensics"
    folder.mkdir(parents=True, exist_ok=True)
    result = forensics_result()
    (folder / "result.json").write_text(json.dumps(result, indent=2))
    small_png(folder / "samples.png", "forensics samples")
    summary = {"mode": "forensics", "metric": "accuracy", "lambda": 0.001, "target": "all",
               "metric_before": result["metric_before"], "metric_after": result["metric_after"], "l2": result["l2"]}  # fmt: skip
    (directory / "summary.json").write_text(json.dumps(summary, indent=2))
    if sweep:
        signature = [
            {"lambda": lam, "target": target, "metric_after": 0.4 + 0.1 * i, "l2": 0.01 * (i + 1)}
            for i, (lam, target) in enumerate([(0.1, "all"), (0.01, "all"), (0.1, "gamma"), (0.01, "gamma")])
        ]
        (folder / "signature.json").write_text(json.dumps(signature, indent=2))
        (folder / "signature.md").write_text("| λ | target |\n|---|---|\n| 0.1 | all |\n")
        small_png(folder / "signature.png", "signature")
    write_provenance(directory, "forensics")
    write_stage_figure(directory)
    return directory


def write_optimization(directory: Path) -> Path:
    folder = directory / "optimization"
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        {"step": step, "setting": setting, "fold": fold, "metric": 0.5 + 0.05 * step + (0.05 if setting == "learned" else 0) + 0.01 * fold}  # fmt: skip
        for setting in ("frozen", "learned", "raw")
        for fold in range(FOLDS)
        for step in range(0, 50, 10)
    ]
    pd.DataFrame(rows).to_csv(folder / "history.csv", index=False)
    small_png(folder / "curves.png", "curves")
    small_png(folder / "samples.png", "samples")
    theta = {"theta": {"gamma": [2.31], "white_balance": [1.0, 1.1, 1.3]}, "camera": {"pattern": "RGGB"}}
    (folder / "theta.json").write_text(json.dumps(theta))
    summary = {
        "mode": "optimization",
        "metric": "accuracy",
        "settings": {
            "frozen": {"mean": 0.7712, "std": 0.0123},
            "learned": {"mean": 0.8234, "std": 0.0101},
            "raw": {"mean": 0.6543, "std": 0.0321},
        },
    }
    (directory / "summary.json").write_text(json.dumps(summary, indent=2))
    write_provenance(directory, "optimization")
    return directory


def write_calibration(directory: Path) -> Path:
    folder = directory / "calibration"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "fit.json").write_text(json.dumps({"white_balance": [1.0, 1.2, 1.4], "residual_rms": 0.0123}))
    pd.DataFrame({"variant": ["bi_s_ga", "ma_s_ga"], "residual_rms": [0.0123, 0.0234]}).to_csv(
        folder / "variants.csv", index=False
    )
    small_png(folder / "residuals.png", "residuals")
    (directory / "summary.json").write_text(json.dumps({"mode": "calibrate", "residual_rms": 0.0123}))
    return directory


@pytest.fixture(scope="session")
def synthesis_template(tmp_path_factory) -> Path:
    """A complete synthesis run folder, shared read-only; copy it before changing anything."""
    return write_synthesis(tmp_path_factory.mktemp("synthesis_run"))


@pytest.fixture
def synthesis_run(synthesis_template, tmp_path) -> Path:
    """A private copy of the synthesis run folder."""
    return Path(shutil.copytree(synthesis_template, tmp_path / "run"))
