"""Malvar-He-Cutler demosaicing, as colour-demosaicing's ``demosaicing_CFA_Bayer_Malvar2004``.

Reference: Malvar, He & Cutler (2004), "High-quality linear interpolation for demosaicing of
Bayer-patterned color images", ICASSP. Four 5x5 gradient-corrected filters on the mosaic
(scipy.ndimage ``reflect`` boundary), selected per Bayer site.
"""

from __future__ import annotations

import torch

from raw2logit.isp.demosaic import lattice
from raw2logit.isp.filters import pad2d

# Kernels as in the paper, to be scaled by 1/8 (the weights below are these over 8). All four are
# point-symmetric, so correlation equals the convolution the reference uses.
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
# Neighbour offsets (dy, dx) that share a weight in the kernels above.
_CROSS_1 = ((-1, 0), (1, 0), (0, -1), (0, 1))
_CROSS_2 = ((-2, 0), (2, 0), (0, -2), (0, 2))
_DIAGONAL = ((-1, -1), (-1, 1), (1, -1), (1, 1))
_ROW_1, _ROW_2 = ((0, -1), (0, 1)), ((0, -2), (0, 2))
_COLUMN_1, _COLUMN_2 = ((-1, 0), (1, 0)), ((-2, 0), (2, 0))


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
    # The mosaic padded as scipy's reflect (by the filters' reach, two samples, so every site keeps
    # its parity) and split into sub-lattices: each filter is then evaluated only at the sites that
    # use it, from shifted quarter-resolution planes, and the weights shared by several neighbours
    # are applied once to their sum. That is 60 quarter-resolution passes where four full-resolution
    # 5x5 convolutions computed every filter everywhere (2.3x faster on CPU, one thread, measured). Equal to
    # the reference up to the order of the sums (float64: 1e-16).
    field = lattice.split(pad2d(cfa, (2, 2, 2, 2), mode="reflect", dtype=dtype or cfa.dtype))
    sites = lattice.bayer_sites(pattern)
    red_site, blue_site, g1, g2 = sites["R"], sites["B"], sites["G1"], sites["G2"]  # G1: green in red rows
    red, green, blue = {}, {}, {}
    for site, other in ((red_site, blue), (blue_site, red)):
        centre = lattice.at(field, site, 0, 0)
        cross = lattice.total(field, site, _CROSS_2)
        green[site] = (
            (centre * 0.5).add_(lattice.total(field, site, _CROSS_1), alpha=0.25).add_(cross, alpha=-0.125)
        )
        other[site] = (
            (centre * 0.75).add_(lattice.total(field, site, _DIAGONAL), alpha=0.25).add_(cross, alpha=-0.1875)
        )
        (red if site == red_site else blue)[site] = centre
    for site, along_row, along_column in ((g1, red, blue), (g2, blue, red)):
        centre = lattice.at(field, site, 0, 0)
        base = (centre * 0.625).sub_(lattice.total(field, site, _DIAGONAL), alpha=0.125)
        row_2, column_2 = lattice.total(field, site, _ROW_2), lattice.total(field, site, _COLUMN_2)
        along_row[site] = (
            torch.add(base, lattice.total(field, site, _ROW_1), alpha=0.5)
            .sub_(row_2, alpha=0.125)
            .add_(column_2, alpha=0.0625)
        )
        along_column[site] = (
            torch.add(base, lattice.total(field, site, _COLUMN_1), alpha=0.5)
            .sub_(column_2, alpha=0.125)
            .add_(row_2, alpha=0.0625)
        )
        green[site] = centre
    return lattice.assemble([red, green, blue])
