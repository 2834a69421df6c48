"""Drift synthesis (paper §5.1): train on each static pipeline, test on all of them, k-fold.

One *cell* is (train pipeline, fold): a task model trained on that pipeline's views of the
training fold, evaluated on the held-out fold as processed by every test pipeline, and on the
train pipeline's held-out views under each Common Corruption. Cells are written as JSON files
as soon as they finish, so an interrupted run resumes with the next cell, and a multirun can
spread cells over jobs; ``assemble`` turns any set of cell files into the matrix artifacts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch

from raw2logit.data.dataset import RawDataset
from raw2logit.data.files import write_json_atomic
from raw2logit.data.splits import kfold_splits
from raw2logit.data.views import ViewCache
from raw2logit.errors import InputError
from raw2logit.locks import file_lock
from raw2logit.names import LIBRAW_PREFIX
from raw2logit.runtime import deferred_interrupts
from raw2logit.tasks.checkpoints import save_task_model
from raw2logit.tasks.task import Task
from raw2logit.training import DriftModule, channel_statistics, evaluate

CELL_DIR = "synthesis/cells"
# Held-out images are scored in batches of at least this many (no gradients: memory allows more
# than training's batch, and fewer, larger batches cost less per image).
EVAL_BATCH_SIZE = 64


def eval_batch_size(batch_size: int) -> int:
    """The batch size for held-out images: the training's, or ``EVAL_BATCH_SIZE`` if larger."""
    return max(batch_size, EVAL_BATCH_SIZE)


def cell_path(results: Path, train: str, fold: int) -> Path:
    return results / CELL_DIR / train / f"fold{fold}.json"


def model_file(results: Path, train: str, fold: int) -> Path:
    return results / "synthesis" / "models" / train / f"fold{fold}.pt"


def batches(inputs, targets: np.ndarray, batch_size: int, shuffle: bool, seed: int):
    """A DataLoader over (input array, targets) that converts one batch at a time."""
    targets = torch.as_tensor(targets)

    def collate(indices):
        index = np.sort(np.asarray(indices))
        return inputs[index], targets[index]

    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        range(len(targets)), batch_size=batch_size, shuffle=shuffle, collate_fn=collate, generator=generator
    )


class Subset:
    """Rows ``index`` of an indexable array of inputs (views or raw), indexed again lazily."""

    def __init__(self, inputs, index: np.ndarray):
        self.inputs, self.index = inputs, np.asarray(index)

    def __len__(self):
        return len(self.index)

    def __getitem__(self, rows):
        return self.inputs[self.index[np.asarray(rows)]]


def train_cell(
    make_module: Callable[[], DriftModule],
    make_trainer: Callable[..., pl.Trainer],
    inputs,
    targets: np.ndarray,
    batch_size: int,
    seed: int,
    label: str,
    validation: tuple | None = None,
    run_id: str | None = None,
) -> DriftModule:
    """Train a fresh task model on ``inputs`` with labels ``targets``.

    The module is built with the channel statistics of ``inputs`` (used when the dataset's
    normalisation is ``auto``): the task model standardises what it was trained on, and keeps
    those statistics when tested on other pipelines, as a deployed model would.

    Args:
        validation: (inputs, targets) of the held-out images: Lightning's validation loop measures
            them after every epoch (the metric the training's MLflow run ``run_id`` charts).
    """
    pl.seed_everything(seed, workers=True, verbose=False)
    module = make_module(channel_statistics(inputs))
    trainer = make_trainer(label, run_id=run_id)
    loaders = [batches(inputs, targets, batch_size, shuffle=True, seed=seed)]
    if validation is not None:
        loaders.append(batches(*validation, batch_size=eval_batch_size(batch_size), shuffle=False, seed=seed))
    trainer.fit(module, *loaders)
    return module


