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
