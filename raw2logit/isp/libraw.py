"""LibRaw's own processing as a data model: a real-world ISP to test task models against.

``LibRawPipeline("AHD", camera)`` processes each raw as a user's raw converter would: the mosaic is
written to an in-memory DNG (uncompressed 16-bit CFA with the camera's black level per site,
AsShotNeutral and ColorMatrix1; ``dng_bytes``) and LibRaw develops it (rawpy ``postprocess``) with
the named demosaic algorithm and ``LIBRAW_SETTINGS``: the camera's white balance, sRGB output, the
BT.709 curve (LibRaw's default gamma (2.222, 4.5)), no auto-brightness, ``adjust_maximum_thr=0``
(the same gain for every image: a fixed device), 16-bit output, no rotation. LibRaw is not
differentiable: use it as a static view (``libraw:<algorithm>`` in ``synthesis.train``/``test``),
computed once per dataset and cached like the 12 static pipelines.

What LibRaw does differently from the paper's data model, beyond the demosaic: it scales the raw so
that the white level minus black is full scale, applies the white balance before demosaicing
(normalised so that the smallest gain is 1) and clips there, applies its colour matrix
(camera -> sRGB, rows normalised to map white to white), clips, and encodes with BT.709.

Camera parameters -> DNG: only the product ``E = M diag(wb)`` of the project's colour matrix and
white balance acts; LibRaw takes the white balance from AsShotNeutral and normalises its matrix to
map white to white. The DNG carries AsShotNeutral ``n = E^-1 @ 1`` (the raw colour of sRGB white)
and the matrix ``E diag(n)``, whose product with LibRaw's gains ``1 / n`` is ``E`` again (up to the
global gain LibRaw sets by its own rules).
"""

from __future__ import annotations

import io
import struct

import numpy as np
import torch
from torch import nn

from raw2logit.errors import InputError
from raw2logit.isp.camera import CameraParams, check_camera
from raw2logit.isp.validation import check_raw
from raw2logit.names import LIBRAW_PREFIX, libraw_algorithm

LIBRAW_SETTINGS = {
    "use_camera_wb": True,
    "no_auto_bright": True,
    "output_bps": 16,
    "adjust_maximum_thr": 0.0,
    "user_flip": 0,
}
WHITE_LEVEL = 65535  # raws in [0, 1] are written as 16-bit counts
# DNG CFAPattern codes: 0 red, 1 green, 2 blue, for the 2x2 block read row by row.
CFA_CODES = {"R": 0, "G": 1, "B": 2}
# Linear sRGB (D65) -> CIE XYZ as dcraw and LibRaw use it (raw2logit.data.dng.SRGB_TO_XYZ).
SRGB_TO_XYZ = np.array(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]]
)
D65 = 21  # CalibrationIlluminant1
_RATIONAL_DENOMINATOR = 1_000_000
# TIFF field types
_BYTE, _ASCII, _SHORT, _LONG, _RATIONAL, _SRATIONAL = 1, 2, 3, 4, 5, 10
_TYPE_SIZE = {_BYTE: 1, _ASCII: 1, _SHORT: 2, _LONG: 4, _RATIONAL: 8, _SRATIONAL: 8}


def dng_colour(camera: CameraParams) -> tuple[np.ndarray, np.ndarray]:
    """(AsShotNeutral (3,), ColorMatrix1 (3, 3) XYZ -> camera) that make LibRaw apply the camera's
    ``E = colour_matrix @ diag(white_balance)`` (see the module docstring).

    LibRaw's white balance is ``1 / AsShotNeutral`` and its matrix maps white to white, so the
    neutral must be the raw camera colour of sRGB white, ``E^-1 @ 1``, and the matrix ``E diag(neutral)``.

    Raises:
        InputError: a camera whose raw colour of white is not positive (LibRaw cannot represent it).
    """
    effective = np.asarray(camera.colour_matrix, dtype=np.float64) * np.asarray(camera.white_balance)[None, :]
    try:
        neutral = np.linalg.solve(effective, np.ones(3))  # raw camera RGB of sRGB white
    except np.linalg.LinAlgError:
        raise InputError(
            f"Camera {camera.name!r} has a singular colour matrix; LibRaw needs an invertible one."
        ) from None
    if not np.all(neutral > 0):
        raise InputError(f"Camera {camera.name!r}: sRGB white has the raw colour {np.round(neutral, 4).tolist()} "
                         "with its colour matrix and white balance; LibRaw needs a positive one.")  # fmt: skip
    neutral = neutral / neutral.max()
    libraw_matrix = effective * neutral[None, :]  # rows sum to 1 (up to the scale LibRaw normalises away)
    xyz_to_camera = np.linalg.inv(libraw_matrix) @ np.linalg.inv(SRGB_TO_XYZ)
    return neutral, xyz_to_camera


def _rationals(values, signed: bool = False) -> list[int]:
    out = []
    for value in np.ravel(values):
        out += [round(float(value) * _RATIONAL_DENOMINATOR), _RATIONAL_DENOMINATOR]
    if not signed and min(out) < 0:
        raise InputError(f"DNG rational values must be non-negative; got {np.ravel(values).tolist()}.")
    return out


