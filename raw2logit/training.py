"""The LightningModule of every mode: [data model] -> normalisation -> weak augmentation -> task model.

It receives built objects (task model, optional data model, learning rates) and never sees the
configuration. Inputs are either precomputed static views (B, 3, H, W), when no data model runs
inside the step, or raw mosaics (B, H, W) that the data model turns into views.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.strategies import DDPStrategy
from pytorch_lightning.strategies.launchers.multiprocessing import _MultiProcessingLauncher
from pytorch_lightning.utilities import rank_zero_only
from torch import nn

from raw2logit.errors import NonFiniteError, check_finite_loss
from raw2logit.tasks.task import Task


def weak_augmentation(views: torch.Tensor, target: torch.Tensor, generator: torch.Generator | None = None):
    """Random horizontal and vertical flips and 90-degree rotations per sample; masks alike.

    Args:
        views: (B, C, H, W) images.
        target: (B,) labels (left as they are) or (B, H, W) masks (transformed with the views).
    """
    batch = views.shape[0]
    draws = torch.randint(0, 2, (batch, 3), generator=generator).to(views.device).bool()
    if views.shape[-1] != views.shape[-2]:
        draws[:, 2] = False  # a quarter turn would change the shape
    is_mask = target.dim() == 3

    def apply(x, flag, fn):
        shape = (batch,) + (1,) * (x.dim() - 1)
        return torch.where(flag.view(shape), fn(x), x)

    for column, fn in enumerate((lambda x: x.flip(-1), lambda x: x.flip(-2), lambda x: x.transpose(-1, -2))):
        views = apply(views, draws[:, column], fn)
        if is_mask:
            target = apply(target, draws[:, column], fn)
    return views, target


class Normalise(nn.Module):
    """Per-channel (x - mean) / std with fixed statistics (the paper's dataset normalisation)."""

    def __init__(self, mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        super().__init__()
        channels = len(mean) if mean is not None else 0
        self.register_buffer("mean", torch.tensor(mean or [], dtype=torch.float32).view(1, channels, 1, 1))
        self.register_buffer("std", torch.tensor(std or [], dtype=torch.float32).view(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean.numel() == 0 or x.shape[1] != self.mean.shape[1]:
            return x
        return (x - self.mean) / self.std

    def as_dict(self) -> dict | None:
        """``{"mean": [...], "std": [...]}`` (what a checkpoint stores), or None without statistics."""
        if self.mean.numel() == 0:
            return None
        return {"mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist()}


class DriftModule(pl.LightningModule):
    """Data model (optional) and task model trained together.

    Args:
        task_model: the task network (views -> logits).
        task: the ``Task`` (classification with its number of classes, or binary segmentation).
        lr: Adam learning rate of the task model.
        data_model: optional data model applied to raw inputs inside the step (static views are
            computed beforehand instead); its trainable parameters get ``data_model_lr``.
        data_model_lr: Adam learning rate of the data model's parameters.
        normalisation: dict with ``mean`` and ``std`` per channel, or None.
        augment: apply weak augmentation during training.
        seed: seed of the augmentation draws.
    """

    def __init__(
        self,
        task_model: nn.Module,
        task: Task,
        lr: float = 1e-3,
        data_model: nn.Module | None = None,
        data_model_lr: float | None = None,
        normalisation: dict | None = None,
        augment: bool = True,
        seed: int = 0,
    ):
        super().__init__()
        # Channels-last: oneDNN's CPU convolutions run on NHWC without reordering each layer's input
        # (the CPU U-Net's training step 1.3x, its scoring 1.4-1.7x faster on an AVX2 EPYC); cuDNN
        # prefers it too. Views are handed to the task model in the same layout (``logits``).
        self.task_model = task_model.to(memory_format=torch.channels_last)
        self.data_model = data_model
        self.task = task
        self.lr = lr
        self.data_model_lr = data_model_lr if data_model_lr is not None else lr
        self.normalise = Normalise(**(normalisation or {}))
        self.loss_fn = task.loss()
        self.augment = augment
        self.train_metric = task.metric()
        self.val_metric = task.metric()
        self._generator = torch.Generator().manual_seed(seed)

    def views(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs -> views: the data model on raw mosaics, or the views themselves."""
        return self.data_model(x) if self.data_model is not None else x

    def logits(self, views: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        """Views -> logits (normalised first; at the target's size for segmentation)."""
        inputs = self.normalise(views).contiguous(memory_format=torch.channels_last)
        return self.task.logits(self.task_model, inputs, target)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(self.views(x))

    def training_step(self, batch, batch_index):
        x, target = batch
        views = self.views(x)
        if self.augment:
            views, target = weak_augmentation(views, target, self._generator)
        logits = self.logits(views, target)
        loss = self.loss_fn(logits, target)
        check_finite_loss(loss, "training loss", self.current_epoch, batch_index,
                          f"the run stops here with nothing stored for this unit (lr={self.lr:g}; lower it, or "
                          "check the data model's θ)")  # fmt: skip
        self.train_metric.update(self.task.predictions(logits), target)
        self.log(
            "train_loss", loss, on_epoch=True, on_step=True, prog_bar=True, batch_size=len(x), sync_dist=True
        )
        # The metric object itself: Lightning computes it at the epoch's end, before the callbacks'
        # on_train_epoch_end (the progress line shows this epoch's value), and resets it.
        self.log(f"train_{self.task.metric_name}", self.train_metric, on_step=False, on_epoch=True,
                 batch_size=len(x))  # fmt: skip
        return loss

    def validation_step(self, batch, batch_index):
        x, target = batch
        logits = self.logits(self.views(x), target)
        self.log("val_loss", self.loss_fn(logits, target), on_epoch=True, batch_size=len(x), sync_dist=True)
        self.val_metric.update(self.task.predictions(logits), target)
        self.log(f"val_{self.task.metric_name}", self.val_metric, on_epoch=True, batch_size=len(x))

    def on_train_end(self):
        recalibrate_batchnorm(self, self.trainer.train_dataloader)
        check_finite_parameters(self)

    def configure_optimizers(self):
        groups = [{"params": [p for p in self.task_model.parameters() if p.requires_grad], "lr": self.lr}]
        if self.data_model is not None:
            trainable = [p for p in self.data_model.parameters() if p.requires_grad]
            if trainable:
                groups.append({"params": trainable, "lr": self.data_model_lr})
        return torch.optim.Adam(groups)


def check_finite_parameters(module: nn.Module) -> None:
    """Raise ``NonFiniteError`` if a trained weight or BatchNorm statistic is NaN or infinite."""
    tensors = [*module.named_parameters(), *module.named_buffers()]
    for name, tensor in tensors:
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise NonFiniteError(f"Training left non-finite values in {name}; the run stops with nothing stored "
                                 "for this unit (lower the learning rate).")  # fmt: skip


@torch.no_grad()
def recalibrate_batchnorm(module: DriftModule, loader, max_batches: int | None = None) -> None:
    """Recompute BatchNorm running statistics for the final weights ("precise BN").

    BatchNorm's running averages trail the weights by a few dozen steps; a short CPU run ends
    before they settle and the model then scores far worse in eval mode than in train mode
    (0.60 vs 1.00 on the simulated microscopy after 24 steps). One pass over the training data
    with a cumulative average gives the exact statistics; for long runs it changes little.
    """
    layers = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not layers or loader is None:
        return
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None
    was_training = module.training
    module.train()
    in_order = torch.utils.data.DataLoader(
        loader.dataset, batch_size=loader.batch_size, collate_fn=loader.collate_fn
    )
    for number, (x, _) in enumerate(in_order):
        if max_batches is not None and number >= max_batches:
            break
        module.logits(module.views(x.to(module.device)))
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum
    module.train(was_training)


@torch.no_grad()
def channel_statistics(inputs, batch_size: int = 256, transform=None) -> dict:
    """Per-channel mean and standard deviation of a set of views (``normalisation: auto``)."""
    total, total_sq, count = 0.0, 0.0, 0
    for start in range(0, len(inputs), batch_size):
        views = inputs[np.arange(start, min(start + batch_size, len(inputs)))].double()
        if transform is not None:
            views = transform(views)
        total = total + views.sum(dim=(0, 2, 3))
        total_sq = total_sq + views.square().sum(dim=(0, 2, 3))
        count += views.shape[0] * views.shape[2] * views.shape[3]
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(1e-12).sqrt()
    return {"mean": mean.tolist(), "std": std.clamp_min(1e-3).tolist()}


@torch.no_grad()
def evaluate(
    module: DriftModule,
    inputs,
    targets: np.ndarray | torch.Tensor,
    batch_size: int = 64,
    transform=None,
) -> float:
    """Task metric of ``module`` over inputs (views or raw), in eval mode.

    Args:
        inputs: a tensor or an object with ``__len__`` and ``__getitem__(index array) -> tensor``.
        transform: optional function applied to each batch of views (e.g. a corruption).
    """
    module.eval()
    # This process sees every image: nothing to gather from other DDP processes (rank 0 evaluates alone).
    metric = module.task.metric(sync=False).to(module.device)
    targets = torch.as_tensor(np.asarray(targets))
    for start in range(0, len(targets), batch_size):
        index = np.arange(start, min(start + batch_size, len(targets)))
        x = inputs[index].to(module.device)
        views = module.views(x)
        if transform is not None:
            views = transform(views)
        target = targets[index].to(module.device)
        logits = module.logits(views, target)
        metric.update(module.task.predictions(logits), target)
    return float(metric.compute())


class ProgressPrinter(pl.Callback):
    """One line per epoch (pytorch-lightning's bar floods logs when many cells train in a row)."""

    def __init__(self, label: str, log=print):
        self.label = label
        self.printer = log
        self._start = 0.0
        self._validated = False

    def on_train_start(self, trainer, module):
        if trainer.world_size > 1 and trainer.is_global_zero:
            backend = torch.distributed.get_backend() if torch.distributed.is_initialized() else "?"
            self.printer(
                f"  {self.label}: DistributedDataParallel over {trainer.world_size} processes ({backend})"
            )

    def on_train_epoch_start(self, trainer, module):
        self._start = time.perf_counter()
        self._validated = False

    def on_validation_end(self, trainer, module):
        self._validated = True

    def on_train_epoch_end(self, trainer, module):
        # The held-out metric only in the epochs that measured it (val_every_epochs), not a stale one.
        shown_prefixes = ("train_", "val_") if self._validated else ("train_",)
        metrics = {  # on every rank: reading the metrics synchronises them across DDP processes
            k.removesuffix("_epoch"): float(v) for k, v in trainer.callback_metrics.items()
            if k.startswith(shown_prefixes) and not k.endswith("_step")
        }  # fmt: skip
        if not trainer.is_global_zero:  # one line per epoch, not one per process
            return
        shown = "  ".join(f"{k}={v:.3f}" for k, v in sorted(metrics.items()))
        self.printer(f"  {self.label} epoch {trainer.current_epoch + 1}/{trainer.max_epochs}  {shown}  "
                 f"({time.perf_counter() - self._start:.1f}s)")  # fmt: skip


class RunLogger(pl.loggers.Logger):
    """Lightning's logging into one MLflow run of raw2logit's tracker: what ``self.log`` records
    (per-step training loss, per-epoch validation metric) and the learning rate, at Lightning's step.

    The run belongs to raw2logit (it is opened before the training and finished after its results
    are logged), so unlike Lightning's ``MLFlowLogger`` this logger neither creates nor ends runs,
    and a tracking failure warns instead of stopping the training.

    Values are written in batches, at most every ``flush_seconds`` and when the training ends
    (or fails): one SQLite write per step cost 15 ms, a tenth of a small model's CPU step, while
    the charts stay live to within a few seconds.
    """

    def __init__(self, tracker, run_id: str, flush_seconds: float = 2.0):
        super().__init__()
        self.tracker, self.run_id = tracker, run_id
        self.flush_seconds = flush_seconds
        self._pending: list[tuple[dict, int, int]] = []
        self._flushed = time.monotonic()

    @property
    def name(self) -> str:
        return "raw2logit"

    @property
    def version(self) -> str:
        return self.run_id

    @rank_zero_only
    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        values = {key: float(value) for key, value in metrics.items() if key != "epoch"}
        self._pending.append((values, step or 0, int(time.time() * 1000)))

    @rank_zero_only
    def save(self) -> None:
        """Called by Lightning after each logging call: writes what is pending once it is old enough."""
        if self._pending and time.monotonic() - self._flushed >= self.flush_seconds:
            self.flush()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.flush()

    def flush(self) -> None:
        rows, self._pending = self._pending, []
        self._flushed = time.monotonic()
        if rows:
            self.tracker.log_metric_rows(self.run_id, rows)

    @rank_zero_only
    def log_hyperparams(self, params, *args, **kwargs) -> None:
        """The run's parameters are the resolved config, logged when the run is opened."""


class _CallbackStateLauncher(_MultiProcessingLauncher):
    """Lightning's launcher of forked (or spawned) DDP processes that also brings the callbacks' state
    (``state_dict``) of rank 0 back to the main process, as it brings back the weights: what a callback
    recorded during training (optimization's validation history) is there when ``fit`` returns."""

    def get_extra_results(self, trainer) -> dict:
        extra = super().get_extra_results(trainer)
        extra["callback_states"] = [callback.state_dict() for callback in trainer.callbacks]
        return extra

    def update_main_process_results(self, trainer, extra: dict) -> None:
        super().update_main_process_results(trainer, extra)
        for callback, state in zip(trainer.callbacks, extra.get("callback_states", ())):
            if state:
                callback.load_state_dict(state)


class ForkedDDP(DDPStrategy):
    """DistributedDataParallel over processes forked by ``trainer.fit`` (``trainer=ddp``).

    The run itself stays one process: it prepares the data, opens the MLflow runs and, after ``fit``,
    finds the trained weights (and its callbacks' state) in its own module, evaluates the held-out
    fold once and writes every result once. Only the training loop runs in ``devices`` processes:
    rank 0 logs the training curves into the MLflow run, the others write nothing. Lightning's
    ``ddp`` strategy would instead start ``python run.py ...`` again for every other rank, and every
    one of them would run (and write) the whole job; ``ddp_spawn`` would need every object it hands
    over to pickle. Forking needs CUDA left uninitialised in the main process (raw2logit then keeps
    the views and the held-out evaluation of a ``trainer=ddp`` run on the CPU).

    Args:
        start_method: ``fork`` (default) or ``spawn``; ``popen`` is Lightning's ``ddp``.
        kwargs: as Lightning's ``DDPStrategy`` (e.g. ``process_group_backend: gloo``).
    """

    def __init__(self, start_method: str = "fork", **kwargs):
        super().__init__(start_method=start_method, **kwargs)

    def _configure_launcher(self) -> None:
        super()._configure_launcher()
        if isinstance(self._launcher, _MultiProcessingLauncher):
            self._launcher = _CallbackStateLauncher(self, start_method=self._start_method)
