"""raw2logit.training: the LightningModule's logged metrics and the per-epoch progress line."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from raw2logit.tasks.models import SmallCNN
from raw2logit.tasks.task import Task
from raw2logit.training import DriftModule, ProgressPrinter


class Recorder(pl.Callback):
    """The epoch values Lightning holds once the epoch is over (what MLflow receives)."""

    def __init__(self):
        self.epochs = []

    def on_train_epoch_start(self, trainer, module):
        if trainer.current_epoch:  # the previous epoch is complete by now
            self.epochs.append({k: float(v) for k, v in trainer.callback_metrics.items()})

    def on_train_end(self, trainer, module):
        self.epochs.append({k: float(v) for k, v in trainer.callback_metrics.items()})


def test_each_epoch_line_shows_that_epochs_train_and_val_metric():
    """The progress line of epoch N shows epoch N's training and validation metric (the training
    metric was once printed an epoch late, missing from epoch 1's line)."""
    torch.manual_seed(0)
    views, labels = torch.rand(24, 3, 16, 16), torch.arange(24) % 3
    loader = DataLoader(TensorDataset(views, labels), batch_size=8, shuffle=True)
    held_out = DataLoader(TensorDataset(views[:12], labels[:12]), batch_size=12)
    lines, recorder = [], Recorder()
    trainer = pl.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[ProgressPrinter("cell", lines.append), recorder])  # fmt: skip
    module = DriftModule(SmallCNN(num_classes=3, width=4), Task("classification", 3), lr=1e-2, augment=False)
    trainer.fit(module, loader, held_out)
    assert len(lines) == 3 and len(recorder.epochs) == 3
    for line, metrics in zip(lines, recorder.epochs):
        for name in ("train_accuracy", "val_accuracy", "train_loss", "val_loss"):
            value = metrics.get(name, metrics.get(f"{name}_epoch"))
            assert f"{name}={value:.3f}" in line, (name, line, metrics)


def fit_small(epochs: int, callbacks, logger=False, check_val_every_n_epoch: int = 1):
    torch.manual_seed(0)
    views, labels = torch.rand(24, 3, 16, 16), torch.arange(24) % 3
    loader = DataLoader(TensorDataset(views, labels), batch_size=8, shuffle=True)
    held_out = DataLoader(TensorDataset(views[:12], labels[:12]), batch_size=12)
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=logger, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
                         check_val_every_n_epoch=check_val_every_n_epoch, log_every_n_steps=1)  # fmt: skip
    module = DriftModule(SmallCNN(num_classes=3, width=4), Task("classification", 3), lr=1e-2, augment=False)
    trainer.fit(module, loader, held_out)
    return module


def test_the_held_out_metric_is_shown_only_in_the_epochs_that_measured_it():
    """val_every_epochs=2: epochs 2 and 4 show val_*, epochs 1 and 3 do not (no stale value)."""
    lines = []
    fit_small(4, [ProgressPrinter("cell", lines.append)], check_val_every_n_epoch=2)
    assert ["val_accuracy=" in line for line in lines] == [False, True, False, True], lines
    assert all("train_accuracy=" in line for line in lines)


class CountingTracker:
    """The tracker's batch-writing call, counted (RunLogger's only way into MLflow)."""

    def __init__(self):
        self.writes = []

    def log_metric_rows(self, run_id, rows):
        self.writes.append((run_id, list(rows)))


def test_run_logger_writes_in_batches_and_loses_nothing_at_the_end():
    """Per-step values are batched (one write per flush interval, not one per step), and the
    training's end writes what is pending: every step's loss reaches the run, in step order."""
    from raw2logit.training import RunLogger

    tracker = CountingTracker()
    fit_small(3, [], logger=RunLogger(tracker, "run-1", flush_seconds=3600))
    assert len(tracker.writes) == 1  # nothing was old enough before the end: one write at finalize
    rows = [row for _, written in tracker.writes for row in written]
    steps = [step for metrics, step, _ in rows if "train_loss_step" in metrics]
    assert steps == sorted(steps) and len(steps) == 3 * 3  # 24 images in batches of 8, 3 epochs
    assert sum("val_accuracy" in metrics for metrics, _, _ in rows) == 3

    tracker = CountingTracker()
    fit_small(2, [], logger=RunLogger(tracker, "run-2", flush_seconds=0))
    assert len(tracker.writes) > 2  # a zero interval writes as Lightning logs
