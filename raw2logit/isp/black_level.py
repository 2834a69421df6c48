"""Black level correction (paper Appendix A.1.1, Eq. 10)."""

from __future__ import annotations

import torch


def black_level_correction(raw: torch.Tensor, black_level: torch.Tensor) -> torch.Tensor:
    """Subtract one offset per site of the 2x2 Bayer block.

    Args:
        raw: mosaic of shape (B, H, W), H and W even, normalised to [0, 1].
        black_level: (4,) offsets for the top-left, top-right, bottom-left and bottom-right
            sites of each 2x2 block (for RGGB: R, G1, G2, B). May be an ``nn.Parameter``.

    Returns:
        mosaic of shape (B, H, W); not clipped, so the offsets stay differentiable.
    """
    height, width = raw.shape[-2:]
    offsets = black_level.to(raw.dtype).view(2, 2).repeat(height // 2, width // 2)
    return raw - offsets
