"""Bilinear demosaicing, as colour-demosaicing's ``demosaicing_CFA_Bayer_bilinear``.

Each colour plane is zero-filled where its filter is absent and convolved with an interpolation
kernel (scipy.ndimage ``reflect`` boundary; it folds border sites onto
themselves, so border values differ from interior ones, as in the reference). Reference: Losson, Macaire & Yang (2010),
"Comparison of color demosaicing methods".
"""

from __future__ import annotations

import torch

from raw2logit.isp.camera import bayer_masks
from raw2logit.isp.demosaic import lattice
from raw2logit.isp.filters import correlate2d, pad2d

KERNEL_GREEN = ((0.0, 0.25, 0.0), (0.25, 1.0, 0.25), (0.0, 0.25, 0.0))
KERNEL_RED_BLUE = ((0.25, 0.5, 0.25), (0.5, 1.0, 0.5), (0.25, 0.5, 0.25))
# Neighbour offsets (dy, dx) of the sites whose mean fills a missing value.
_CROSS = ((-1, 0), (1, 0), (0, -1), (0, 1))
_DIAGONAL = ((-1, -1), (-1, 1), (1, -1), (1, 1))
_ROW, _COLUMN = ((0, -1), (0, 1)), ((-1, 0), (1, 0))


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
    height, width = cfa.shape[-2:]
    if min(height, width) < 4:
        return demosaic_planes(cfa, pattern, bilinear_kernels(torch.float64, cfa.device), dtype)
    # Inside the one-pixel border each missing value is the mean of the 2 or 4 nearest sites of its
    # colour: computed on the sub-lattices, at the sites that need it, from shifted quarter-resolution
    # planes, 22 passes instead of masking, padding and convolving three full-resolution planes (one
    # thread, measured: as fast where glibc keeps freed memory, 3-4x faster where it does not, for
    # want of those three fresh planes). On the border the reference's reflect boundary folds a site
    # onto its mirror image, which may hold another colour: there the three masked convolutions of
    # ``demosaic_planes`` run on the two rows or columns at each edge, which is all they need.
    field = lattice.split(cfa, dtype, zeros=1)  # the values beyond the border reach only the border
    sites = lattice.bayer_sites(pattern)
    red_site, blue_site, g1, g2 = sites["R"], sites["B"], sites["G1"], sites["G2"]  # G1: green in red rows
    red, green, blue = {}, {}, {}
    for site, own, other in ((red_site, red, blue), (blue_site, blue, red)):
        own[site] = lattice.at(field, site, 0, 0)
        green[site] = lattice.total(field, site, _CROSS).mul_(0.25)
        other[site] = lattice.total(field, site, _DIAGONAL).mul_(0.25)
    for site, along_row, along_column in ((g1, red, blue), (g2, blue, red)):
        green[site] = lattice.at(field, site, 0, 0)
        along_row[site] = lattice.total(field, site, _ROW).mul_(0.5)
        along_column[site] = lattice.total(field, site, _COLUMN).mul_(0.5)
    out = lattice.assemble([red, green, blue])
    batch = cfa.shape[0]
    # The first and last two rows (then columns) side by side in the batch: H and W are even, so
    # both strips start on the pattern's first row (column), and each gets its own reflect border.
    rows = _strips(torch.cat((cfa[..., :2, :], cfa[..., -2:, :])), pattern, dtype)
    out[..., 0, :], out[..., -1, :] = rows[:batch, :, 0], rows[batch:, :, -1]
    columns = _strips(torch.cat((cfa[..., :, :2], cfa[..., :, -2:])), pattern, dtype)
    out[..., :, 0], out[..., :, -1] = columns[:batch, :, :, 0], columns[batch:, :, :, -1]
    return out


def _strips(strips: torch.Tensor, pattern: str, dtype: torch.dtype) -> torch.Tensor:
    """``demosaic_planes`` with the bilinear kernels on strips two samples wide, as nine shifted
    multiply-adds: on so few values a convolution call costs several times the arithmetic."""
    if torch.is_grad_enabled() and strips.requires_grad:
        return demosaic_planes(strips, pattern, bilinear_kernels(torch.float64, strips.device), dtype)
    height, width = strips.shape[-2:]
    planes = strips.to(dtype).unsqueeze(1) * bayer_masks(pattern, height, width, strips.device, dtype)
    padded = pad2d(planes, (1, 1, 1, 1), mode="reflect")
    kernels = bilinear_kernels(dtype, strips.device)
    out = None
    for dy in range(3):
        for dx in range(3):
            term = padded[..., dy : dy + height, dx : dx + width] * kernels[:, dy, dx].view(1, 3, 1, 1)
            out = term if out is None else out.add_(term)
    return out
