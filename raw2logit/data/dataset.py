"""The in-memory form every raw dataset loader returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from raw2logit.isp.camera import CameraParams

TASKS = ("classification", "segmentation")


@dataclass
class RawDataset:
    """Raw Bayer mosaics with labels, as loaded from disk.

    Attributes:
        raw: (N, H, W) unsigned integer counts as stored (e.g. 16-bit TIFF or DNG values).
        white_level: the count that maps to 1.0 (``2**bits - 1``, e.g. 65535); raw / white_level is
            the normalised mosaic the data models take.
        targets: (N,) int64 class indices (classification) or (N, H, W) uint8 binary masks (segmentation).
        task: ``"classification"`` or ``"segmentation"``.
        camera: the data model's camera parameters for this sensor.
        names: one identifier per image (file stem).
        classes: class names, index-aligned with the class indices (classification);
            ``["background", "car"]`` style names for segmentation.
        groups: (N,) int64 source-capture id per image (tiles of one capture share it), used
            for grouped splits; defaults to one group per image.
        intensity: exposure ratio I_ratio of this variant (1.0 = full exposure).
        cameras: optional per-image ``CameraParams`` (DNG folders: each file's metadata); when
            given it overrides ``camera`` image by image.
        name: dataset label for logs.
        normalisation: per-channel ``mean`` and ``std`` applied to views before the task model
            (the paper's dataset statistics), or None.
        skipped: files skipped by ``on_bad_file=skip``.
    """

    raw: np.ndarray
    white_level: float
    targets: np.ndarray
    task: str
    camera: CameraParams
    names: list[str]
    classes: list[str]
    groups: np.ndarray | None = None
    intensity: float = 1.0
    cameras: list[CameraParams] | None = None
    name: str = "dataset"
    skipped: list[str] = field(default_factory=list)
    normalisation: dict | None = None

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"Unknown task {self.task!r}; expected one of {', '.join(TASKS)}.")
        if self.raw.ndim != 3:
            raise ValueError(f"Raw images must be stacked as (N, H, W); got shape {self.raw.shape}.")
        if len(self.targets) != len(self.raw) or len(self.names) != len(self.raw):
            raise ValueError(
                f"{len(self.raw)} raw images but {len(self.targets)} targets and {len(self.names)} names."
            )
        # Checked once here, so that the metrics need not check every batch (raw2logit.tasks.task).
        targets = np.asarray(self.targets)
        integral = np.issubdtype(targets.dtype, np.integer) or targets.dtype == bool
        low, high = (targets.min(), targets.max()) if targets.size else (0, 0)
        if self.task == "classification" and not (integral and 0 <= low and high < self.num_classes):
            raise ValueError(f"Class labels must be integers in 0..{self.num_classes - 1} (one per class name); "
                             f"got {targets.dtype} values in {low}..{high}.")  # fmt: skip
        if self.task == "segmentation" and not (integral and 0 <= low <= high <= 1):
            raise ValueError(f"Segmentation masks must be integers, 0 (background) or 1 (foreground); got "
                             f"{targets.dtype} values in {low}..{high}.")  # fmt: skip
        if self.groups is None:
            self.groups = np.arange(len(self.raw), dtype=np.int64)
        if self.cameras is not None and len(self.cameras) != len(self.raw):
            raise ValueError(f"{len(self.raw)} raw images but {len(self.cameras)} per-image cameras.")

    def __len__(self) -> int:
        return len(self.raw)

    @property
    def num_classes(self) -> int:
        return len(self.classes) if self.task == "classification" else 1

    @property
    def image_shape(self) -> tuple[int, int]:
        return tuple(self.raw.shape[-2:])

    def camera_of(self, index: int) -> CameraParams:
        return self.cameras[index] if self.cameras is not None else self.camera

    def normalised(self, indices=None) -> torch.Tensor:
        """Raw mosaics as a float32 (n, H, W) tensor in [0, 1]."""
        raw = self.raw if indices is None else self.raw[np.asarray(indices)]
        return torch.from_numpy(raw.astype(np.float32) / np.float32(self.white_level)).clamp_(0.0, 1.0)


class RawInputs:
    """Normalised raw mosaics of a dataset, indexed lazily: ``inputs[indices]`` -> (n, H, W) float32."""

    def __init__(self, dataset: RawDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, indices) -> torch.Tensor:
        return self.dataset.normalised(np.atleast_1d(np.asarray(indices)))
