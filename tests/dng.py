"""Writing DNG files for the tests (pidng): one writer for every test that needs a camera's raw file."""

from __future__ import annotations

import numpy as np

from raw2logit.data.dng import SRGB_TO_XYZ

# DNG CFAPattern codes: 0 red, 1 green, 2 blue, for the 2x2 block read row by row.
CFA_CODES = {"RGGB": [0, 1, 1, 2], "BGGR": [2, 1, 1, 0], "GRBG": [1, 0, 2, 1], "GBRG": [1, 2, 0, 1]}
DENOMINATOR = 1_000_000  # rational precision of the matrices and neutrals written


def rationals(values) -> list[list[int]]:
    return [[round(float(v) * DENOMINATOR), DENOMINATOR] for v in np.ravel(values)]


def write_dng(path, mosaic, pattern="RGGB", black=None, white=65535, neutral=None, xyz_to_camera=None, cfa=None,
              extra_tags=()):  # fmt: skip
    """Write an uncompressed 16-bit CFA DNG; ``None`` leaves a tag out.

    Args:
        black: per-site black levels (BlackLevelRepeatDim 2x2, reading order).
        neutral: AsShotNeutral (R, G, B).
        xyz_to_camera: ColorMatrix1 (D65); ``"srgb"`` for a camera whose RGB is linear sRGB.
        cfa: ((rows, cols), codes) for a non-2x2 or non-Bayer CFA.
    """
    from pidng.core import RAW2DNG
    from pidng.defs import CalibrationIlluminant, PhotometricInterpretation
    from pidng.dng import DNGTags, Tag

    if isinstance(xyz_to_camera, str):
        xyz_to_camera = np.linalg.inv(SRGB_TO_XYZ)
    height, width = mosaic.shape
    tags = DNGTags()
    for tag, value in ((Tag.ImageWidth, width), (Tag.ImageLength, height), (Tag.TileWidth, width),
                       (Tag.TileLength, height), (Tag.SamplesPerPixel, 1), (Tag.BitsPerSample, 16),
                       (Tag.PhotometricInterpretation, PhotometricInterpretation.Color_Filter_Array)):  # fmt: skip
        tags.set(tag, value)
    dims, codes = cfa if cfa is not None else ((2, 2), CFA_CODES[pattern])
    tags.set(Tag.CFARepeatPatternDim, list(dims))
    tags.set(Tag.CFAPattern, list(codes))
    if black is not None:
        tags.set(Tag.BlackLevelRepeatDim, [2, 2])
        tags.set(Tag.BlackLevel, list(black))
    if white is not None:
        tags.set(Tag.WhiteLevel, white)
    if neutral is not None:
        tags.set(Tag.AsShotNeutral, rationals(neutral))
    if xyz_to_camera is not None:
        tags.set(Tag.ColorMatrix1, rationals(xyz_to_camera))
        tags.set(Tag.CalibrationIlluminant1, CalibrationIlluminant.D65)
    for tag, value in extra_tags:
        tags.set(tag, value)
    writer = RAW2DNG()
    writer.options(tags, path="", compress=False)
    # convert() without a file name returns the bytes; with one it would force a lower-case suffix.
    path.write_bytes(bytes(writer.convert(np.ascontiguousarray(mosaic, dtype=np.uint16))))
    return path
