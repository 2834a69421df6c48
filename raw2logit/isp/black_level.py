"""Black level correction (paper Appendix A.1.1, Eq. 10)."""

from __future__ import annotations

import torch

from raw2logit.isp.buffers import empty_output


def black_level_correction(raw: torch.Tensor, black_level: torch.Tensor) -> torch.Tensor:
    """Subtract one offset per site of the 2x2 Bayer block.

    Args:
        raw: mosaic of shape (B, H, W), H and W even, normalised to [0, 1].
        black_level: (4,) offsets for the top-left, top-right, bottom-left and bottom-right
            sites of each 2x2 block (for RGGB: R, G1, G2, B). May be an ``nn.Parameter``.

    Returns:
        mosaic of shape (B, H, W) in the wider of the two dtypes (a float64 ``black_level`` on a
        float32 mosaic gives the float64 difference in one pass); not clipped, so the offsets stay
        differentiable.
    """
    batch, height, width = raw.shape
    # Rows of the mosaic in pairs, less the (2, W) offset pattern of a pair: the offsets broadcast
    # over the batch and the row pairs, and the innermost dimension stays W long (a (2, 2) block
    # pattern would make it 2 long, which torch does not vectorise: 4x slower).
    pairs = raw.reshape(batch, height // 2, 2, width)
    offsets = black_level.view(2, 2).repeat(1, width // 2)
    if torch.is_grad_enabled() and (raw.requires_grad or black_level.requires_grad):
        return (pairs - offsets).view(batch, height, width)
    # A mixed-dtype subtraction would first copy the mosaic to the wider dtype, a fresh buffer:
    # cast it into the output instead, then subtract there.
    out = empty_output(raw.shape, torch.promote_types(raw.dtype, black_level.dtype), raw.device)
    out.copy_(raw).view(pairs.shape).sub_(offsets)
    return out
