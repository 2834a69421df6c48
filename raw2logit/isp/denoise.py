"""Denoising of the luma channel: Gaussian (sigma 0.5) and 3x3 median (Appendix A.1.1)."""

from __future__ import annotations

import torch

from raw2logit.isp.filters import (
    correlate2d,
    correlate_separable,
    gaussian_kernel1d,
    gaussian_taps,
    median_filter3x3,
    on_cpu_without_autograd,
)

DENOISE_SIGMA = 0.5


def gaussian_denoise_kernel(sigma: float = DENOISE_SIGMA, dtype=torch.float32, device=None) -> torch.Tensor:
    """The 2-D kernel scipy's ``gaussian_filter(sigma)`` applies (5x5 for sigma 0.5), as one matrix."""
    taps = gaussian_kernel1d(sigma)
    return torch.outer(taps, taps).to(device, dtype)


def gaussian_denoise(luma: torch.Tensor, kernel: torch.Tensor | None = None) -> torch.Tensor:
    """Gaussian denoising, ``scipy.ndimage.gaussian_filter(Y, sigma=0.5)`` (``reflect`` boundary).

    Args:
        luma: (B, 1, H, W).
        kernel: odd-sized 2-D correlation kernel, by default ``gaussian_denoise_kernel()``;
            may be an ``nn.Parameter``.
    """
    if kernel is None:
        if on_cpu_without_autograd(luma):
            taps = gaussian_taps(DENOISE_SIGMA)
            return correlate_separable(luma, taps, taps, mode="reflect")
        kernel = gaussian_denoise_kernel(dtype=luma.dtype, device=luma.device)
    return correlate2d(luma, kernel, mode="reflect")


def median_denoise(luma: torch.Tensor) -> torch.Tensor:
    """Median denoising, ``scipy.ndimage.median_filter(Y, size=3)`` (``reflect`` boundary).

    Args:
        luma: (B, 1, H, W).
    """
    return median_filter3x3(luma, mode="reflect")
