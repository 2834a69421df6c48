"""A folder of the user's own DNG raw files, read with rawpy (LibRaw), as a ``RawDataset``.

Layout::

    <root>/*.dng                  one Bayer raw per file (suffix in any case), read in name order
    labels.csv                    classification: header ``file,label``; ``file`` with or without ``.dng``
    <masks_dir>/<stem>.png|.tif   segmentation: one binary mask per DNG (> 0 is foreground)

What is read from each file, and how LibRaw presents it:

- Mosaic: ``raw_image_visible``, i.e. the DNG ``ActiveArea`` (LibRaw moves an odd ``ActiveArea``
  origin to the next even row/column so the CFA phase is kept). ``DefaultCrop`` is *not*
  applied (LibRaw only reports it), so the whole active area is kept. A trailing odd row or
  column is dropped so that H and W are even.
- Bayer pattern: the colours of the top-left 2x2 block of the visible mosaic
  (``raw_colors_visible`` through ``color_desc``). Other CFAs (X-Trans, CMYG, ...) are rejected.
- White level: ``white_level`` (the DNG ``WhiteLevel``; 2^bits - 1 when the tag is absent).
- Black level: ``black_level_per_channel`` is indexed by LibRaw's colour index (R, G, B, G2),
  so each 2x2 site takes the value of its colour; divided by the white level.
- White balance: ``camera_whitebalance`` (1 / ``AsShotNeutral``), divided by its green gain.
- Colour matrix (white-balanced camera RGB -> linear sRGB): rawpy's ``color_matrix``, which
  LibRaw derives from the file's ``ColorMatrix``/``CameraCalibration`` with the same recipe as
  :func:`srgb_from_camera` (LibRaw picks between ColorMatrix1 and 2; given Standard-A and D65 it
  takes D65). LibRaw leaves ``rgb_xyz_matrix`` empty for DNG files (LibRaw issue #751) unless it
  knows the camera model from its own table; that table matrix is the fallback, then the
  identity, each with a warning.
"""

from __future__ import annotations

import csv
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from raw2logit.data.dataset import RawDataset
from raw2logit.data.files import BadFiles
from raw2logit.errors import InputError
from raw2logit.isp.camera import CameraParams
from raw2logit.names import BAYER_PATTERNS

DNG_SUFFIX = ".dng"
MASK_SUFFIXES = (".png", ".tif", ".tiff")
SEGMENTATION_CLASSES = ["background", "foreground"]

# Linear sRGB (D65) -> CIE XYZ, the matrix dcraw and LibRaw use (``xyz_rgb``), so that a matrix
# derived here equals the one LibRaw derives from the same XYZ -> camera matrix.
SRGB_TO_XYZ = np.array(
    [
        [0.412453, 0.357580, 0.180423],
        [0.212671, 0.715160, 0.072169],
        [0.019334, 0.119193, 0.950227],
    ]
)


def srgb_from_camera(xyz_to_camera) -> np.ndarray:
    """Colour matrix from white-balanced camera RGB to linear sRGB (dcraw's ``cam_xyz_coeff``).

    The camera response to each sRGB primary is ``xyz_to_camera @ SRGB_TO_XYZ``; normalising its rows
    to sum 1 makes sRGB white produce equal camera values, which is what white balance delivers, so
    the inverse maps white-balanced camera white (1, 1, 1) to sRGB white (1, 1, 1).

    Args:
        xyz_to_camera: (3, 3) or (4, 3) matrix from CIE XYZ to camera RGB (a DNG ``ColorMatrix``,
            LibRaw's ``rgb_xyz_matrix``); only the first three rows (R, G, B) are used.

    Returns:
        (3, 3) float64 matrix ``M`` with ``srgb = M @ camera_rgb``, rows summing to 1.

    Raises:
        ValueError: if the matrix is singular or a row of camera responses sums to zero.
    """
    camera_from_srgb = np.asarray(xyz_to_camera, dtype=np.float64)[:3, :3] @ SRGB_TO_XYZ
    row_sums = camera_from_srgb.sum(axis=1, keepdims=True)
    if not np.all(np.isfinite(camera_from_srgb)) or np.any(np.abs(row_sums) < 1e-12):
        raise ValueError(f"XYZ -> camera matrix {np.round(camera_from_srgb, 6).tolist()} is degenerate.")
    return np.linalg.inv(camera_from_srgb / row_sums)


class _BadFileError(Exception):
    """A file this loader cannot use; the message is the user-facing sentence."""


@dataclass
class _Dng:
    mosaic: np.ndarray  # (H, W) uint16, H and W even
    visible_shape: tuple[int, int]  # before dropping an odd row/column
    white_level: float
    camera: CameraParams


