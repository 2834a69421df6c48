"""Drift optimization (paper §5.3, Fig. 7, Table 2): train the data model with the task model.

Settings: the parametrized data model ``learned`` (θ and task model trained jointly) or
``frozen`` (θ fixed at θ_stat), the task model on the raw mosaic packed to half resolution
(``raw``, no ISP), and a small learned U-Net data model (``nn``; both in ``raw2logit.isp.learned``).
The validation metric is recorded
every N optimisation steps on the held-out fold; the learned θ is exported as readable JSON.
"""

from __future__ import annotations

import time

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn


class HistoryRecorder(pl.Callback):
    """Every ``every`` optimisation steps: held-out metric and, for parametrized data models, θ."""

    def __init__(self, evaluate_fn, every: int, setting: str, fold: int, log=print):
        self.evaluate_fn = evaluate_fn
        self.every = max(int(every), 1)
        self.setting, self.fold = setting, fold
        self.rows: list[dict] = []
        self.thetas: list[dict] = []
        self.printer = log

    def _record(self, trainer, module):
        from raw2logit.training import recalibrate_batchnorm

        step = trainer.global_step
        if self.rows and self.rows[-1]["step"] == step:
            return
        # BatchNorm's running statistics trail the weights: measure the model as it would be
        # deployed at this step (statistics from up to 8 training batches), not a lagging one.
        recalibrate_batchnorm(module, trainer.train_dataloader, max_batches=8)
        metric = self.evaluate_fn(module)
        module.train()
        self.rows.append({"step": step, "setting": self.setting, "fold": self.fold, "metric": metric})
        if trainer.logger:  # the fold's MLflow run charts the held-out metric over optimization steps
            trainer.logger.log_metrics({f"val_{module.task.metric_name}": metric}, step=step)
        theta_dict = getattr(module.data_model, "theta_dict", None)
        if theta_dict is not None:
            self.thetas.append({"step": step, "theta": theta_dict()})

    def on_train_start(self, trainer, module):
        self._record(trainer, module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_index):
        if trainer.global_step % self.every == 0:
            self._record(trainer, module)

    def on_train_end(self, trainer, module):
        self._record(trainer, module)
        self.printer(
            f"  {self.setting} fold {self.fold}: validation {self.rows[-1]['metric']:.3f} after {trainer.global_step} steps"
        )


def train_setting(*, make_module, make_trainer, train_raw, train_targets, test_raw, test_targets, setting: str,
                  fold: int, every: int, batch_size: int, seed: int, log=print, run_id=None) -> dict:  # fmt: skip
    """Train one setting on one fold (logged into the MLflow run ``run_id``); returns history rows,
    θ snapshots and the trained module."""
    from raw2logit.controls.synthesis import batches
    from raw2logit.training import evaluate

    pl.seed_everything(seed, workers=True, verbose=False)
    module = make_module()
    recorder = HistoryRecorder(
        lambda m: evaluate(m, test_raw, test_targets, batch_size), every, setting, fold, log
    )
    trainer = make_trainer(f"{setting} fold {fold}", [recorder], run_id=run_id)
    start = time.perf_counter()
    trainer.fit(module, batches(train_raw, train_targets, batch_size, shuffle=True, seed=seed))
    return {
        "rows": recorder.rows,
        "thetas": recorder.thetas,
        "module": module,
        "seconds": time.perf_counter() - start,
    }


def table2(history) -> dict:
    """Paper Table 2's statistic per setting: mean and std of the validation metric over steps and folds."""
    stats = {}
    for setting, frame in history.groupby("setting", sort=False):
        values = frame["metric"].to_numpy(dtype=float)
        final = frame.sort_values("step").groupby("fold")["metric"].last().to_numpy(dtype=float)
        stats[setting] = {"mean": float(values.mean()), "std": float(values.std()), "final_mean": float(final.mean()),
                          "final_std": float(final.std()), "folds": int(frame["fold"].nunique()),
                          "points": len(values)}  # fmt: skip
    return stats


def mean_views_statistics(data_model: nn.Module, raw, indices: np.ndarray, batch_size: int = 64) -> dict:
    """Channel statistics of a data model's initial views (``normalisation: auto`` in optimization)."""
    from raw2logit.training import channel_statistics

    class Views:
        def __len__(self):
            return len(indices)

        def __getitem__(self, rows):
            with torch.no_grad():
                device = next(iter(data_model.parameters()), torch.empty(0)).device
                return data_model(raw[indices[np.asarray(rows)]].to(device)).cpu()

    return channel_statistics(Views(), batch_size)
