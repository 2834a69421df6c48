"""Input checks: bad raw data gets one sentence saying what is wrong and what was expected."""

from __future__ import annotations

import numpy as np
import torch

from raw2logit.errors import InputError


def _check_shape(shape: tuple[int, ...], expected: str, what: str) -> None:
    dims = expected.count(",") + 1
    if len(shape) != dims:
        raise InputError(f"{what} must have shape {expected}; got shape {tuple(shape)}.")
    height, width = shape[-2:]
    if height < 2 or width < 2 or height % 2 or width % 2:
        raise InputError(
            f"{what} height and width must be even and at least 2 (whole 2x2 Bayer blocks); "
            f"got {height}x{width}."
        )


def _check_range(low: float, high: float, what: str) -> None:
    if not (np.isfinite(low) and np.isfinite(high)):
        raise InputError(f"{what} contains NaN or Inf values; expected finite values in [0, 1].")
    if low < 0 or high > 1:
        raise InputError(
            f"{what} values must lie in [0, 1] (raw counts divided by 2^bits - 1); "
            f"got values in [{low:.6g}, {high:.6g}]."
        )


def check_raw(raw: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``raw`` is a finite (B, H, W) float tensor in [0, 1], H and W even."""
    what = "Raw input"
    if not isinstance(raw, torch.Tensor):
        raise InputError(f"{what} must be a torch.Tensor of shape (B, H, W); got {type(raw).__name__}.")
    _check_shape(tuple(raw.shape), "(B, H, W)", what)
    if not raw.is_floating_point():
        raise InputError(f"{what} must be a floating-point tensor in [0, 1]; got dtype {raw.dtype}.")
    if raw.shape[0] == 0:
        raise InputError(f"{what} is an empty batch; expected at least one image.")
    low, high = torch.aminmax(raw.detach())
    _check_range(float(low), float(high), what)


def check_raw_numpy(raw: np.ndarray) -> None:
    """Raise ``ValueError`` unless ``raw`` is a finite (H, W) float array in [0, 1], H and W even."""
    what = "Raw image"
    raw = np.asarray(raw)
    _check_shape(raw.shape, "(H, W)", what)
    if not np.issubdtype(raw.dtype, np.floating):
        raise InputError(f"{what} must be floating point in [0, 1]; got dtype {raw.dtype}.")
    _check_range(float(np.min(raw)), float(np.max(raw)), what)
