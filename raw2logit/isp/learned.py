"""Data models without an ISP: the paper's direct-raw baseline and a small learned U-Net.

Both start from the mosaic packed to half resolution (one plane per Bayer site), as the paper's
direct-raw setting does (§5.3, "RawToRGB"); ``data_model=raw`` and ``data_model=nn`` select them.
"""

from __future__ import annotations

import torch
from torch import nn

from raw2logit.isp.camera import check_pattern


def pack_raw(raw: torch.Tensor, pattern: str) -> torch.Tensor:
    """(B, H, W) Bayer mosaic -> (B, 4, H/2, W/2) planes in R, G1, G2, B order (G1 the earlier green site)."""
    check_pattern(pattern)
    sites = {(0, 0): 0, (0, 1): 1, (1, 0): 2, (1, 1): 3}
    planes = [raw[:, row::2, col::2] for row, col in sites]
    greens = [i for i, colour in enumerate(pattern) if colour == "G"]
    order = [pattern.index("R"), greens[0], greens[1], pattern.index("B")]
    return torch.stack([planes[i] for i in order], dim=1)


class RawPacking(nn.Module):
    """No ISP: the mosaic packed to half resolution as (R, mean of the two greens, B), as the paper's
    direct-raw baseline ("RawToRGB"). Segmentation logits are upsampled to the mask's size."""

    def __init__(self, pattern: str):
        super().__init__()
        self.pattern = check_pattern(pattern)

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        packed = pack_raw(raw, self.pattern)
        return torch.stack((packed[:, 0], 0.5 * (packed[:, 1] + packed[:, 2]), packed[:, 3]), dim=1)


class UNetDataModel(nn.Module):
    """A small learned data model: packed raw (4, H/2, W/2) -> U-Net -> pixel shuffle -> RGB (3, H, W) in [0, 1]."""

    def __init__(self, pattern: str, width: int = 16):
        super().__init__()
        from raw2logit.tasks.models import SmallUNet

        self.pattern = check_pattern(pattern)
        self.network = SmallUNet(num_classes=12, in_channels=4, width=width)

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        packed = pack_raw(raw, self.pattern)
        return torch.sigmoid(nn.functional.pixel_shuffle(self.network(packed), 2))
