"""The task a task model is trained for: what its logits mean, how they are scored and compared.

One object per dataset task owns everything that differs between classification and
segmentation, so the rest of the code has no ``if task == ...`` branches:

- classification: logits (B, C); cross-entropy; accuracy; prediction = argmax.
- segmentation (binary, as Raw-Drone's cars): logits (B, 1, H, W); Dice loss (Dice + BCE for the
  forensic search, as the paper); IoU; prediction = logit > 0. Logits of a task model that sees a
  half-resolution input (raw packed 2x2) are resized to the mask's size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from raw2logit.errors import InputError
from raw2logit.names import TASKS


@dataclass(frozen=True)
class Task:
    """``Task("classification", 6)`` or ``Task("segmentation")`` (binary: one logit map)."""

    name: str
    num_classes: int = 1

    def __post_init__(self):
        if self.name not in TASKS:
            raise InputError(f"Unknown task {self.name!r}; expected one of {', '.join(TASKS)}.")

    @property
    def metric_name(self) -> str:
        """``accuracy`` or ``iou``: the name every artifact and MLflow metric uses."""
        return "accuracy" if self.name == "classification" else "iou"

    def metric(self, sync: bool = True):
        """A fresh torchmetrics metric: micro accuracy, or binary IoU (Jaccard index). ``sync``: its
        value gathers the counts of every DDP process (each saw part of the data), as in training."""
        from torchmetrics.classification import BinaryJaccardIndex, MulticlassAccuracy

        # No argument validation: predictions and targets come from this class and the checked
        # dataset; torchmetrics' check (a torch.unique of both per update) cost 5 % of a CPU cell.
        if self.name == "classification":
            return MulticlassAccuracy(num_classes=self.num_classes, average="micro", sync_on_compute=sync,
                                      validate_args=False)  # fmt: skip
        return BinaryJaccardIndex(sync_on_compute=sync, validate_args=False)

    def loss(self, with_bce: bool = False) -> nn.Module:
        """Cross-entropy, or Dice (``with_bce``: Dice + BCE) on the logit map."""
        return TaskLoss(self.name, with_bce)

    def predictions(self, logits: torch.Tensor) -> torch.Tensor:
        """Class indices (B,) or a binary mask (B, H, W)."""
        if self.name == "classification":
            return logits.argmax(dim=1)
        return (logits[:, 0] > 0).long()

    def logits(
        self, task_model: nn.Module, views: torch.Tensor, target: torch.Tensor | None = None
    ) -> torch.Tensor:
        """views (already normalised) -> logits, at the target's size for segmentation."""
        logits = task_model(views)
        if self.name == "segmentation" and target is not None and logits.shape[-2:] != target.shape[-2:]:
            logits = F.interpolate(
                logits, size=tuple(target.shape[-2:]), mode="bilinear", align_corners=False
            )
        return logits

    @classmethod
    def of(cls, dataset) -> Task:
        """The task of a ``RawDataset``."""
        return cls(dataset.task, dataset.num_classes)


class TaskLoss(nn.Module):
    """Cross-entropy (classification), Dice (segmentation) or Dice + BCE (forensics, as the paper)."""

    def __init__(self, task: str, with_bce: bool = False):
        super().__init__()
        from segmentation_models_pytorch.losses import DiceLoss

        self.task = task
        self.with_bce = with_bce
        self.dice = DiceLoss(mode="binary", from_logits=True) if task == "segmentation" else None

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.task == "classification":
            return F.cross_entropy(logits, target)
        target = target.float().unsqueeze(1) if target.dim() == 3 else target.float()
        loss = self.dice(logits, target)
        if self.with_bce:
            loss = loss + F.binary_cross_entropy_with_logits(logits, target)
        return loss
