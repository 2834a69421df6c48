"""Raw-Microscopy (Zenodo 10.5281/zenodo.5235536): leukocyte classification from 16-bit Bayer TIFFs.

Layout under the dataset root (the published one; the simulator writes the same)::

    microscopy/labels/Ma190c_annotations.dat        file stem and class code per line
    microscopy/images/raw_scale001 ... raw_scale100/<stem>.tiff
    microscopy/camera.json                            optional: CameraParams overriding the published ones

Classes with at most 4 images are dropped and one published file is excluded, as in the paper;
940 images in 9 classes remain.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from raw2logit.data.dataset import RawDataset
from raw2logit.data.files import BadFiles, read_raw
from raw2logit.data.layout import DOI, LABELS_FILE, MICROSCOPY_IMAGES, MICROSCOPY_LABELS, intensity_folder
from raw2logit.errors import InputError
from raw2logit.isp.camera import CameraParams

CLASS_CODES = (
    "BAS", "EBO", "EOS", "KSC", "LYA", "LYT", "MMZ", "MOB",
    "MON", "MYB", "MYO", "NGB", "NGS", "PMB", "PMO", "UNC",
)  # fmt: skip
EXCLUDED_FILES = ("Ma190c_lame3_zone13_composite_Mcropped_2.tiff",)
MIN_IMAGES_PER_CLASS = 5  # classes with <= 4 images are dropped


def dataset_dir(root: str | Path, name: str, expected: str, source: str) -> Path:
    """``root/name`` or ``root`` itself, whichever holds ``expected``; else one clear error."""
    root = Path(root).expanduser()
    for base in (root / name, root):
        if (base / expected).exists():
            return base
    found = sorted(p.name for p in root.iterdir())[:8] if root.is_dir() else None
    what = f"it contains {found}" if found is not None else "it does not exist"
    raise InputError(f"Expected {name}/{expected} under dataset.root={root}, but {what}; {source}")


def load_camera(base: Path, default: CameraParams) -> CameraParams:
    """``camera.json`` beside the data if present (simulated or user data), else ``default``."""
    path = base / "camera.json"
    if not path.exists():
        return default
    try:
        return CameraParams.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError, ValueError) as error:
        raise InputError(f"{path} is not a valid camera description ({error}).") from None


def read_labels(path: Path, bad: BadFiles) -> list[tuple[str, str]]:
    """(file stem, class code) pairs of a whitespace-separated labels file."""
    pairs = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2:
            raise InputError(f"{path}, line {number}: expected 'file-stem CLASS', got {line.strip()!r}.")
        stem, code = fields
        if code not in CLASS_CODES:
            bad.report(
                path, f"line {number} has unknown class {code!r}; expected one of {', '.join(CLASS_CODES)}"
            )
            continue
        pairs.append((stem, code))
    return pairs


def load_microscopy(
    root: str | Path,
    intensity: float = 1.0,
    on_bad_file: str = "raise",
    min_class_size: int = MIN_IMAGES_PER_CLASS,
) -> RawDataset:
    """Load Raw-Microscopy (or data in its layout) at one intensity level.

    Args:
        root: folder holding ``microscopy/`` (or the ``microscopy`` folder itself).
        intensity: I_ratio, one of 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0.
        on_bad_file: ``"raise"`` (default) or ``"skip"`` unreadable, mislabelled or missing files.
        min_class_size: classes with fewer images are dropped (the paper's rule: 5).

    Returns:
        ``RawDataset`` for classification, classes sorted by code.
    """
    source = f"Raw-Microscopy comes from Zenodo (DOI {DOI}); `make data` downloads it."
    base = dataset_dir(root, "microscopy", f"{MICROSCOPY_LABELS}/{LABELS_FILE}", source)
    folder = base / MICROSCOPY_IMAGES / intensity_folder(intensity)
    if not folder.is_dir():
        raise InputError(
            f"Expected the intensity folder {folder} for dataset.intensity={intensity}; {source}"
        )
    bad = BadFiles(on_bad_file)
    pairs = read_labels(base / MICROSCOPY_LABELS / LABELS_FILE, bad)
    pairs = [(stem, code) for stem, code in pairs if f"{stem}.tiff" not in EXCLUDED_FILES]
    codes = [code for _, code in pairs]
    classes = sorted(c for c in set(codes) if codes.count(c) >= min_class_size)

    images = []
    for stem, code in pairs:
        if code not in classes:
            continue
        path = folder / f"{stem}.tiff"
        if not path.exists():
            bad.report(path, "is listed in the labels but missing")
            continue
        try:
            image = read_raw(path)
        except InputError as error:
            bad.report(path, str(error).removeprefix(f"{path} "))
            continue
        if image.shape[0] % 2 or image.shape[1] % 2:
            bad.report(path, f"has odd size {image.shape}; Bayer mosaics need even height and width")
            continue
        images.append((stem, code, path, image))
    # The shape most images share is the expected one, so one odd file is blamed, not all the others.
    shapes = [image.shape for *_, image in images]
    expected = max(set(shapes), key=shapes.count) if shapes else None
    raws, targets, names = [], [], []
    for stem, code, path, image in images:
        if image.shape != expected:
            bad.report(path, f"has shape {image.shape}, expected {expected} like the other images")
            continue
        raws.append(image)
        targets.append(classes.index(code))
        names.append(stem)
    if not raws:
        raise InputError(f"No usable images found in {folder}; {source}")
    return RawDataset(
        raw=np.stack(raws),
        white_level=65535.0,
        targets=np.asarray(targets, dtype=np.int64),
        task="classification",
        camera=load_camera(base, CameraParams.published("microscopy")),
        names=names,
        classes=classes,
        intensity=float(intensity),
        name="microscopy",
        skipped=bad.skipped,
    )