def run_cell(
    *,
    dataset: RawDataset,
    views: ViewCache,
    train: str,
    fold: int,
    split: tuple[np.ndarray, np.ndarray],
    test_names: Sequence[str],
    corruption_names: Sequence[str],
    severity: int,
    make_module,
    make_trainer,
    batch_size: int,
    seed: int,
    label: str,
    model_path: Path | None = None,
    model_metadata: dict | None = None,
    run_id: str | None = None,
) -> dict:
    """Train one cell (logging into the MLflow run ``run_id``) and evaluate it on every test
    pipeline and corruption."""
    train_index, test_index = split
    start = time.perf_counter()
    targets = dataset.targets[test_index]
    module = train_cell(
        make_module, make_trainer, Subset(views.views(train), train_index), dataset.targets[train_index],
        batch_size, seed, label, validation=(Subset(views.views(train), test_index), targets), run_id=run_id,
    )  # fmt: skip
    eval_batch = eval_batch_size(batch_size)
    metrics = {
        name: evaluate(module, Subset(views.views(name), test_index), targets, eval_batch)
        for name in test_names
    }
    own = Subset(views.views(train), test_index)
    clean = metrics[train] if train in metrics else evaluate(module, own, targets, eval_batch)
    from raw2logit.controls.corruptions import corrupt

    corruptions = {}
    for number, name in enumerate(corruption_names):
        generator = torch.Generator().manual_seed(seed * 1000 + number)
        corruptions[name] = evaluate(module, own, targets, eval_batch,
                                     transform=lambda v, n=name, g=generator: corrupt(v, n, severity, g))  # fmt: skip
    if model_path is not None:
        save_task_model(module.task_model, module.normalise.as_dict(), model_path,
                        {**(model_metadata or {}), "pipeline": train, "fold": fold, "task": dataset.task,
                         "num_classes": dataset.num_classes})  # fmt: skip
    return {
        "train": train,
        "fold": fold,
        "metric": Task.of(dataset).metric_name,
        "clean": clean,
        "test": metrics,
        "corruptions": corruptions,
        "severity": severity,
        "seed": seed,
        "train_size": len(train_index),
        "test_size": len(test_index),
        "seconds": time.perf_counter() - start,
    }


def run_synthesis(
    *,
    dataset: RawDataset,
    views: ViewCache,
    train_names: Sequence[str],
    test_names: Sequence[str],
    folds: int,
    fold: int | None,
    seed: int,
    severity: int,
    corruption_names: Sequence[str],
    make_module,
    make_trainer,
    batch_size: int,
    results: Path,
    save_models: bool = True,
    model_metadata: dict | None = None,
    on_cell: Callable[[dict], None] | None = None,
    on_cell_start: Callable[[str, int], str | None] | None = None,
    log=print,
    wait: bool = True,
) -> list[dict]:
    """Run (or resume) every requested cell; returns the cell records.

    Args:
        results: folder of the cell files; cells already there are skipped (resume).
        fold: one fold only (multirun fan-out), or None for all ``folds``.
        on_cell: called with each newly finished cell (e.g. to log it to MLflow), together with
            writing its file (an interruption waits for both).
        on_cell_start: called before a cell trains, with its train pipeline and fold; returns the
            MLflow run the training logs into (or None).
        wait: False for a helper process (``synthesis.workers``): it computes the cells nobody else
            holds, returns those, and leaves the rest to the run that spawned it.
    """
    splits = kfold_splits(dataset, folds, seed)
    if fold is not None and not 0 <= fold < folds:
        raise InputError(f"fold={fold} is outside 0..{folds - 1} for folds={folds}.")
    fold_ids = [fold] if fold is not None else list(range(folds))
    views.ensure(list(dict.fromkeys([*train_names, *test_names])))
    units = [(k, train) for k in fold_ids for train in train_names]
    earlier = {unit for unit in units if cell_path(results, unit[1], unit[0]).exists()}
    done: dict[tuple[int, str], dict] = {}

    def take(number: int, k: int, train: str) -> None:
        """Compute the cell (its lock held), or read it if a parallel run finished it meanwhile."""
        path = cell_path(results, train, k)
        label = f"cell {number}/{len(units)} train={train} fold={k}"
        if path.exists():
            done[(k, train)] = json.loads(path.read_text())
            if (k, train) in earlier and wait:  # otherwise a parallel process finished it and said so
                log(f"{label}: done in an earlier run, skipped")
            return
        log(f"{label}: training on {len(splits[k][0])} images")
        run_id = on_cell_start(train, k) if on_cell_start is not None else None
        cell = run_cell(
            dataset=dataset, views=views, train=train, fold=k, split=splits[k], test_names=test_names,
            corruption_names=corruption_names, severity=severity, make_module=make_module,
            make_trainer=make_trainer, batch_size=batch_size, seed=seed + k, label=label,
            model_path=model_file(results, train, k) if save_models else None, model_metadata=model_metadata,
            run_id=run_id,
        )  # fmt: skip
        own = cell["test"].get(train, cell["clean"])
        log(f"{label}: {cell['metric']} on own pipeline {own:.3f}, worst test pipeline {min(cell['test'].values()):.3f}, "
            f"mean corrupted {np.mean(list(cell['corruptions'].values()) or [np.nan]):.3f} ({cell['seconds']:.1f}s)")  # fmt: skip
        with deferred_interrupts():  # the cell file and its record (on_cell) are written together
            write_json_atomic(path, cell)
            if on_cell is not None:
                on_cell(cell)
        done[(k, train)] = cell

    # Parallel runs of one config share the results store: each takes the cells nobody holds, then
    # waits for the ones held elsewhere (computing them itself if their run died).
    waiting = []
    for number, (k, train) in enumerate(units, start=1):
        with file_lock(cell_path(results, train, k).with_suffix(".lock"), wait=False) as held:
            if held:
                take(number, k, train)
            else:
                waiting.append((number, k, train))
    for number, k, train in waiting if wait else ():
        with file_lock(cell_path(results, train, k).with_suffix(".lock")):
            take(number, k, train)
    return [done[unit] for unit in units if unit in done]


