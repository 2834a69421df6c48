"""Camera parameters: what the data model needs to know about the sensor that produced a raw image."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from raw2logit.errors import InputError
from raw2logit.names import BAYER_PATTERNS


def check_pattern(pattern: str) -> str:
    """Return ``pattern`` if it names a Bayer layout, else raise ``ValueError`` listing the valid ones."""
    if pattern not in BAYER_PATTERNS:
        raise InputError(f"Unknown Bayer pattern {pattern!r}; expected one of {', '.join(BAYER_PATTERNS)}.")
    return pattern


def check_camera(camera) -> CameraParams:
    """Return ``camera`` if it is a ``CameraParams``, else raise ``InputError``."""
    if not isinstance(camera, CameraParams):
        raise InputError(f"camera must be a CameraParams; got {type(camera).__name__}.")
    return camera


def bayer_masks(pattern: str, height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Colour filter masks of a Bayer mosaic.

    Args:
        pattern: colour-demosaicing's name of the top-left 2x2 block, read row by row (e.g. ``"RGGB"``).
        height, width: size of the mosaic.

    Returns:
        masks of shape (3, H, W): 1 where the R, G or B filter sits, else 0.
    """
    check_pattern(pattern)
    masks = torch.zeros(3, height, width, device=device, dtype=dtype)
    for colour, (row, col) in zip(pattern, ((0, 0), (0, 1), (1, 0), (1, 1))):
        masks["RGB".index(colour), row::2, col::2] = 1
    return masks


def _floats(values, length: int, name: str) -> tuple[float, ...]:
    values = tuple(float(v) for v in values)
    if len(values) != length:
        raise InputError(f"CameraParams.{name} needs {length} values, got {len(values)}.")
    if not all(math.isfinite(v) for v in values):
        raise InputError(f"CameraParams.{name} must be finite, got {values}.")
    return values


@dataclass(frozen=True)
class CameraParams:
    """Sensor parameters of the data model, in normalised units (raw values divided by 2^bits - 1).

    Attributes:
        black_level: one offset per site of the 2x2 Bayer block, read row by row
            (top-left, top-right, bottom-left, bottom-right; DNG's BlackLevel with a 2x2 repeat).
        white_balance: per-channel gains (R, G, B).
        colour_matrix: 3x3 colour correction matrix, row-major, applied as ``v' = M v``.
        pattern: Bayer layout, one of ``BAYER_PATTERNS``.
        name: a label for logs and figures.
    """

    black_level: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    white_balance: tuple[float, float, float] = (1.0, 1.0, 1.0)
    colour_matrix: tuple[tuple[float, float, float], ...] = (
        (1.0, 0.0, 0.0),
        (0.0, 1.0, 0.0),
        (0.0, 0.0, 1.0),
    )
    pattern: str = "RGGB"
    name: str = field(default="custom", compare=False)

    def __post_init__(self):
        object.__setattr__(self, "black_level", _floats(self.black_level, 4, "black_level"))
        object.__setattr__(self, "white_balance", _floats(self.white_balance, 3, "white_balance"))
        rows = tuple(self.colour_matrix)
        if len(rows) == 9 and not hasattr(rows[0], "__len__"):
            rows = (rows[0:3], rows[3:6], rows[6:9])
        if len(rows) != 3:
            raise InputError(f"CameraParams.colour_matrix must be 3x3, got {len(rows)} rows.")
        object.__setattr__(self, "colour_matrix", tuple(_floats(row, 3, "colour_matrix row") for row in rows))
        check_pattern(self.pattern)

    @classmethod
    def published(cls, name: str) -> CameraParams:
        """The camera parameters published with a dataset: ``"microscopy"``, ``"drone"`` or ``"identity"``."""
        if name not in PUBLISHED_CAMERAS:
            raise InputError(f"Unknown camera {name!r}; expected one of {', '.join(PUBLISHED_CAMERAS)}.")
        return PUBLISHED_CAMERAS[name]

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CameraParams:
        """Build from a mapping with the attribute names as keys (e.g. a JSON file or a Hydra node)."""
        known = {"black_level", "white_balance", "colour_matrix", "pattern", "name"}
        unknown = set(values) - known
        if unknown:
            raise InputError(
                f"Unknown camera parameter(s) {sorted(unknown)}; expected keys among {sorted(known)}."
            )
        return cls(**dict(values))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pattern": self.pattern,
            "black_level": list(self.black_level),
            "white_balance": list(self.white_balance),
            "colour_matrix": [list(row) for row in self.colour_matrix],
        }

    def tensors(self, device=None, dtype=torch.float32) -> dict[str, torch.Tensor]:
        """Black level (4,), white balance (3,) and colour matrix (3, 3) as tensors."""
        return {
            "black_level": torch.tensor(self.black_level, dtype=torch.float64).to(device, dtype),
            "white_balance": torch.tensor(self.white_balance, dtype=torch.float64).to(device, dtype),
            "colour_matrix": torch.tensor(self.colour_matrix, dtype=torch.float64).to(device, dtype),
        }


# Published with the Raw-Microscopy and Raw-Drone datasets (Zenodo record 5235536), normalised units.
PUBLISHED_CAMERAS: dict[str, CameraParams] = {
    "microscopy": CameraParams(
        black_level=(9.834368023181512e-06,) * 4,
        white_balance=(-0.6567, 1.9673, 3.5304),
        colour_matrix=(
            (-2.0338, 0.0933, 0.4157),
            (-0.0286, 2.6464, -0.0574),
            (-0.5516, -0.0947, 2.9308),
        ),
        pattern="RGGB",
        name="microscopy",
    ),
    "drone": CameraParams(
        black_level=(0.0625, 0.0626, 0.0625, 0.0626),
        white_balance=(2.86653646, 1.0, 1.73079425),
        colour_matrix=(
            (1.50768983, -0.33571374, -0.17197604),
            (-0.23048614, 1.70698738, -0.47650126),
            (-0.03119153, -0.32803956, 1.35923111),
        ),
        pattern="RGGB",
        name="drone",
    ),
    "identity": CameraParams(name="identity"),
}
