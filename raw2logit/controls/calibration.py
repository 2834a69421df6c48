"""Data model calibration: fit the parametrized data model to a real device from paired images.

A device (a camera's own processing, a lab's acquisition software) turns each raw capture into
an RGB image through its own ISP. From pairs (DNG raw, the device's processed image of it),
``fit`` picks the static pipeline variant (demosaic, sharpen, denoise; Section 4.2.1) whose
structure matches the device best, then fits θ of a ``ParametrizedPipeline`` of that variant
(Appendix A.1.2) by gradient descent, so drift synthesis can emulate a named camera or lab.
The fitted model is written as a θ file (``ParametrizedPipeline.save_theta_json``) that
``raw2logit.isp.specs.build_data_model("calibrated:/path/to/device.json")`` reloads.

Colour space: a device's processed images are taken to be sRGB-encoded, as camera JPEGs and
raw-converter exports are: with ``tone_curve="srgb"`` the model ends in the sRGB transfer curve,
so its colour matrix maps white-balanced camera RGB to linear sRGB. ``tone_curve="power"``
instead ends in the paper's ``x ** (1/γ)`` with γ learned (devices with a plain gamma curve, or
to stay within the paper's data model). Colour differences (ΔE, CIEDE2000) are computed by
reading both images as sRGB (``skimage.color.rgb2lab``).

Loss: the device's output is 8-bit quantised and clipped, so the fit minimises a Charbonnier
loss ``sqrt(d² + s²) - s`` with ``s`` one 8-bit step (quadratic within a step, where the
target's rounding hides the truth; linear beyond, robust to compression artefacts), divided by
``s`` so that it reads as 8-bit steps, and ignores target values that are saturated
(>= 254/255) or black (<= 1/255): there the device clipped and the target no longer says
how far off the model is. Clipping acts per channel, so the mask is per channel too. A border
of ``margin`` pixels is left out of the loss and the metrics: devices handle image borders
in their own ways.

Degeneracies: white balance and colour matrix multiply (``M @ diag(wb)``), so only their product
is determined by the data (``effective_colour_matrix``); likewise the sharpen and denoise
kernels act in series on the luma, so only their combination is determined.
"""

from __future__ import annotations

import csv
import math
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from raw2logit.data.dng import DNG_SUFFIX, BadFileError, read_dng
from raw2logit.data.files import BadFiles, write_json_atomic
from raw2logit.errors import InputError, check_finite_loss
from raw2logit.isp.camera import CameraParams
from raw2logit.isp.parametrized import ParametrizedPipeline
from raw2logit.isp.validation import check_raw
from raw2logit.names import STATIC_PIPELINE_NAMES, TONE_CURVES, resolve_pipeline_names

PROCESSED_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
# A processed image this much smaller than its raw (per side) is most likely a camera JPEG
# without the sensor's border (DNG DefaultCrop): the error message says so.
BORDER_LIMIT = 64
LOSS_SCALE = 1.0 / 255.0
SATURATED = 254.0 / 255.0
BLACK = 1.0 / 255.0
# The continuous colour parameters fitted for every candidate variant.
COLOUR_GROUPS = ("black_level", "white_balance", "colour_matrix", "gamma")
# Learning rate per θ group relative to ``lr``: Adam steps are about ``lr`` in each parameter's
# own units, and black levels (a few hundredths) and kernel taps (tenths) are smaller numbers
# than gains and matrix entries (about 1).
GROUP_LR = {
    "black_level": 0.1,
    "demosaic": 0.1,
    "white_balance": 1.0,
    "colour_matrix": 1.0,
    "sharpen": 0.1,
    "denoise": 0.1,
    "gamma": 1.0,
}
FINAL_LR_FRACTION = 0.01  # cosine decay of every group's learning rate down to this fraction


# -- reading pairs ------------------------------------------------------------------------------


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


# -- simulation (tests, demos) -------------------------------------------------------------------


def _as_raw_tensor(raw, what: str = "raw") -> torch.Tensor:
    tensor = raw if isinstance(raw, torch.Tensor) else torch.tensor(np.asarray(raw))
    if tensor.ndim == 2:
        tensor = tensor[None]
    if not tensor.is_floating_point():
        raise InputError(f"{what} must be floating-point mosaics in [0, 1]; got dtype {tensor.dtype}.")
    check_raw(tensor)
    return tensor


