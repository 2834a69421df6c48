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
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

from raw2logit.controls.optimization import table2
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
        "packages": {
            "raw2logit": "0.1.0",
            "torch": torch.__version__,
            "numpy": np.__version__,
            "mlflow": None,
        },
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
    return save_stage_figure(
        StaticPipeline("bi_s_me", CameraParams.published("microscopy")), raw, directory / "stages.png"
    )


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
    ranking = pd.DataFrame(
        {"average": matrix.mean(axis=1), "average_corrupted": corruptions[list(CORRUPTIONS)].mean(axis=1)}
    )
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


def theta_dict(gamma: float = 2.2, gains=(1.0, 1.2, 1.5), offset: float = 0.0) -> dict:
    """θ as ``ParametrizedPipeline.theta_dict`` writes it (a few groups, ``pattern`` included)."""
    return {
        "black_level": [0.01, 0.01, 0.01, 0.01],
        "white_balance": list(gains),
        "colour_matrix": (np.eye(3) + offset).tolist(),
        "gamma": gamma,
        "pattern": "RGGB",
    }


def forensics_result(lam: float = 0.001, target: str = "all", drop: float = 0.505) -> dict:
    """A ``forensics/result.json`` record as ``run_search`` returns it."""
    before = 0.9175
    history = [
        {"epoch": e, "metric": before - drop * e / 5, "l2": 0.002 * e, "loss": -0.5 - 0.3 * e,
         "theta": theta_dict(2.2 + 0.08 * e)}
        for e in range(6)
    ]  # fmt: skip
    return {
        "lambda": lam,
        "target": target,
        "groups": ["black_level", "white_balance", "colour_matrix", "gamma"] if target == "all" else [target],
        "regularizer": "l2",
        "metric": "accuracy",
        "metric_before": before,
        "metric_after": before - drop,
        "metric_drop": drop,
        "l2": 0.0123,
        "l2_per_pixel": 0.0123 / 768,
        "theta_before": theta_dict(),
        "theta_after": theta_dict(2.6, (1.1, 1.15, 1.7), 0.01),
        "unchanged_groups": ["demosaic", "sharpen", "denoise"],
        "epochs": 5,
        "plausible_projection": False,
        "history": history,
        "seconds": 12.5,
    }


def signature(results: list[dict]) -> dict:
    """``forensics/signature.json`` in ``assemble_signature``'s format."""
    targets = {}
    for result in results:
        targets.setdefault(result["target"], []).append(
            {k: result[k] for k in ("lambda", "metric_before", "metric_after", "metric_drop", "l2")}
        )
    limits = {
        "gamma": {"clean_metric": 0.9175, "tolerance": 0.02, "theta_stat": 2.2, "safe_min": 1.9, "safe_max": 2.45,
                  "largest_safe_change": 0.25, "smallest_unsafe_change": 0.4, "worst_metric": 0.41}
    }  # fmt: skip
    return {"metric": "accuracy", "tolerance": 0.02, "targets": targets, "sensitivity": {"gamma": 12.5},
            "ranking": ["gamma"], "limitations_of_use": limits}  # fmt: skip


def write_forensics(directory: Path, sweep: bool = False) -> Path:
    """A forensics run folder; ``sweep=True`` adds the sweep's signature files."""
    folder = directory / "forensics"
    folder.mkdir(parents=True, exist_ok=True)
    result = forensics_result()
    (folder / "result.json").write_text(json.dumps(result, indent=2))
    small_png(folder / "samples.png", "forensics samples")
    keys = ("lambda", "target", "regularizer", "metric", "metric_before", "metric_after", "l2")
    summary = {"mode": "forensics", **{k: result[k] for k in keys}}
    if sweep:
        runs = [forensics_result(lam, target, drop) for lam, target, drop in
                [(0.1, "all", 0.1), (0.01, "all", 0.3), (0.1, "gamma", 0.05), (0.01, "gamma", 0.2)]]  # fmt: skip
        document = signature(runs)
        (folder / "signature.json").write_text(json.dumps(document, indent=2))
        (folder / "signature.md").write_text("# Forensic signature: limitations of use\n\n| rank | group |\n")
        small_png(folder / "signature.png", "signature")
        summary = {"mode": "forensics", "sweep": True, "runs": len(runs), "metric": "accuracy",
                   "ranking": document["ranking"], "sensitivity": document["sensitivity"]}  # fmt: skip
    (directory / "summary.json").write_text(json.dumps(summary, indent=2))
    write_provenance(directory, "forensics")
    write_stage_figure(directory)
    return directory


