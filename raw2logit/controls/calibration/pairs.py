"""Reading calibration pairs: a folder of DNG raws with the device's processed image of each."""

from __future__ import annotations

import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from raw2logit.data.dng import DNG_SUFFIX, BadFileError, read_dng
from raw2logit.data.files import BadFiles
from raw2logit.errors import InputError
from raw2logit.isp.camera import CameraParams

PROCESSED_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
# A processed image this much smaller than its raw (per side) is most likely a camera JPEG
# without the sensor's border (DNG DefaultCrop): the error message says so.
BORDER_LIMIT = 64


@dataclass
class CalibrationPairs:
    """Paired raw and processed images of one device.

    Attributes:
        raw: (N, H, W) float32 mosaics in [0, 1] (counts divided by each file's white level).
        rgb: (N, H, W, 3) float32 processed images in [0, 1] (divided by 2^bits - 1).
        names: file stems, in the order of ``raw`` and ``rgb``.
        camera: initial ``CameraParams`` from the first DNG's metadata.
        bits: bit depth of the processed images (8 or 16).
        cameras: ``CameraParams`` of every DNG.
        skipped: files skipped with ``on_bad_file="skip"``.
    """

    raw: np.ndarray
    rgb: np.ndarray
    names: list[str]
    camera: CameraParams
    bits: int
    cameras: list[CameraParams] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)


def _png_bit_depth(path: Path) -> int | None:
    """Bit depth from a PNG's IHDR chunk (Pillow reads 16-bit RGB PNGs as 8-bit without telling)."""
    with path.open("rb") as stream:
        header = stream.read(26)
    if len(header) < 26 or header[:8] != b"\x89PNG\r\n\x1a\n" or header[12:16] != b"IHDR":
        return None
    return header[24]


def _read_png16(path: Path) -> np.ndarray:
    """A 16-bit PNG as (H, W, C) uint16. pypng decodes every bit depth exactly and needs no system
    library (Pillow truncates 16-bit RGB to 8 bits; OpenCV needs libGL unless headless)."""
    import png

    try:
        width, height, rows, info = png.Reader(filename=str(path)).asDirect()
        image = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows])
    except (png.Error, OSError, ValueError) as error:
        raise BadFileError(f"{path} is not a readable PNG image ({error}).") from None
    return image.reshape(height, width, info["planes"])


def _read_processed(path: Path) -> tuple[np.ndarray, int]:
    """A processed image as (H, W, 3) float32 in [0, 1], and its bit depth (8 or 16).

    EXIF orientation is not applied: the image is compared with the raw as stored on the sensor.
    """
    suffix = path.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            image = tifffile.imread(path)
            if image.ndim == 3 and image.shape[0] in (3, 4) and image.shape[-1] not in (3, 4):
                image = np.moveaxis(image, 0, -1)  # planar (separate) samples
        elif suffix == ".png" and _png_bit_depth(path) == 16:
            image = _read_png16(path)
        else:
            from PIL import Image

            with Image.open(path) as opened:
                mode = opened.mode
                if mode in ("1", "L", "LA", "I", "F") or mode.startswith("I;"):
                    raise BadFileError(
                        f"{path} is a grey-scale image (mode {mode}); expected an RGB image of the raw."
                    )
                if mode == "P":
                    opened = opened.convert("RGB")
                elif mode not in ("RGB", "RGBA"):
                    raise BadFileError(f"{path} has colour mode {mode}; expected an RGB image.")
                image = np.asarray(opened)
    except BadFileError:
        raise
    except Exception as error:  # any decoder failure means an unreadable or corrupt file
        raise BadFileError(
            f"{path} is not a readable image ({type(error).__name__}: {error}); expected an 8- or "
            "16-bit RGB JPEG, PNG or TIFF."
        ) from None
    if image.ndim == 2 or (image.ndim == 3 and image.shape[-1] in (1, 2)):
        raise BadFileError(f"{path} is a grey-scale image; expected an RGB image of the raw.")
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise BadFileError(f"{path} has shape {image.shape}; expected an (H, W, 3) RGB image.")
    if image.dtype == np.uint8:
        bits = 8
    elif image.dtype == np.uint16:
        bits = 16
    else:
        raise BadFileError(f"{path} holds {image.dtype} values; expected 8- or 16-bit unsigned integers.")
    rgb = image[..., :3].astype(np.float32) / np.float32(2**bits - 1)
    return rgb, bits


def _size_problem(image_shape, mosaic_shape, visible_shape, path: Path, raw_path: Path) -> str:
    """The sentence that explains why a processed image does not fit its raw."""
    height, width = image_shape
    raw_height, raw_width = mosaic_shape
    expected = f"expected {raw_height}x{raw_width} like the mosaic of {raw_path.name}"
    if visible_shape != mosaic_shape:
        expected += f" (or {visible_shape[0]}x{visible_shape[1]}, its visible area)"
    if (width, height) in (tuple(mosaic_shape), tuple(visible_shape)) and height != width:
        return f"{path} is {height}x{width}, i.e. rotated; {expected}: save it without rotation."
    dh, dw = raw_height - height, raw_width - width
    if 0 <= dh <= BORDER_LIMIT and 0 <= dw <= BORDER_LIMIT:
        return (
            f"{path} is {height}x{width}, {dh} rows and {dw} columns smaller than the raw, as camera JPEGs "
            f"that leave out the sensor's border (DNG DefaultCrop) are; {expected}: export it from the "
            "raw at full size (images are not resized or aligned automatically)."
        )
    return f"{path} is {height}x{width}; {expected}."