def quantise(rgb: torch.Tensor | np.ndarray, bits: int):
    """Round values in [0, 1] to ``bits``-bit levels (as a device writing an image file does)."""
    levels = 2**bits - 1
    if isinstance(rgb, torch.Tensor):
        return torch.round(rgb.clamp(0, 1) * levels) / levels
    return np.round(np.clip(rgb, 0, 1) * levels) / levels


@torch.no_grad()
def simulate_pairs(
    raw,
    camera: CameraParams,
    variant: str = "bi_s_ga",
    theta_overrides: Mapping[str, object] | None = None,
    tone_curve: str = "srgb",
    quantise_bits: int | None = 8,
) -> np.ndarray:
    """Process raw through a hidden data model, as a device would: for tests and demos.

    Args:
        raw: (N, H, W) or (H, W) mosaics in [0, 1] (numpy or torch).
        camera: the device's ``CameraParams`` (θ_stat of the hidden model).
        variant: the hidden model's static variant, one of ``STATIC_PIPELINE_NAMES``.
        theta_overrides: θ groups that replace θ_stat (group name -> values, as
            ``ParametrizedPipeline.theta_dict`` writes them).
        tone_curve: ``"srgb"`` or ``"power"``.
        quantise_bits: round the output to this many bits (8 as a JPEG); None keeps floats.

    Returns:
        (N, H, W, 3) float32 processed images in [0, 1].
    """
    tensor = _as_raw_tensor(raw).double()
    hidden = ParametrizedPipeline(
        camera, theta=dict(theta_overrides or {}), variant=variant, tone_curve=tone_curve
    )
    views = hidden(tensor).clamp(0, 1)
    if quantise_bits is not None:
        views = quantise(views, quantise_bits)
    return views.permute(0, 2, 3, 1).float().numpy()


# -- fitting --------------------------------------------------------------------------------------


def effective_colour_matrix(pipeline: ParametrizedPipeline) -> np.ndarray:
    """``M @ diag(wb)``: the white balance and colour matrix as one (3, 3) map, which the data determine."""
    matrix = pipeline.colour_matrix.detach().double().cpu().numpy()
    gains = pipeline.white_balance.detach().double().cpu().numpy()
    return matrix * gains[None, :]