def _listing(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _libraw_text(error: Exception) -> str:
    # rawpy passes LibRaw's message as bytes.
    text = error.args[0] if error.args else ""
    return text.decode(errors="replace") if isinstance(text, bytes) else str(text)


def _read_dng(path: Path, fallbacks: dict[str, list[str]]) -> _Dng:
    """Read one DNG; metadata it lacks is noted in ``fallbacks`` (kind -> file names)."""
    import rawpy

    try:
        with rawpy.imread(str(path)) as raw:
            visible = raw.raw_image_visible
            if visible is None or visible.ndim != 2:
                raise _BadFileError(
                    f"{path} holds no single-plane colour filter array mosaic (e.g. a linear DNG)."
                )
            pattern_size = None if raw.raw_pattern is None else raw.raw_pattern.shape
            colour_names = raw.color_desc.decode("ascii", errors="replace")
            site_colours = raw.raw_colors_visible[:2, :2].ravel().tolist()
            white_level = float(raw.white_level)
            black_per_colour = list(raw.black_level_per_channel)
            white_balance = np.asarray(raw.camera_whitebalance, dtype=np.float64)
            file_matrix = np.asarray(raw.color_matrix, dtype=np.float64)[:3, :3]
            table_matrix = np.asarray(raw.rgb_xyz_matrix, dtype=np.float64)[:3, :3]
            height, width = visible.shape
            # Copy: the buffer belongs to LibRaw and is freed when the file is closed.
            mosaic = np.array(visible[: height - height % 2, : width - width % 2], dtype=np.uint16)
    except rawpy.LibRawError as error:
        raise _BadFileError(
            f"{path} is not a readable DNG raw file ({type(error).__name__}: {_libraw_text(error)})."
        ) from None
    except OSError as error:
        raise _BadFileError(f"{path} cannot be read ({error}).") from None

    if mosaic.size == 0:
        raise _BadFileError(f"{path} has a {height}x{width} visible area; expected at least 2x2 pixels.")
    if pattern_size != (2, 2) or len(site_colours) != 4:
        raise _BadFileError(
            f"{path} has a {pattern_size} colour filter array (e.g. X-Trans); "
            f"expected a 2x2 Bayer mosaic ({', '.join(BAYER_PATTERNS)})."
        )
    pattern = "".join(colour_names[c] for c in site_colours)
    if pattern not in BAYER_PATTERNS:
        raise _BadFileError(
            f"{path} has the colour filter array {pattern} (colours {colour_names}); "
            f"expected a Bayer mosaic ({', '.join(BAYER_PATTERNS)})."
        )
    if not white_level > max(black_per_colour):
        raise _BadFileError(f"{path} has white level {white_level:g}; expected it above the black level.")

    black_level = tuple(black_per_colour[c] / white_level for c in site_colours)

    # Index 1 is the first green; LibRaw reports the second green (index 3) as 0 when it equals it.
    red, green, blue = white_balance[:3]
    if np.all(np.isfinite(white_balance[:3])) and min(red, green, blue) > 0:
        gains = (red / green, 1.0, blue / green)
    else:
        fallbacks["no as-shot white balance (AsShotNeutral); using gains (1, 1, 1)"].append(path.name)
        gains = (1.0, 1.0, 1.0)

    colour_matrix = np.eye(3)
    if np.any(file_matrix) and np.all(np.isfinite(file_matrix)):
        colour_matrix = file_matrix
    elif np.any(table_matrix):
        try:
            colour_matrix = srgb_from_camera(table_matrix)
            fallbacks["no ColorMatrix; using LibRaw's built-in matrix for the camera model"].append(path.name)
        except ValueError:
            fallbacks["no usable ColorMatrix; using the identity colour matrix"].append(path.name)
    else:
        fallbacks["no ColorMatrix; using the identity colour matrix"].append(path.name)

    camera = CameraParams(
        black_level=black_level,
        white_balance=gains,
        colour_matrix=colour_matrix.tolist(),
        pattern=pattern,
        name=path.stem,
    )
    return _Dng(mosaic=mosaic, visible_shape=(height, width), white_level=white_level, camera=camera)


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
        raise _BadFileError(
            f"{path} is not a readable mask image ({type(error).__name__}: {error})."
        ) from None
    if mask.ndim == 3 and mask.shape[-1] <= 4:
        # Drop an alpha channel: an opaque alpha would mark every pixel as foreground.
        mask = mask[..., :3] if mask.shape[-1] in (3, 4) else mask[..., :1]
        mask = mask.max(axis=-1)
    if mask.ndim != 2:
        raise _BadFileError(f"{path} must be a single 2-D mask image; it has shape {mask.shape}.")
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
    first: _Dng | None = None
    first_name = ""
    for stem, path in dng_by_stem.items():
        try:
            dng = _read_dng(path, fallbacks)
            if first is not None and dng.mosaic.shape != first.mosaic.shape:
                raise _BadFileError(
                    f"{path} has a {dng.mosaic.shape[0]}x{dng.mosaic.shape[1]} mosaic; expected "
                    f"{first.mosaic.shape[0]}x{first.mosaic.shape[1]} like {first_name}."
                )
            # One white level normalises the whole stack (RawDataset.normalised).
            if first is not None and dng.white_level != first.white_level:
                raise _BadFileError(
                    f"{path} has white level {dng.white_level:g}; expected {first.white_level:g} like {first_name}."
                )
            if masks_dir is not None:
                mask_path = target_source[stem]
                target = _read_mask(mask_path)
                if target.shape == dng.visible_shape:
                    target = target[: dng.mosaic.shape[0], : dng.mosaic.shape[1]]
                if target.shape != dng.mosaic.shape:
                    raise _BadFileError(
                        f"{mask_path} is {target.shape[0]}x{target.shape[1]}; expected "
                        f"{dng.mosaic.shape[0]}x{dng.mosaic.shape[1]} like the mosaic of {path.name} "
                        "(its whole active area; DefaultCrop is not applied)."
                    )
            else:
                target = target_source[stem]
        except _BadFileError as bad:
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
