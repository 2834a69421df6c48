"""A flexible tone curve: monotone, per channel, with learnable knots.

The paper's data model ends in ``x ** (1/γ)`` (one parameter) and device JPEGs in the sRGB curve;
neither represents every encoding a real ISP uses (LibRaw and dcraw end in the BT.709 curve: a
linear toe, then a 0.45 power, about 0.05 apart from sRGB in the mid-tones). The ``curve`` tone
curve is a piecewise-linear function per output channel through ``KNOTS`` values placed at fixed
positions uniform in ``u = x ** (1 / CURVE_GAMMA)``: dense in the shadows, where encoding curves
bend most, and linear in ``u`` between knots, so that knot values equal to their positions give
exactly the paper's power curve (γ = 2.2). Sixteen intervals represent the BT.709 curve within
0.9 of an 8-bit step (0.1 RMS), sRGB within 0.5.

Monotonicity: the knot values used are the running maximum of the stored values along the knots,
so any stored θ (a forensic search, a damaged file) gives a non-decreasing curve. The stored values
stay readable as the curve's output at each knot.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from raw2logit.errors import InputError
from raw2logit.isp.colour import GAMMA_FLOOR

KNOTS = 17  # knot values per channel: 16 intervals
CURVE_GAMMA = 2.2  # knots are uniform in x ** (1 / CURVE_GAMMA)
NAMED_CURVES = ("power", "srgb", "bt709")
_LN2 = math.log(2.0)


def knot_positions(count: int = KNOTS, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The linear input values (count,) at which the knots sit: ``(k / (count - 1)) ** CURVE_GAMMA``."""
    return torch.linspace(0.0, 1.0, count, dtype=dtype) ** CURVE_GAMMA


def _dcraw_gamma_constants(power: float, toe_slope: float) -> tuple[float, float]:
    """(toe end, offset) of dcraw's ``gamma_curve(power, toe_slope)``: the linear toe and the power
    segment ``(1 + offset) x ** power - offset`` meet with equal value and slope (LibRaw ``gamm``)."""
    low, high = (0.0, 1.0) if toe_slope >= 1 else (1.0, 0.0)
    bounds = [low, high]
    for _ in range(48):  # bisection, as dcraw does
        middle = (bounds[0] + bounds[1]) / 2
        bounds[int(((middle / toe_slope) ** -power - 1) / power - 1 / middle > -1)] = middle
    return middle / toe_slope, middle * (1 / power - 1)


def bt709_encode(linear: torch.Tensor, power: float = 0.45, toe_slope: float = 4.5) -> torch.Tensor:
    """The BT.709 curve as LibRaw (dcraw) applies it: ``toe_slope * x`` below the toe, then
    ``(1 + a) x ** power - a``, with the toe end and ``a`` solved for a smooth joint.

    Args:
        linear: values in [0, 1] (clipped), any shape.
    """
    toe_end, offset = _dcraw_gamma_constants(power, toe_slope)
    clipped = linear.clamp(0.0, 1.0)
    curved = (1 + offset) * clipped.clamp_min(toe_end) ** power - offset
    return torch.where(clipped < toe_end, clipped * toe_slope, curved)


def named_curve(kind: str, linear: torch.Tensor) -> torch.Tensor:
    """A named encoding curve: ``power`` (x ** (1/2.2)), ``srgb`` (IEC 61966-2-1) or ``bt709`` (LibRaw's)."""
    from raw2logit.isp.colour import srgb_encode

    if kind == "power":
        return linear.clamp(0.0, 1.0) ** (1 / CURVE_GAMMA)
    if kind == "srgb":
        return srgb_encode(linear)
    if kind == "bt709":
        return bt709_encode(linear)
    raise InputError(f"Unknown tone curve shape {kind!r}; expected one of {', '.join(NAMED_CURVES)}.")


def curve_knots(kind: str = "power", count: int = KNOTS) -> torch.Tensor:
    """Knot values (3, count) float64 that make ``tone_curve`` follow a named curve (``NAMED_CURVES``);
    ``power`` reproduces ``x ** (1/2.2)`` exactly, the others within the interpolation error."""
    if count < 2:
        raise InputError(f"A tone curve needs at least 2 knots; got {count}.")
    values = named_curve(kind, knot_positions(count))
    return values.view(1, count).repeat(3, 1)


def check_knots(knots: torch.Tensor) -> None:
    if knots.ndim != 2 or knots.shape[0] != 3 or knots.shape[1] < 2:
        raise InputError(f"Tone curve knots must have shape (3, K) with K >= 2; got {tuple(knots.shape)}.")


def tone_curve(rgb: torch.Tensor, knots: torch.Tensor) -> torch.Tensor:
    """Clip to [0, 1], then a monotone piecewise-linear curve per channel.

    Args:
        rgb: linear image of shape (B, 3, H, W).
        knots: (3, K) curve values at ``knot_positions(K)``, per channel (R, G, B); made
            non-decreasing along K by a running maximum. May be an ``nn.Parameter``.

    Returns:
        encoded image of shape (B, 3, H, W), in [min knot, max knot].
    """
    check_knots(knots)
    count = knots.shape[1]
    values = torch.cummax(knots, dim=-1).values.to(rgb.dtype)
    # u = x ** (1 / CURVE_GAMMA) through log2 and exp, as gamma_correction (faster than pow on CPU;
    # the floor keeps log finite).
    position = torch.exp(torch.log2(rgb.clamp(GAMMA_FLOOR, 1.0)) * (_LN2 / CURVE_GAMMA)) * (count - 1)
    lower = position.detach().floor().clamp_(0, count - 2)
    fraction = position - lower
    index = lower.long() + (torch.arange(3, device=rgb.device) * count).view(1, 3, 1, 1)
    flat = values.reshape(-1)
    low = torch.take(flat, index)
    return low + fraction * (torch.take(flat, index + 1) - low)


class ToneCurve(nn.Module):
    """``tone_curve`` with its knots as a parameter (initialised to a named curve).

    Shapes:
        rgb (B, 3, H, W) linear -> (B, 3, H, W) encoded.
    """

    def __init__(self, kind: str = "power", count: int = KNOTS):
        super().__init__()
        self.knots = nn.Parameter(curve_knots(kind, count))

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        return tone_curve(rgb, self.knots)
