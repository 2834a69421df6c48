"""Reading one DNG raw file with rawpy (LibRaw): the mosaic and the camera parameters it carries.

The public DNG reader that the DNG folder loader (``raw2logit.data.dng_folder``) and calibration
(the device's raws) share. ``read_dng(path, fallbacks)`` returns a ``DngRaw``; a file it cannot use
raises ``BadFileError`` whose message is the user-facing sentence; metadata a file lacks is noted
in ``fallbacks`` (kind -> file names) and replaced by a stated default.

What is read and how LibRaw presents it:

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

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from raw2logit.isp.camera import CameraParams
from raw2logit.names import BAYER_PATTERNS

DNG_SUFFIX = ".dng"

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


class BadFileError(Exception):
    """A file this loader cannot use; the message is the user-facing sentence."""


@dataclass
class DngRaw:
    mosaic: np.ndarray  # (H, W) uint16, H and W even
    visible_shape: tuple[int, int]  # before dropping an odd row/column
    white_level: float
    camera: CameraParams


def _libraw_text(error: Exception) -> str:
    # rawpy passes LibRaw's message as bytes.
    text = error.args[0] if error.args else ""
    return text.decode(errors="replace") if isinstance(text, bytes) else str(text)


def read_dng(path: Path, fallbacks: dict[str, list[str]]) -> DngRaw:
    """Read one DNG; metadata it lacks is noted in ``fallbacks`` (kind -> file names)."""
    import rawpy

    try:
        with rawpy.imread(str(path)) as raw:
            visible = raw.raw_image_visible
            if visible is None or visible.ndim != 2:
                raise BadFileError(
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
        raise BadFileError(
            f"{path} is not a readable DNG raw file ({type(error).__name__}: {_libraw_text(error)})."
        ) from None
    except OSError as error:
        raise BadFileError(f"{path} cannot be read ({error}).") from None

    if mosaic.size == 0:
        raise BadFileError(f"{path} has a {height}x{width} visible area; expected at least 2x2 pixels.")
    if pattern_size != (2, 2) or len(site_colours) != 4:
        raise BadFileError(
            f"{path} has a {pattern_size} colour filter array (e.g. X-Trans); "
            f"expected a 2x2 Bayer mosaic ({', '.join(BAYER_PATTERNS)})."
        )
    pattern = "".join(colour_names[c] for c in site_colours)
    if pattern not in BAYER_PATTERNS:
        raise BadFileError(
            f"{path} has the colour filter array {pattern} (colours {colour_names}); "
            f"expected a Bayer mosaic ({', '.join(BAYER_PATTERNS)})."
        )
    if not white_level > max(black_per_colour):
        raise BadFileError(f"{path} has white level {white_level:g}; expected it above the black level.")

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
    return DngRaw(mosaic=mosaic, visible_shape=(height, width), white_level=white_level, camera=camera)
