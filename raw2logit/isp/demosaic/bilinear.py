"""Bilinear demosaicing, as colour-demosaicing's ``demosaicing_CFA_Bayer_bilinear``.

Each colour plane is zero-filled where its filter is absent and convolved with an interpolation
kernel (scipy.ndimage ``reflect`` boundary; it folds border sites onto
themselves, so border values differ from interior ones, as in the reference). Reference: Losson, Macaire & Yang (2010),
"Comparison of color demosaicing methods".
"""

from __future__ import annotations

import torch

from raw2logit.isp.camera import bayer_masks
from raw2logit.isp.filters import correlate2d

KERNEL_GREEN = ((0.0, 0.25, 0.0), (0.25, 1.0, 0.25), (0.0, 0.25, 0.0))
KERNEL_RED_BLUE = ((0.25, 0.5, 0.25), (0.5, 1.0, 0.5), (0.25, 0.5, 0.25))


def bilinear_kernels(dtype=torch.float32, device=None) -> torch.Tensor:
    """The (3, 3, 3) interpolation kernels for the R, G and B planes."""
    return torch.tensor((KERNEL_RED_BLUE, KERNEL_GREEN, KERNEL_RED_BLUE), dtype=dtype, device=device)


def demosaic_planes(
    cfa: torch.Tensor, pattern: str, kernels: torch.Tensor, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Interpolate the zero-filled R, G, B planes of a mosaic, each with its own 3x3 kernel.

    This is the parametrized demosaic of the paper (Appendix A.1.2): with ``bilinear_kernels`` it
    equals ``demosaic_bilinear``; the kernels may be ``nn.Parameter``s.

    Args:
        cfa: mosaic of shape (B, H, W).
        pattern: Bayer pattern of ``cfa``.
        kernels: (3, 3, 3) correlation kernels for R, G and B.
        dtype: dtype of the computation and the output; defaults to ``cfa.dtype``.

    Returns:
        RGB image of shape (B, 3, H, W).
    """
    cfa = cfa.to(dtype or cfa.dtype)
    masks = bayer_masks(pattern, *cfa.shape[-2:], device=cfa.device, dtype=cfa.dtype)
    return correlate2d(cfa.unsqueeze(1) * masks, kernels.to(cfa.dtype), mode="reflect")


def demosaic_bilinear(
    cfa: torch.Tensor, pattern: str = "RGGB", dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Bilinear demosaicing of a batch of Bayer mosaics.

    Args:
        cfa: mosaic of shape (B, H, W).
        pattern: one of ``RGGB``, ``BGGR``, ``GRBG``, ``GBRG``.
        dtype: dtype of the computation and the output; defaults to ``cfa.dtype``.

    Returns:
        RGB image of shape (B, 3, H, W), not clipped.
    """
    dtype = dtype or cfa.dtype
    return demosaic_planes(cfa, pattern, bilinear_kernels(torch.float64, cfa.device), dtype)