def calibration_loss(view: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Charbonnier loss in 8-bit steps over the valid target values.

    Args:
        view: model output (B, 3, H, W) in [0, 1].
        target: device output (B, 3, H, W) in [0, 1].
        valid: (B, 3, H, W) bool, False where the target is saturated, black or in the border.

    Returns:
        scalar ``mean((sqrt(d² + s²) - s) / s)`` over valid values, ``s`` one 8-bit step.
    """
    difference = (view - target) / LOSS_SCALE
    per_value = torch.sqrt(difference * difference + 1.0) - 1.0
    return (per_value * valid).sum() / valid.sum().clamp_min(1)


def _valid_mask(target: torch.Tensor, margin: int) -> torch.Tensor:
    valid = (target > BLACK) & (target < SATURATED)
    if margin:
        border = torch.ones_like(valid)
        border[..., margin:-margin, margin:-margin] = False
        valid &= ~border
    return valid


def _interior(image: np.ndarray, margin: int) -> np.ndarray:
    """(H, W, 3) without a border of ``margin`` pixels."""
    return image[margin : image.shape[0] - margin, margin : image.shape[1] - margin]


@torch.no_grad()
def _view(pipeline: ParametrizedPipeline, raw: torch.Tensor) -> np.ndarray:
    """(H, W, 3) float64 view of one (H, W) mosaic."""
    return pipeline(raw[None])[0].clamp(0, 1).permute(1, 2, 0).double().cpu().numpy()


def _image_errors(view: np.ndarray, target: np.ndarray, margin: int) -> tuple[float, float]:
    """(mean squared error, mean ΔE CIEDE2000) of one sRGB image pair (H, W, 3), border left out."""
    from skimage.color import deltaE_ciede2000, rgb2lab

    view = _interior(np.asarray(view, np.float64), margin)
    target = _interior(np.asarray(target, np.float64), margin)
    delta_e = deltaE_ciede2000(rgb2lab(target), rgb2lab(view))
    return float(np.mean((view - target) ** 2)), float(np.mean(delta_e))


def _psnr(mse: float) -> float:
    return 10 * math.log10(1.0 / mse) if mse > 0 else math.inf


def image_metrics(views, targets, margin: int = 0) -> tuple[float, float]:
    """PSNR (dB, peak 1, of the squared error pooled over all images) and mean ΔE (CIEDE2000).

    Args:
        views, targets: (N, H, W, 3) sRGB-encoded images in [0, 1].
        margin: border width (pixels) left out.
    """
    errors = [_image_errors(view, target, margin) for view, target in zip(views, targets)]
    return _psnr(float(np.mean([e[0] for e in errors]))), float(np.mean([e[1] for e in errors]))


def _evaluate(pipeline, raw: torch.Tensor, targets: np.ndarray, margin: int, keep: int = 0):
    """``image_metrics`` of the pipeline's views, one image at a time (bounded memory for large
    raws); also returns the first ``keep`` views."""
    errors, kept = [], []
    for index, target in enumerate(targets):
        view = _view(pipeline, raw[index])
        errors.append(_image_errors(view, target, margin))
        if index < keep:
            kept.append(view)
    return _psnr(float(np.mean([e[0] for e in errors]))), float(np.mean([e[1] for e in errors])), kept


def _crop_batch(raw, target, valid, patch_size, generator):
    if patch_size is None:
        return raw, target, valid
    height, width = raw.shape[-2:]
    top = 2 * int(torch.randint(0, (height - patch_size) // 2 + 1, (1,), generator=generator))
    left = 2 * int(torch.randint(0, (width - patch_size) // 2 + 1, (1,), generator=generator))
    rows, cols = slice(top, top + patch_size), slice(left, left + patch_size)
    return raw[:, rows, cols], target[..., rows, cols], valid[..., rows, cols]


def _optimise(
    pipeline: ParametrizedPipeline,
    groups: Sequence[str],
    raw: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor,
    steps: int,
    lr: float,
    patch_size: int | None,
    margin: int,
    generator: torch.Generator,
) -> None:
    """Adam on ``groups`` of θ with cosine-decaying learning rates, all training pairs per step."""
    if steps == 0 or not groups:
        return
    pipeline.set_trainable(groups)
    optimiser = torch.optim.Adam([{"params": [getattr(pipeline, g)], "lr": lr * GROUP_LR[g]} for g in groups])
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser,
        lambda step: (
            FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * step / steps))
        ),
    )
    for step in range(steps):
        batch_raw, batch_target, batch_valid = _crop_batch(raw, target, valid, patch_size, generator)
        if patch_size is not None:
            batch_valid = _valid_mask(batch_target, margin) & batch_valid
        optimiser.zero_grad(set_to_none=True)
        loss = calibration_loss(pipeline(batch_raw), batch_target, batch_valid)
        check_finite_loss(loss, "calibration loss", 0, step,
                          f"the fit stops with nothing written (calibrate.lr={lr:g}; lower it)")  # fmt: skip
        loss.backward()
        optimiser.step()
        schedule.step()
    pipeline.set_trainable([])


@torch.no_grad()
def _train_loss(pipeline, raw, target, valid) -> float:
    losses = [
        float(calibration_loss(pipeline(raw[i : i + 1]), target[i : i + 1], valid[i : i + 1]))
        for i in range(len(raw))
    ]
    weights = valid.flatten(1).sum(1).double().cpu().numpy()
    return float(np.average(losses, weights=weights)) if weights.sum() else math.nan


def _split(count: int, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) indices, sorted; deterministic in ``seed``."""
    if holdout == 0:
        return np.arange(count), np.array([], dtype=np.int64)
    if count < 2:
        raise InputError(
            f"holdout={holdout} needs at least 2 pairs to hold some out; got {count} (pass holdout=0)."
        )
    held = min(max(1, round(count * holdout)), count - 1)
    order = np.random.default_rng(seed).permutation(count)
    return np.sort(order[held:]), np.sort(order[:held])