def load_cells(folder: Path) -> list[dict]:
    """Every cell file below ``folder`` (a run, a results store or a whole sweep)."""
    cells = {}
    for path in sorted(Path(folder).rglob("fold*.json")):
        if path.parent.parent.name == "cells":
            cell = json.loads(path.read_text())
            cells[(cell["train"], cell["fold"])] = cell
    return list(cells.values())


def _order(names, reference):
    return [n for n in reference if n in names] + sorted(n for n in names if n not in reference)


def assemble(cells: list[dict], out_dir: Path, pipeline_order: Sequence[str] = ()) -> dict:
    """Write the synthesis artifacts for a set of cells; returns the summary.

    Files (under ``out_dir``): ``synthesis/matrix.csv`` and ``matrix_std.csv`` (rows: train
    pipeline, columns: test pipeline, mean/std over folds), ``synthesis/corruptions.csv`` and
    ``corruptions_std.csv``, ``synthesis/ranking.csv`` (train pipelines by average over test
    pipelines, with the best train pipeline per test pipeline), ``synthesis/heatmap.png`` and
    ``summary.json``.
    """
    from raw2logit.report.figures import synthesis_heatmap

    if not cells:
        raise InputError(f"No synthesis cells to assemble in {out_dir}.")
    metric = cells[0]["metric"]
    trains = _order({c["train"] for c in cells}, pipeline_order)
    tests = _order({t for c in cells for t in c["test"]}, pipeline_order)
    corruption_names = list(dict.fromkeys(n for c in cells for n in c["corruptions"]))

    def table(key, columns):
        rows = {t: {col: [] for col in columns} for t in trains}
        for cell in cells:
            for col, value in cell[key].items():
                rows[cell["train"]][col].append(value)
        mean = pd.DataFrame(
            {t: {c: np.mean(v) if v else np.nan for c, v in r.items()} for t, r in rows.items()}
        ).T
        std = pd.DataFrame(
            {t: {c: np.std(v) if v else np.nan for c, v in r.items()} for t, r in rows.items()}
        ).T
        return mean.loc[trains, columns], std.loc[trains, columns]

    folder = Path(out_dir) / "synthesis"
    folder.mkdir(parents=True, exist_ok=True)
    matrix, matrix_std = table("test", tests)
    matrix.to_csv(folder / "matrix.csv", index_label="train")
    matrix_std.to_csv(folder / "matrix_std.csv", index_label="train")
    corruptions, corruptions_std = (None, None)
    if corruption_names:
        corruptions, corruptions_std = table("corruptions", corruption_names)
        clean = pd.Series({t: np.mean([c["clean"] for c in cells if c["train"] == t]) for t in trains})
        corruptions.insert(0, "clean", clean)
        corruptions.to_csv(folder / "corruptions.csv", index_label="train")
        corruptions_std.to_csv(folder / "corruptions_std.csv", index_label="train")

    ranking = pd.DataFrame({"average": matrix.mean(axis=1)})
    if corruptions is not None:
        ranking["average_corrupted"] = corruptions[corruption_names].mean(axis=1)
    ranking = ranking.sort_values("average", ascending=False)
    ranking.insert(0, "rank", np.arange(1, len(ranking) + 1))
    ranking.to_csv(folder / "ranking.csv", index_label="train")
    best = {test: str(matrix[test].idxmax()) for test in tests}
    pd.DataFrame({"best_train": best, metric: {t: matrix.loc[best[t], t] for t in tests}}).to_csv(
        folder / "best_train_per_test.csv", index_label="test"
    )

    diagonal = [matrix.loc[t, t] for t in trains if t in matrix.columns]
    # LibRaw's columns are reported on their own ("libraw"), so that "isp" stays the data models' drift.
    real_isp = [c for c in tests if c.startswith(LIBRAW_PREFIX)]
    off_diagonal = [matrix.loc[r, c] for r in trains for c in tests if r != c and c not in real_isp]
    summary = {
        "mode": "synthesis",
        "metric": metric,
        "cells": len(cells),
        "folds": sorted({c["fold"] for c in cells}),
        "train_pipelines": trains,
        "test_pipelines": tests,
        "isp": {
            "train": float(np.mean(diagonal)) if diagonal else None,
            "test": float(np.mean(off_diagonal)) if off_diagonal else None,
        },
        "best_train_pipeline": str(ranking.index[0]),
        "best_train_per_test": best,
    }
    summary["isp"]["change"] = (
        summary["isp"]["test"] - summary["isp"]["train"] if diagonal and off_diagonal else None
    )
    if real_isp:
        rows = [t for t in trains if not t.startswith(LIBRAW_PREFIX)]
        values = matrix.loc[rows, real_isp].to_numpy() if rows else np.array([])
        summary["libraw"] = {
            "algorithms": real_isp,
            # the rows' own pipelines, when they are columns too (None otherwise, as "isp")
            "train": float(np.mean(own))
            if (own := [matrix.loc[t, t] for t in rows if t in matrix.columns])
            else None,
            "test": float(np.nanmean(values)) if values.size else None,
            "per_algorithm": {c: float(matrix.loc[rows, c].mean()) for c in real_isp} if rows else {},
        }
        train, test = summary["libraw"]["train"], summary["libraw"]["test"]
        summary["libraw"]["change"] = test - train if test is not None and train is not None else None
    if corruptions is not None:
        summary["corruptions"] = {
            "severity": cells[0]["severity"],
            "train": float(corruptions["clean"].mean()),
            "test": float(corruptions[corruption_names].to_numpy().mean()),
        }
        summary["corruptions"]["change"] = summary["corruptions"]["test"] - summary["corruptions"]["train"]
    (Path(out_dir) / "summary.json").write_text(json.dumps(summary, indent=2))
    synthesis_heatmap(matrix, matrix_std, corruptions, corruptions_std, metric, folder / "heatmap.png")
    return summary


def format_matrix(out_dir: Path) -> str:
    """The assembled matrix as a printable table."""
    matrix = pd.read_csv(Path(out_dir) / "synthesis" / "matrix.csv", index_col=0)
    return matrix.to_string(float_format=lambda v: f"{v:.3f}")