def write_optimization(directory: Path, sweep: bool = False) -> Path:
    """An optimization run folder (one setting), or a sweep folder comparing three settings."""
    folder = directory / "optimization"
    folder.mkdir(parents=True, exist_ok=True)
    settings = (("frozen (I=0.01)", 0.5), ("learned (I=0.01)", 0.55), ("direct raw (I=0.01)", 0.42))
    settings = settings if sweep else settings[1:2]
    rows = [
        {"step": step, "setting": setting, "fold": fold, "metric": start + 0.006 * step + 0.01 * fold}
        for setting, start in settings
        for fold in range(FOLDS)
        for step in range(0, 50, 10)
    ]
    history = pd.DataFrame(rows, columns=["step", "setting", "fold", "metric"])
    history.to_csv(folder / "history.csv", index=False)
    stats = table2(history)
    summary = {"mode": "optimization", "metric": "accuracy", "table2": stats}
    if sweep:
        summary["sweep"] = True
        pd.DataFrame(stats).T.to_csv(folder / "comparison.csv", index_label="setting")
        small_png(folder / "comparison.png", "comparison")
    else:
        summary.update({"setting": settings[0][0], "data_model": "parametrized", "learn": True,
                        "intensity": 0.01, "folds": list(range(FOLDS))})  # fmt: skip
        small_png(folder / "curves.png", "curves")
        small_png(folder / "samples.png", "samples")
        theta = {"theta": theta_dict(2.31), "camera": {"pattern": "RGGB"}, "variant": "bi_s_ga"}
        (folder / "theta.json").write_text(json.dumps(theta))
        write_provenance(directory, "optimization")
    (directory / "summary.json").write_text(json.dumps(summary, indent=2))
    return directory


def write_calibration(directory: Path) -> Path:
    """A calibration run folder as ``CalibrationResult.write`` leaves it."""
    folder = directory / "calibration"
    folder.mkdir(parents=True, exist_ok=True)
    camera = {"name": "fitted", "pattern": "RGGB", "black_level": [0.01] * 4, "white_balance": [1.9, 1.0, 1.6],
              "colour_matrix": np.eye(3).tolist()}  # fmt: skip
    variants = {"bi_s_ga": {"train_loss": 0.0021, "heldout_psnr": 34.5, "heldout_delta_e": 2.1},
                "ma_s_ga": {"train_loss": 0.0034, "heldout_psnr": 31.2, "heldout_delta_e": 3.4}}  # fmt: skip
    fit = {
        "variant": "bi_s_ga",
        "tone_curve": "srgb",
        "metrics": {"psnr": 34.5, "delta_e": 2.1, "initial_psnr": 21.0, "initial_delta_e": 9.5,
                    "train_loss": 0.0021, "evaluated_on": "held-out"},
        "variants": variants,
        "theta": theta_dict(2.2, (1.9, 1.0, 1.6)),
        "effective_colour_matrix": np.eye(3).tolist(),
        "camera": camera,
        "initial_camera": {**camera, "white_balance": [1.0, 1.0, 1.0]},
        "train_pairs": ["a", "b", "c"],
        "heldout_pairs": ["d"],
        "settings": {"steps": 150, "lr": 0.01},
    }  # fmt: skip
    (folder / "fit.json").write_text(json.dumps(fit, indent=2))
    pd.DataFrame([{"variant": k, **v, "chosen": int(k == "bi_s_ga")} for k, v in variants.items()]).to_csv(
        folder / "variants.csv", index=False
    )
    small_png(folder / "residuals.png", "residuals")
    (directory / "summary.json").write_text(
        json.dumps({"mode": "calibrate", "variant": "bi_s_ga", "psnr": 34.5})
    )
    return directory


@pytest.fixture(scope="session")
def synthesis_template(tmp_path_factory) -> Path:
    """A complete synthesis run folder, shared read-only; copy it before changing anything."""
    return write_synthesis(tmp_path_factory.mktemp("synthesis_run"))


@pytest.fixture
def synthesis_run(synthesis_template, tmp_path) -> Path:
    """A private copy of the synthesis run folder."""
    return Path(shutil.copytree(synthesis_template, tmp_path / "run"))


@pytest.fixture(scope="session")
def artifacts():
    """The folder writers: ``artifacts.synthesis(dir)``, ``.forensics(dir, sweep=False)``,
    ``.optimization(dir)``, ``.calibration(dir)``, ``.stage_figure(dir)``; ``.forensics_result()``
    is the result.json that ``forensics`` writes."""
    return SimpleNamespace(
        synthesis=write_synthesis,
        forensics=write_forensics,
        optimization=write_optimization,
        calibration=write_calibration,
        stage_figure=write_stage_figure,
        forensics_result=forensics_result,
    )