def dng_bytes(counts: np.ndarray, camera: CameraParams, white_level: int = WHITE_LEVEL) -> bytes:
    """An uncompressed 16-bit Bayer DNG (little-endian TIFF, one strip) of one mosaic, in memory.

    Args:
        counts: (H, W) uint16 raw counts, H and W even.
        camera: black level (per 2x2 site, normalised by ``white_level``), white balance, colour matrix
            and Bayer pattern; written as BlackLevel, AsShotNeutral and ColorMatrix1 (``dng_colour``).
        white_level: the WhiteLevel tag.

    Returns:
        the file's bytes, for ``rawpy.imread(io.BytesIO(...))``.
    """
    counts = np.ascontiguousarray(counts, dtype="<u2")
    height, width = counts.shape
    neutral, xyz_to_camera = dng_colour(camera)
    black = [float(b) * white_level for b in camera.black_level]
    entries = [
        (254, _LONG, [0]),  # NewSubfileType: main image
        (256, _LONG, [width]),
        (257, _LONG, [height]),
        (258, _SHORT, [16]),
        (259, _SHORT, [1]),  # no compression
        (262, _SHORT, [32803]),  # colour filter array
        (273, _LONG, [0]),  # StripOffsets: filled in below
        (277, _SHORT, [1]),
        (278, _LONG, [height]),
        (279, _LONG, [counts.nbytes]),
        (284, _SHORT, [1]),
        (33421, _SHORT, [2, 2]),  # CFARepeatPatternDim
        (33422, _BYTE, [CFA_CODES[c] for c in camera.pattern]),  # CFAPattern
        (50706, _BYTE, [1, 4, 0, 0]),  # DNGVersion
        (50708, _ASCII, list(b"raw2logit\0")),  # UniqueCameraModel
        (50713, _SHORT, [2, 2]),  # BlackLevelRepeatDim
        (50714, _RATIONAL, _rationals(black)),  # BlackLevel
        (50717, _LONG, [white_level]),  # WhiteLevel
        (50721, _SRATIONAL, _rationals(xyz_to_camera, signed=True)),  # ColorMatrix1
        (50728, _RATIONAL, _rationals(neutral)),  # AsShotNeutral
        (50778, _SHORT, [D65]),  # CalibrationIlluminant1
    ]
    ifd_size = 2 + 12 * len(entries) + 4
    extra = bytearray()
    records = []
    data_start = 8 + ifd_size
    for tag, kind, values in entries:
        count = len(values) // 2 if kind in (_RATIONAL, _SRATIONAL) else len(values)
        packing = {_BYTE: "B", _ASCII: "B", _SHORT: "H", _LONG: "I", _RATIONAL: "I", _SRATIONAL: "i"}[kind]
        payload = struct.pack(f"<{len(values)}{packing}", *values)
        if len(payload) <= 4:
            records.append((tag, kind, count, payload.ljust(4, b"\0")))
        else:
            records.append((tag, kind, count, struct.pack("<I", data_start + len(extra))))
            extra += payload + (b"\0" if len(payload) % 2 else b"")
    strip_offset = data_start + len(extra)
    ifd = struct.pack("<H", len(records))
    for tag, kind, count, value in records:
        if tag == 273:
            value = struct.pack("<I", strip_offset)
        ifd += struct.pack("<HHI", tag, kind, count) + value
    ifd += struct.pack("<I", 0)  # no next IFD
    return b"II*\0" + struct.pack("<I", 8) + ifd + bytes(extra) + counts.tobytes()


def libraw_process(data: bytes, algorithm: str) -> np.ndarray:
    """LibRaw's processing of one DNG (bytes) with ``LIBRAW_SETTINGS``: (H, W, 3) uint16 sRGB."""
    import rawpy

    with rawpy.imread(io.BytesIO(data)) as raw:
        return raw.postprocess(demosaic_algorithm=rawpy.DemosaicAlgorithm[algorithm], **LIBRAW_SETTINGS)


class LibRawPipeline(nn.Module):
    """LibRaw (rawpy) with one demosaic algorithm as a data model; not differentiable.

    Args:
        algorithm: a LibRaw demosaic algorithm the installed LibRaw offers (``AHD``, ``DCB``, ``VNG``,
            ``PPG``, ``AAHD``, ``DHT``, ``LINEAR``; any case), or a ``libraw:<algorithm>`` spec.
        camera: the sensor's ``CameraParams`` (written into each DNG).

    Shapes:
        raw (B, H, W) float in [0, 1] (counts / 65535), H and W even -> view (B, 3, H, W) float32 in [0, 1].
    """

    def __init__(self, algorithm: str, camera: CameraParams):
        super().__init__()
        check_camera(camera)
        self.algorithm = libraw_algorithm(
            algorithm if algorithm.startswith(LIBRAW_PREFIX) else f"{LIBRAW_PREFIX}{algorithm}"
        )
        self.camera = camera
        dng_colour(camera)  # one sentence now if LibRaw cannot be given this camera

    @property
    def name(self) -> str:
        return f"{LIBRAW_PREFIX}{self.algorithm}"

    def extra_repr(self) -> str:
        return f"algorithm={self.algorithm!r}, camera={self.camera.name!r}"

    @torch.no_grad()
    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        check_raw(raw)
        counts = (raw.detach().double().cpu().clamp(0, 1) * WHITE_LEVEL).round().numpy().astype(np.uint16)
        views = []
        for mosaic in counts:
            image = libraw_process(dng_bytes(mosaic, self.camera), self.algorithm)
            if image.shape[:2] != mosaic.shape:
                raise InputError(f"LibRaw {self.algorithm} returned a {image.shape[0]}x{image.shape[1]} image for a "
                                 f"{mosaic.shape[0]}x{mosaic.shape[1]} raw; expected the same size.")  # fmt: skip
            views.append(torch.from_numpy(image.astype(np.float32) / np.float32(65535)).permute(2, 0, 1))
        return torch.stack(views).to(raw.device)