def read_pairs(folder: str | Path, on_bad_file: str = "raise") -> CalibrationPairs:
    """Read a folder of DNG raws with same-stem processed images.

    Layout::

        <folder>/<stem>.dng                               the raw (suffix in any case)
        <folder>/<stem>.jpg|.jpeg|.png|.tif|.tiff         the device's processed image of it

    Raws are read as ``load_dng_folder`` reads them (rawpy; the even-cropped visible area; camera
    parameters from the metadata). A processed image must be 8- or 16-bit RGB (an alpha channel
    is dropped) of the mosaic's size, or of the visible area before the even crop (then cropped
    alike); it is never resized. Other files in the folder are ignored.

    Args:
        folder: the folder holding the pairs.
        on_bad_file: ``"raise"``: a bad file raises ``InputError`` naming it; ``"skip"``: it is
            skipped with a warning and recorded in ``CalibrationPairs.skipped``. Bad files are a
            raw without processed image or the reverse, two processed images for one raw,
            unreadable files, a grey-scale image, a size unlike the raw's, a raw size or a bit
            depth unlike the first pair's.

    Returns:
        ``CalibrationPairs`` in file-name order.

    Raises:
        InputError: a missing folder, a folder without usable pairs, or (with ``"raise"``) the first
            bad file.
    """
    bad = BadFiles(on_bad_file)
    reject, skipped = bad.reject, bad.skipped
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"Calibration folder {folder} does not exist or is not a directory.")

    # Hidden files (e.g. macOS "._IMG_0001.JPG" resource forks) are not images of the device.
    files = sorted(
        (p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")), key=lambda p: p.name
    )
    raws: dict[str, Path] = {}
    for path in files:
        if path.suffix.lower() != DNG_SUFFIX:
            continue
        if path.stem in raws:
            reject(path.name, f"{path} has the same stem as {raws[path.stem].name}; expected unique stems.")
            continue
        raws[path.stem] = path
    processed: dict[str, list[Path]] = {}
    for path in files:
        if path.suffix.lower() in PROCESSED_SUFFIXES:
            processed.setdefault(path.stem, []).append(path)
    if not raws and not processed:
        raise InputError(
            f"Calibration folder {folder} holds no DNG raws and no processed images "
            f"({', '.join(PROCESSED_SUFFIXES)})."
        )

    for stem, images in processed.items():
        if stem not in raws:
            for image in images:
                reject(image.name, f"{image} is a processed image without a raw file {stem}.dng in {folder}.")
    matched: dict[str, tuple[Path, Path]] = {}
    for stem, raw_path in raws.items():
        images = processed.get(stem, [])
        if len(images) != 1:
            found = "none" if not images else ", ".join(p.name for p in images)
            reject(
                raw_path.name,
                f"{raw_path} needs exactly one processed image {stem}.jpg/.png/.tif in {folder}; found {found}.",
            )
            continue
        matched[stem] = (raw_path, images[0])

    fallbacks: dict[str, list[str]] = defaultdict(list)
    raw_list, rgb_list, names, cameras = [], [], [], []
    first: tuple[str, tuple[int, int], int] | None = None  # (name, mosaic shape, bits)
    for stem, (raw_path, image_path) in matched.items():
        try:
            dng = read_dng(raw_path, fallbacks)
            if first is not None and dng.mosaic.shape != first[1]:
                raise BadFileError(
                    f"{raw_path} has a {dng.mosaic.shape[0]}x{dng.mosaic.shape[1]} mosaic; expected "
                    f"{first[1][0]}x{first[1][1]} like {first[0]}."
                )
            rgb, bits = _read_processed(image_path)
            if rgb.shape[:2] == dng.visible_shape:
                rgb = rgb[: dng.mosaic.shape[0], : dng.mosaic.shape[1]]
            if rgb.shape[:2] != dng.mosaic.shape:
                raise BadFileError(
                    _size_problem(rgb.shape[:2], dng.mosaic.shape, dng.visible_shape, image_path, raw_path)
                )
            if first is not None and bits != first[2]:
                raise BadFileError(f"{image_path} is {bits}-bit; expected {first[2]}-bit like {first[0]}.")
        except BadFileError as bad:
            reject(raw_path.name, str(bad))
            continue
        if first is None:
            first = (raw_path.name, dng.mosaic.shape, bits)
        raw_list.append(np.clip(dng.mosaic.astype(np.float32) / np.float32(dng.white_level), 0.0, 1.0))
        rgb_list.append(np.ascontiguousarray(rgb))
        names.append(stem)
        cameras.append(dng.camera)

    for kind, notes in fallbacks.items():
        warnings.warn(f"{len(notes)} DNG file(s) in {folder} have {kind}: {', '.join(notes)}.", stacklevel=2)
    if first is None:
        raise InputError(
            f"Calibration folder {folder} has no usable raw/processed pairs; skipped: {', '.join(skipped) or 'none'}."
        )
    gains = np.array([camera.white_balance for camera in cameras])
    if np.any(np.abs(gains / gains[:1] - 1) > 0.01):
        varied = ", ".join(f"{n}: {np.round(g, 3).tolist()}" for n, g in zip(names[:4], gains[:4]))
        warnings.warn(
            f"The as-shot white balance differs between the DNGs in {folder} ({varied}); calibration fits one "
            "white balance, so capture the pairs with a fixed white balance.",
            stacklevel=2,
        )
    return CalibrationPairs(
        raw=np.stack(raw_list),
        rgb=np.stack(rgb_list),
        names=names,
        camera=cameras[0],
        bits=first[2],
        cameras=cameras,
        skipped=skipped,
    )
