"""The published layout of the paper's datasets, written once for the loaders, the simulator and
the downloader.

Raw-Microscopy and Raw-Drone (Zenodo record 5235536, CC-BY 4.0)::

    microscopy/images/raw_scale001 ... raw_scale100/<stem>.tiff
    microscopy/labels/Ma190c_annotations.dat
    drone/images_full/raw_scale001 ... raw_scale100/<capture>.dng (or 16-bit .tif)
    drone/masks_full/<capture>.png

``raw_scaleXXX`` holds the raws recorded at XXX % of the full light intensity (I_ratio).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from raw2logit.errors import InputError

DOI = "10.5281/zenodo.5235536"
ZENODO_RECORD_URL = "https://zenodo.org/api/records/5235536"
LICENSE = "CC-BY 4.0"
DATASETS = ("microscopy", "drone")
DATASET_TITLES = {"microscopy": "Raw-Microscopy", "drone": "Raw-Drone"}

INTENSITIES = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0)

MICROSCOPY_IMAGES = "images"
MICROSCOPY_LABELS = "labels"
LABELS_FILE = "Ma190c_annotations.dat"
MICROSCOPY_SUFFIXES = (".tif", ".tiff")

DRONE_IMAGES = "images_full"
DRONE_MASKS = "masks_full"
DRONE_RAW_SUFFIXES = (".dng", ".tif", ".tiff")
DRONE_MASK_SUFFIXES = (".png", ".tif", ".tiff")


def intensity_folder(intensity: float) -> str:
    """Folder name of an intensity level in the published layout, e.g. 0.05 -> ``raw_scale005``."""
    if not any(abs(intensity - level) < 1e-9 for level in INTENSITIES):
        raise InputError(
            f"Unknown intensity {intensity}; expected one of {', '.join(map(str, INTENSITIES))}."
        )
    return f"raw_scale{round(intensity * 100):03d}"


INTENSITY_FOLDERS = tuple(intensity_folder(level) for level in INTENSITIES)


@dataclass(frozen=True)
class LayoutReport:
    """Which datasets the loaders will find under ``root``.

    Attributes:
        root: the data root that was checked.
        scales: dataset -> the ``raw_scale*`` folders that hold images (present datasets only).
        missing: dataset -> one sentence saying what is missing (absent datasets only).
    """

    root: Path
    scales: dict[str, tuple[str, ...]]
    missing: dict[str, str]

    @property
    def present(self) -> tuple[str, ...]:
        return tuple(name for name in DATASETS if name in self.scales)

    def require(self, *datasets: str) -> None:
        """Raise ``InputError`` with the first missing dataset's sentence (all datasets if none named)."""
        for name in datasets or DATASETS:
            if name in self.missing:
                raise InputError(self.missing[name])


def _images(folder: Path, suffixes: tuple[str, ...]) -> bool:
    return folder.is_dir() and any(path.suffix.lower() in suffixes for path in folder.iterdir())


def _scale_folders(images: Path, suffixes: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(name for name in INTENSITY_FOLDERS if _images(images / name, suffixes))


def check_layout(root: str | os.PathLike) -> LayoutReport:
    """Report which datasets the loaders will find under ``root`` and, for the others, what is missing.

    A dataset counts as present when its labels (microscopy) or masks (drone) exist and at least one
    ``raw_scale*`` folder holds raw images; ``LayoutReport.scales`` lists those folders.
    """
    root = Path(root)
    scales: dict[str, tuple[str, ...]] = {}
    missing: dict[str, str] = {}
    expected_folders = f"{INTENSITY_FOLDERS[0]} ... {INTENSITY_FOLDERS[-1]}"

    microscopy = root / "microscopy"
    labels = microscopy / MICROSCOPY_LABELS / LABELS_FILE
    found = _scale_folders(microscopy / MICROSCOPY_IMAGES, MICROSCOPY_SUFFIXES)
    if not microscopy.is_dir():
        missing["microscopy"] = f"Raw-Microscopy is missing: expected the folder {microscopy}."
    elif not found:
        missing["microscopy"] = (
            f"Raw-Microscopy is incomplete: expected .tiff images in {microscopy / MICROSCOPY_IMAGES}/{expected_folders}."
        )
    elif not labels.is_file():
        missing["microscopy"] = f"Raw-Microscopy is incomplete: expected the labels file {labels}."
    else:
        scales["microscopy"] = found

    drone = root / "drone"
    masks = drone / DRONE_MASKS
    found = _scale_folders(drone / DRONE_IMAGES, DRONE_RAW_SUFFIXES)
    if not drone.is_dir():
        missing["drone"] = f"Raw-Drone is missing: expected the folder {drone}."
    elif not found:
        missing["drone"] = (
            f"Raw-Drone is incomplete: expected .dng or .tif images in {drone / DRONE_IMAGES}/{expected_folders}."
        )
    elif not _images(masks, (".png",)):
        missing["drone"] = f"Raw-Drone is incomplete: expected .png masks in {masks}."
    else:
        scales["drone"] = found
    return LayoutReport(root=root, scales=scales, missing=missing)
