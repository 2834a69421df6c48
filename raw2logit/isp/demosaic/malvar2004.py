"""Malvar-He-Cutler demosaicing, as colour-demosaicing's ``demosaicing_CFA_Bayer_Malvar2004``.

Reference: Malvar, He & Cutler (2004), "High-quality linear interpolation for demosaicing of
Bayer-patterned color images", ICASSP. Four 5x5 gradient-corrected filters on the mosaic
(scipy.ndimage ``reflect`` boundary), selected per Bayer site.
"""

from __future__ import annotations

import torch

from raw2logit.isp.camera import bayer_masks
from raw2logit.isp.filters import correlate2d

# Kernels as in the paper, scaled by 1/8. All four are point-symmetric, so correlation equals
# the convolution the reference uses.
_GREEN_AT_RED_BLUE = (
    (0, 0, -1, 0, 0),
    (0, 0, 2, 0, 0),
    (-1, 2, 4, 2, -1),
    (0, 0, 2, 0, 0),
    (0, 0, -1, 0, 0),
)
_ROW_NEIGHBOURS = (  # red at green in a red row (and blue at green in a blue row)
    (0, 0, 0.5, 0, 0),
    (0, -1, 0, -1, 0),
    (-1, 4, 5, 4, -1),
    (0, -1, 0, -1, 0),
    (0, 0, 0.5, 0, 0),
)
_DIAGONAL_NEIGHBOURS = (  # red at blue (and blue at red)
    (0, 0, -1.5, 0, 0),
    (0, 2, 0, 2, 0),
    (-1.5, 0, 6, 0, -1.5),
    (0, 2, 0, 2, 0),
    (0, 0, -1.5, 0, 0),
)


def malvar2004_kernels(dtype=torch.float32, device=None) -> torch.Tensor:
    """(4, 5, 5) kernels: green at R/B, row neighbours, column neighbours, diagonal neighbours."""
    row = torch.tensor(_ROW_NEIGHBOURS, dtype=torch.float64)
    kernels = (
        torch.stack(
            (
                torch.tensor(_GREEN_AT_RED_BLUE, dtype=torch.float64),
                row,
                row.T,
                torch.tensor(_DIAGONAL_NEIGHBOURS, dtype=torch.float64),
            )
        )
        / 8
    )
    return kernels.to(device, dtype)


def site_masks(pattern: str, height: int, width: int, device=None) -> tuple[torch.Tensor, ...]:
    """Boolean (H, W) masks: R, G, B sites, then red rows, red columns, blue rows, blue columns."""
    red, green, blue = bayer_masks(pattern, height, width, device, torch.bool)
    red_rows = red.any(dim=1, keepdim=True).expand_as(red).contiguous()
    red_cols = red.any(dim=0, keepdim=True).expand_as(red).contiguous()
    blue_rows = blue.any(dim=1, keepdim=True).expand_as(blue).contiguous()
    blue_cols = blue.any(dim=0, keepdim=True).expand_as(blue).contiguous()
    return red, green, blue, red_rows, red_cols, blue_rows, blue_cols


def demosaic_malvar2004(
    cfa: torch.Tensor, pattern: str = "RGGB", dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Malvar (2004) demosaicing of a batch of Bayer mosaics.

    Args:
        cfa: mosaic of shape (B, H, W).
        pattern: one of ``RGGB``, ``BGGR``, ``GRBG``, ``GBRG``.
        dtype: dtype of the computation and the output; defaults to ``cfa.dtype``.

    Returns:
        RGB image of shape (B, 3, H, W), not clipped.
    """
    cfa = cfa.to(dtype or cfa.dtype)
    red_m, green_m, blue_m, red_rows, red_cols, blue_rows, blue_cols = site_masks(
        pattern, *cfa.shape[-2:], cfa.device
    )
    filtered = correlate2d(cfa.unsqueeze(1), malvar2004_kernels(cfa.dtype, cfa.device))
    green_at_rb, row_neighbours, column_neighbours, diagonal = filtered.unbind(1)

    green = torch.where(green_m, cfa, green_at_rb)
    red = torch.where(red_m, cfa, 0.0)
    blue = torch.where(blue_m, cfa, 0.0)
    red = torch.where(red_rows & blue_cols, row_neighbours, red)
    red = torch.where(blue_rows & red_cols, column_neighbours, red)
    blue = torch.where(blue_rows & red_cols, row_neighbours, blue)
    blue = torch.where(red_rows & blue_cols, column_neighbours, blue)
    red = torch.where(blue_rows & blue_cols, diagonal, red)
    blue = torch.where(red_rows & red_cols, diagonal, blue)
    return torch.stack((red, green, blue), dim=1)
