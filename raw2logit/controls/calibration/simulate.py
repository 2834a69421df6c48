"""Simulated devices for tests and demonstrations: raw through a hidden, known data model."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from raw2logit.errors import InputError
from raw2logit.isp.camera import CameraParams
from raw2logit.isp.parametrized import ParametrizedPipeline
from raw2logit.isp.validation import check_raw


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