@dataclass
class CalibrationResult:
    """A fitted device data model and how well it reproduces the device.

    Attributes:
        variant: the chosen static variant, e.g. ``"ma_u_me"``.
        pipeline: the fitted ``ParametrizedPipeline`` (its camera holds the fitted black level,
            white balance and colour matrix; θ holds every group).
        variants: per candidate variant, after fitting its colour parameters: ``train_loss``
            (8-bit steps), ``heldout_psnr`` (dB), ``heldout_delta_e`` (CIEDE2000).
        psnr, delta_e: the final model's held-out PSNR (dB) and mean ΔE.
        initial_psnr, initial_delta_e: the same for the chosen variant at the initial camera parameters.
        train_loss: the final model's loss on the training pairs.
        train_names, heldout_names: the pairs used for fitting and for the metrics (if nothing is
            held out, the metrics are computed on the training pairs; ``evaluated_on`` says which).
        examples: up to three (name, target, fitted) evaluation images (H, W, 3) for the figure.
        initial_camera: the camera parameters the fit started from.
        settings: the fit's arguments (steps, lr, seed, ...).
    """

    variant: str
    pipeline: ParametrizedPipeline
    variants: dict[str, dict[str, float]]
    psnr: float
    delta_e: float
    initial_psnr: float
    initial_delta_e: float
    train_loss: float
    train_names: list[str]
    heldout_names: list[str]
    evaluated_on: str
    examples: list[tuple[str, np.ndarray, np.ndarray]]
    initial_camera: CameraParams
    settings: dict[str, object]

    @property
    def camera(self) -> CameraParams:
        """The fitted camera parameters (black level, white balance, colour matrix)."""
        return self.pipeline.camera

    def summary(self) -> dict[str, object]:
        return {
            "variant": self.variant,
            "tone_curve": self.pipeline.tone_curve,
            "metrics": {
                "psnr": self.psnr,
                "delta_e": self.delta_e,
                "initial_psnr": self.initial_psnr,
                "initial_delta_e": self.initial_delta_e,
                "train_loss": self.train_loss,
                "evaluated_on": self.evaluated_on,
            },
            "variants": self.variants,
            "theta": self.pipeline.theta_dict(),
            "effective_colour_matrix": effective_colour_matrix(self.pipeline).tolist(),
            "camera": self.pipeline.camera.to_dict(),
            "initial_camera": self.initial_camera.to_dict(),
            "train_pairs": self.train_names,
            "heldout_pairs": self.heldout_names,
            "settings": self.settings,
        }

    def write(self, folder: str | Path) -> dict[str, Path]:
        """Write ``fit.json``, ``variants.csv``, ``residuals.png`` and ``pipeline.json`` into ``folder``.

        ``pipeline.json`` is ``ParametrizedPipeline.save_theta_json``'s file: pass it as
        ``calibrated:<path>`` to ``raw2logit.isp.specs.build_data_model``.

        Returns:
            artifact name -> path.
        """
        directory = Path(folder)
        directory.mkdir(parents=True, exist_ok=True)
        paths = {
            "fit": directory / "fit.json",
            "variants": directory / "variants.csv",
            "residuals": directory / "residuals.png",
            "pipeline": directory / "pipeline.json",
        }
        write_json_atomic(paths["fit"], _json_ready(self.summary()))
        with paths["variants"].open("w", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(["variant", "train_loss", "heldout_psnr", "heldout_delta_e", "chosen"])
            for name, row in self.variants.items():
                writer.writerow(
                    [
                        name,
                        row["train_loss"],
                        row["heldout_psnr"],
                        row["heldout_delta_e"],
                        int(name == self.variant),
                    ]
                )
        from raw2logit.report.figures import residual_figure

        residual_figure(self.examples, f"{self.variant}, {self.evaluated_on} pairs", paths["residuals"])
        self.pipeline.save_theta_json(paths["pipeline"])
        return paths


def _json_ready(value):
    """Non-finite floats as strings (strict JSON has no Infinity/NaN)."""
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def fit(
    pairs_raw,
    pairs_rgb,
    camera: CameraParams,
    variants: str | Iterable[str] = STATIC_PIPELINE_NAMES,
    tone_curve: str = "srgb",
    steps: int = 400,
    lr: float = 0.01,
    holdout: float = 0.25,
    seed: int = 0,
    log: Callable[[str], object] | None = print,
    search_steps: int | None = None,
    margin: int = 4,
    patch_size: int | None = None,
    names: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
) -> CalibrationResult:
    """Fit a data model to a device from paired raw and processed images.

    1. Variant search: for each candidate, a ``ParametrizedPipeline(camera, variant=...)`` fits its
       continuous colour parameters (black level, white balance, colour matrix, and γ with
       ``tone_curve="power"``) for ``search_steps`` steps from the camera's values; the variant
       with the lowest training loss wins (the first in ``variants`` order on an exact tie).
    2. Refinement: the winner continues for ``steps`` steps with every active θ group, kernels
       included (bilinear demosaic kernels for ``bi``, the sharpening kernel for ``s``, the
       Gaussian kernel for ``ga``).

    Adam with one learning rate per group (``lr`` times ``GROUP_LR``), cosine-decayed to 1 %;
    the loss is ``calibration_loss`` (see the module docstring for the loss and colour space).

    Args:
        pairs_raw: (N, H, W) mosaics in [0, 1], H and W even (numpy or torch).
        pairs_rgb: (N, H, W, 3) device images in [0, 1], sRGB-encoded.
        camera: initial camera parameters (e.g. ``CalibrationPairs.camera`` from the DNG metadata).
        variants: candidate static variants, or ``"all"``.
        tone_curve: ``"srgb"`` (device output is sRGB-encoded) or ``"power"`` (learned γ).
        steps: refinement steps.
        lr: base learning rate.
        holdout: fraction of pairs held out for the metrics (at least one when > 0), chosen by ``seed``.
        seed: seeds the held-out split and the patch positions.
        log: called with one line per candidate and for the result; None for silence.
        search_steps: colour-fitting steps per candidate (default ``max(1, steps // 4)``).
        margin: border width (pixels) left out of the loss and the metrics.
        patch_size: even side of random square crops per step (for large images); None: whole images.
        names: pair names for the result and figure (default ``pair0``, ``pair1``, ...).
        device: torch device to fit on.

    Returns:
        ``CalibrationResult``.

    Raises:
        InputError: mismatched shapes, values outside [0, 1], unknown variants or tone curve,
            bad ``steps``, ``holdout``, ``margin`` or ``patch_size``.
    """
    started = time.perf_counter()
    say = log or (lambda message: None)
    variants = resolve_pipeline_names(variants)
    if not variants:
        raise InputError("variants is empty; expected at least one of the static pipeline names.")
    if tone_curve not in TONE_CURVES:
        raise InputError(f"Unknown tone curve {tone_curve!r}; expected one of {', '.join(TONE_CURVES)}.")
    if not isinstance(camera, CameraParams):
        raise InputError(f"camera must be a CameraParams; got {type(camera).__name__}.")
    search_steps = max(1, steps // 4) if search_steps is None else search_steps
    if int(steps) != steps or steps < 0 or int(search_steps) != search_steps or search_steps < 0:
        raise InputError(
            f"steps and search_steps must be non-negative integers; got {steps} and {search_steps}."
        )
    if not 0 <= holdout < 1:
        raise InputError(f"holdout must lie in [0, 1); got {holdout}.")
    raw = _as_raw_tensor(pairs_raw, "pairs_raw").float()
    rgb = pairs_rgb if isinstance(pairs_rgb, torch.Tensor) else torch.tensor(np.asarray(pairs_rgb))
    if rgb.ndim == 3:
        rgb = rgb[None]
    count, height, width = raw.shape
    if tuple(rgb.shape) != (count, height, width, 3):
        raise InputError(
            f"pairs_rgb must have shape (N, H, W, 3) = {(count, height, width, 3)} to match pairs_raw; "
            f"got {tuple(rgb.shape)}."
        )
    rgb = rgb.detach().float().cpu()
    if not torch.isfinite(rgb).all() or rgb.min() < 0 or rgb.max() > 1:
        raise InputError("pairs_rgb must hold finite values in [0, 1] (divide 8-bit images by 255).")
    if not 0 <= margin < min(height, width) // 2 - 1:
        raise InputError(
            f"margin must lie in [0, {min(height, width) // 2 - 2}] for {height}x{width} images; got {margin}."
        )
    if patch_size is not None and (patch_size % 2 or not 2 * margin + 2 <= patch_size <= min(height, width)):
        raise InputError(
            f"patch_size must be even, above 2 x margin and at most {min(height, width)}; got {patch_size}."
        )
    names = [f"pair{i}" for i in range(count)] if names is None else list(names)
    if len(names) != count:
        raise InputError(f"names must give one name per pair ({count}); got {len(names)}.")

    train, held = _split(count, holdout, seed)
    evaluate = held if len(held) else train
    evaluated_on = "held-out" if len(held) else "train"
    raw, target = raw.to(device), rgb.permute(0, 3, 1, 2).contiguous().to(device)
    train_raw, train_target = raw[train], target[train]
    train_valid = _valid_mask(train_target, margin)
    eval_raw, eval_target = raw[evaluate], rgb[evaluate].numpy()
    generator = torch.Generator().manual_seed(seed)

    def metrics(pipeline: ParametrizedPipeline) -> tuple[float, float]:
        return _evaluate(pipeline, eval_raw, eval_target, margin)[:2]

    say(
        f"calibration: {len(train)} training and {len(held)} held-out pair(s) of {height}x{width}, "
        f"{len(variants)} candidate variant(s), tone curve {tone_curve}"
    )
    if patch_size is None and len(train) * height * width > 4_000_000:
        say("calibration: the training pairs are large; pass patch_size (e.g. 256) to fit on random crops")
    table: dict[str, dict[str, float]] = {}
    fitted: dict[str, ParametrizedPipeline] = {}
    for variant in variants:
        pipeline = ParametrizedPipeline(camera, variant=variant, tone_curve=tone_curve).to(device)
        groups = [g for g in COLOUR_GROUPS if g in pipeline.active_groups()]
        _optimise(
            pipeline,
            groups,
            train_raw,
            train_target,
            train_valid,
            search_steps,
            lr,
            patch_size,
            margin,
            generator,
        )
        loss = _train_loss(pipeline, train_raw, train_target, train_valid)
        psnr, delta_e = metrics(pipeline)
        table[variant] = {"train_loss": loss, "heldout_psnr": psnr, "heldout_delta_e": delta_e}
        fitted[variant] = pipeline
        say(
            f"calibration: {variant}: train loss {loss:.3f} (8-bit steps), {evaluated_on} PSNR {psnr:.2f} dB, "
            f"ΔE {delta_e:.2f}"
        )
    ranked = sorted(variants, key=lambda v: (table[v]["train_loss"], variants.index(v)))
    best = ranked[0]
    runner_up = f"; runner-up {ranked[1]} at {table[ranked[1]]['train_loss']:.3f}" if len(ranked) > 1 else ""
    say(
        f"calibration: chose {best} (train loss {table[best]['train_loss']:.3f}{runner_up}); refining all θ groups"
    )

    initial_psnr, initial_delta_e = metrics(
        ParametrizedPipeline(camera, variant=best, tone_curve=tone_curve).to(device)
    )
    pipeline = fitted[best]
    _optimise(
        pipeline,
        pipeline.active_groups(),
        train_raw,
        train_target,
        train_valid,
        steps,
        lr,
        patch_size,
        margin,
        generator,
    )
    # Rebuild around the fitted camera: a static pipeline or θ reset built from the exported
    # file's camera then shows the device's colours. θ overrides θ_stat, so the views are unchanged.
    theta = pipeline.theta_dict()
    fitted_camera = CameraParams(
        theta["black_level"],
        theta["white_balance"],
        theta["colour_matrix"],
        camera.pattern,
        name=f"calibrated {camera.name}",
    )
    pipeline = ParametrizedPipeline(fitted_camera, theta=theta, variant=best, tone_curve=tone_curve).to(
        device
    )
    train_loss = _train_loss(pipeline, train_raw, train_target, train_valid)
    psnr, delta_e, views = _evaluate(pipeline, eval_raw, eval_target, margin, keep=3)
    say(
        f"calibration: {best} fitted: train loss {train_loss:.3f}, {evaluated_on} PSNR {psnr:.2f} dB "
        f"(initial camera {initial_psnr:.2f} dB), ΔE {delta_e:.2f} (initial {initial_delta_e:.2f}) "
        f"in {time.perf_counter() - started:.1f} s"
    )
    examples = [(names[i], eval_target[k].astype(np.float64), views[k]) for k, i in enumerate(evaluate[:3])]
    return CalibrationResult(
        variant=best,
        pipeline=pipeline,
        variants=table,
        psnr=psnr,
        delta_e=delta_e,
        initial_psnr=initial_psnr,
        initial_delta_e=initial_delta_e,
        train_loss=train_loss,
        train_names=[names[i] for i in train],
        heldout_names=[names[i] for i in held],
        evaluated_on=evaluated_on,
        examples=examples,
        initial_camera=camera,
        settings={
            "steps": int(steps),
            "search_steps": int(search_steps),
            "lr": lr,
            "holdout": holdout,
            "seed": seed,
            "margin": margin,
            "patch_size": patch_size,
            "tone_curve": tone_curve,
            "candidates": list(variants),
        },
    )


# -- reloading ------------------------------------------------------------------------------------
