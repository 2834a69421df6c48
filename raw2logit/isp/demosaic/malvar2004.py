"""Malvar-He-Cutler demosaicing, as colour-demosaicing's ``demosaicing_CFA_Bayer_Malvar2004``.

Reference: Malvar, He & Cutler (2004), "High-quality linear interpolation for demosaicing of
Bayer-patterned color images", ICASSP. Four 5x5 gradient-corrected filters on the mosaic
(scipy.ndimage ``reflect`` boundary), selected per Bayer site.
"""

from __future__ import annotations

import torch

from raw2logit.isp.demosaic import lattice
from raw2logit.isp.filters import correlate_valid, pad2d

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
    padded = pad2d(cfa.unsqueeze(1), (2, 2, 2, 2), mode="reflect")
    kernels = malvar2004_kernels(cfa.dtype, cfa.device)
    # Each filter's output is kept only at the sites that need it: the channels are assembled
    # from sub-lattice views, every value written once (no masks, no ``where`` per rule).
    green_at_rb, row, column, diagonal = (
        lattice.sites_of(correlate_valid(padded, kernels[k, None])[:, 0]) for k in range(4)
    )
    mosaic = lattice.sites_of(cfa)
    sites = lattice.bayer_sites(pattern)
    R, B, G1, G2 = sites["R"], sites["B"], sites["G1"], sites["G2"]  # G1: green in red rows
    red = {R: mosaic[R], G1: row[G1], G2: column[G2], B: diagonal[B]}
    green = {R: green_at_rb[R], G1: mosaic[G1], G2: mosaic[G2], B: green_at_rb[B]}
    blue = {R: diagonal[R], G1: column[G1], G2: row[G2], B: mosaic[B]}
    return lattice.assemble([red, green, blue])
