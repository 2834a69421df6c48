"""A folder of the user's own DNG raw files, read with rawpy (LibRaw), as a ``RawDataset``.

Layout::

    <root>/*.dng                  one Bayer raw per file (suffix in any case), read in name order
    labels.csv                    classification: header ``file,label``; ``file`` with or without ``.dng``
    <masks_dir>/<stem>.png|.tif   segmentation: one binary mask per DNG (> 0 is foreground)

Each file is read by ``raw2logit.data.dng.read_dng`` (what it reads, and how LibRaw presents it,
is written there).
"""

from __future__ import annotations

import csv
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np

from raw2logit.data.dataset import RawDataset
from raw2logit.data.dng import DNG_SUFFIX, BadFileError, DngRaw, read_dng
from raw2logit.data.files import BadFiles
from raw2logit.errors import InputError

MASK_SUFFIXES = (".png", ".tif", ".tiff")
SEGMENTATION_CLASSES = ["background", "foreground"]


def _listing(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _read_labels(path: Path) -> dict[str, tuple[str, str]]:
    """Labels by DNG stem: stem -> (file entry as written, label); malformed CSVs raise."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as stream:
            reader = csv.DictReader(stream)
            columns = [c.strip() for c in reader.fieldnames or []]
            if "file" not in columns or "label" not in columns:
                raise InputError(f"{path} must have the header columns 'file,label'; found {columns}.")
            reader.fieldnames = columns
            rows = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputError(f"{path} is not a readable labels CSV ({error}).") from None

    labels: dict[str, tuple[str, str]] = {}
    for line, row in rows:
        entry = (row.get("file") or "").strip()
        label = (row.get("label") or "").strip()
        if not entry:
            raise InputError(f"{path}, line {line}: expected a DNG file name in the 'file' column.")
        stem = entry[: -len(DNG_SUFFIX)] if entry.lower().endswith(DNG_SUFFIX) else entry
        if stem in labels and labels[stem][1] != label:
            raise InputError(
                f"{path}, line {line}: {entry} is labelled {labels[stem][1]!r} earlier; "
                f"expected one label per file, got {label!r} too."
            )
        labels[stem] = (entry, label)
    return labels


def _read_mask(path: Path) -> np.ndarray:
    """A mask image as uint8 (H, W), 1 where any colour channel is > 0."""
    try:
        if path.suffix.lower() == ".png":
            from PIL import Image

            with Image.open(path) as image:
                mask = np.asarray(image)
        else:
            import tifffile

            mask = tifffile.imread(path)
    except (OSError, ValueError) as error:
        raise BadFileError(
            f"{path} is not a readable mask image ({type(error).__name__}: {error})."
        ) from None
    if mask.ndim == 3 and mask.shape[-1] <= 4:
        # Drop an alpha channel: an opaque alpha would mark every pixel as foreground.
        mask = mask[..., :3] if mask.shape[-1] in (3, 4) else mask[..., :1]
        mask = mask.max(axis=-1)
    if mask.ndim != 2:
        raise BadFileError(f"{path} must be a single 2-D mask image; it has shape {mask.shape}.")
    return (mask > 0).astype(np.uint8)


def load_dng_folder(
    root: str | Path,
    labels_csv: str | Path | None = None,
    masks_dir: str | Path | None = None,
    on_bad_file: str = "raise",
    name: str = "dng_folder",
) -> RawDataset:
    """Load every DNG in a folder, with class labels from a CSV or segmentation masks from a folder.

    Args:
        root: folder holding the ``*.dng`` files (suffix in any case), read sorted by file name.
        labels_csv: classification: CSV with header ``file,label``; ``file`` names a DNG with or
            without its ``.dng`` suffix. Classes are the sorted unique labels of the loaded files.
        masks_dir: segmentation: folder with one mask per DNG, same stem, ``.png``/``.tif``/``.tiff``;
            values > 0 are foreground. A mask is (H, W) of the even-cropped mosaic or of the visible
            area before that crop (then cropped alike).
        on_bad_file: ``"raise"``: a bad file raises ``InputError`` naming it; ``"skip"``: it is
            skipped with a warning and its name recorded in ``RawDataset.skipped``. Bad files are
            unreadable or non-Bayer DNGs, a size or white level unlike the first loaded file's, a DNG
            without a label or mask, and a label row or mask without a DNG.
        name: dataset label for logs.

    Returns:
        ``RawDataset`` with raw (N, H, W) uint16 counts, one ``CameraParams`` per file in ``cameras``
        (``camera`` is the first file's), one group per file, and targets (N,) int64 class
        indices or (N, H, W) uint8 binary masks.

    Raises:
        InputError: on bad arguments, a malformed labels CSV, a folder without usable DNG files, or
            (with ``on_bad_file="raise"``) the first bad file.
    """
    bad = BadFiles(on_bad_file)
    reject, skipped = bad.reject, bad.skipped
    if (labels_csv is None) == (masks_dir is None):
        raise InputError(
            "Give exactly one of labels_csv (classification) or masks_dir (segmentation) for a DNG folder."
        )
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"DNG folder {root} does not exist or is not a directory.")

    dng_by_stem: dict[str, Path] = {}
    for path in sorted((p for p in root.iterdir() if p.suffix.lower() == DNG_SUFFIX), key=lambda p: p.name):
        if not path.is_file():
            continue
        if path.stem in dng_by_stem:
            # Labels and masks are matched by stem, so two files with one stem are ambiguous.
            reject(
                path.name,
                f"{path} has the same stem as {dng_by_stem[path.stem].name}; expected unique stems.",
            )
            continue
        dng_by_stem[path.stem] = path
    if not dng_by_stem:
        raise InputError(f"DNG folder {root} holds no .dng files.")

    # Match targets to files before decoding anything, so naming mistakes surface at once.
    target_source: dict[str, object] = {}
    if labels_csv is not None:
        labels_csv = Path(labels_csv)
        labels = _read_labels(labels_csv)
        for stem, (entry, _) in labels.items():
            if stem not in dng_by_stem:
                reject(entry, f"{labels_csv} labels {entry}, but {root} holds no such DNG file.")
        for stem, path in list(dng_by_stem.items()):
            label = labels.get(stem, ("", ""))[1]
            if not label:
                reject(
                    path.name, f"{path} has no label in {labels_csv}; expected a row '{path.name},<label>'."
                )
                del dng_by_stem[stem]
            else:
                target_source[stem] = label
    else:
        masks_dir = Path(masks_dir)
        if not masks_dir.is_dir():
            raise InputError(f"Mask folder {masks_dir} does not exist or is not a directory.")
        masks = sorted(p for p in masks_dir.iterdir() if p.is_file() and p.suffix.lower() in MASK_SUFFIXES)
        masks_by_stem: dict[str, list[Path]] = {}
        for mask in masks:
            masks_by_stem.setdefault(mask.stem, []).append(mask)
            if mask.stem not in dng_by_stem:
                reject(mask.name, f"{mask} is a mask without a DNG file {mask.stem}.dng in {root}.")
        for stem, path in list(dng_by_stem.items()):
            candidates = masks_by_stem.get(stem, [])
            if len(candidates) != 1:
                found = "none" if not candidates else ", ".join(m.name for m in candidates)
                reject(
                    path.name, f"{path} needs exactly one mask {stem}.png/.tif in {masks_dir}; found {found}."
                )
                del dng_by_stem[stem]
            else:
                target_source[stem] = candidates[0]

    fallbacks: dict[str, list[str]] = defaultdict(list)
    mosaics, cameras, names, targets = [], [], [], []
    first: DngRaw | None = None
    first_name = ""
    for stem, path in dng_by_stem.items():
        try:
            dng = read_dng(path, fallbacks)
            if first is not None and dng.mosaic.shape != first.mosaic.shape:
                raise BadFileError(
                    f"{path} has a {dng.mosaic.shape[0]}x{dng.mosaic.shape[1]} mosaic; expected "
                    f"{first.mosaic.shape[0]}x{first.mosaic.shape[1]} like {first_name}."
                )
            # One white level normalises the whole stack (RawDataset.normalised).
            if first is not None and dng.white_level != first.white_level:
                raise BadFileError(
                    f"{path} has white level {dng.white_level:g}; expected {first.white_level:g} like {first_name}."
                )
            if masks_dir is not None:
                mask_path = target_source[stem]
                target = _read_mask(mask_path)
                if target.shape == dng.visible_shape:
                    target = target[: dng.mosaic.shape[0], : dng.mosaic.shape[1]]
                if target.shape != dng.mosaic.shape:
                    raise BadFileError(
                        f"{mask_path} is {target.shape[0]}x{target.shape[1]}; expected "
                        f"{dng.mosaic.shape[0]}x{dng.mosaic.shape[1]} like the mosaic of {path.name} "
                        "(its whole active area; DefaultCrop is not applied)."
                    )
            else:
                target = target_source[stem]
        except BadFileError as bad:
            reject(path.name, str(bad))
            continue
        if first is None:
            first, first_name = dng, path.name
        mosaics.append(dng.mosaic)
        cameras.append(dng.camera)
        names.append(stem)
        targets.append(target)

    for kind, files in fallbacks.items():
        warnings.warn(f"{len(files)} DNG file(s) in {root} have {kind}: {_listing(files)}.", stacklevel=2)
    if first is None:
        raise InputError(f"DNG folder {root} has no usable DNG files; all were skipped: {_listing(skipped)}.")

    if labels_csv is not None:
        classes = sorted(set(targets))
        target_array = np.array([classes.index(label) for label in targets], dtype=np.int64)
        task = "classification"
    else:
        classes = list(SEGMENTATION_CLASSES)
        target_array = np.stack(targets).astype(np.uint8)
        task = "segmentation"
    return RawDataset(
        raw=np.stack(mosaics).astype(np.uint16, copy=False),
        white_level=first.white_level,
        targets=target_array,
        task=task,
        camera=cameras[0],
        names=names,
        classes=classes,
        groups=np.arange(len(mosaics), dtype=np.int64),
        cameras=cameras,
        name=name,
        skipped=skipped,
    )
