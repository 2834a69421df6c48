"""The four half-resolution sub-lattices of a Bayer mosaic, and neighbour access across them.

A demosaicing rule such as "red at a green site in a red row = green + mean of the left and right
reds - ..." only ever needs the value at one class of sites (R, G1, G2, B). Working on the four
(H/2, W/2) sub-lattices computes exactly that, with no masks and no ``where`` over the full
image: a quarter of the arithmetic per rule. ``filter1d`` and ``convolve_sparse`` sum in
scipy's order, so their results are bitwise scipy's in float64 (Menon's decision depends on it);
``assemble`` writes full-resolution outputs from the sub-lattices a rule computed (Malvar).

A "field" is a full-resolution image stored as a dict site class (row parity, column parity) ->
(B, H/2, W/2) tensor; ``None`` stands for a class where the field is zero. Boundary modes are
those of scipy at full resolution. Only parity-preserving modes are supported (``mirror``,
``constant``), where a neighbour across the border lies on the same sub-lattice as inside.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

from raw2logit.errors import InputError
from raw2logit.isp.buffers import empty_output
from raw2logit.isp.camera import check_pattern
from raw2logit.isp.filters import _boundary_indices

SITES = ((0, 0), (0, 1), (1, 0), (1, 1))
_INTERLEAVED_DTYPES = (torch.float32, torch.float64)  # those with a complex twin
Site = tuple[int, int]
Field = dict[Site, "torch.Tensor | None"]


def bayer_sites(pattern: str) -> dict[str, Site]:
    """Site classes (row parity, column parity): R, B, G1 (green in red rows), G2 (green in blue rows)."""
    index = check_pattern(pattern).index("R")
    red = (index // 2, index % 2)
    return {
        "R": red,
        "B": (1 - red[0], 1 - red[1]),
        "G1": (red[0], 1 - red[1]),
        "G2": (1 - red[0], red[1]),
    }


def split(cfa: torch.Tensor, dtype: torch.dtype | None = None, zeros: int = 0) -> Field:
    """(B, H, W) mosaic -> field of its four (B, H/2, W/2) sub-lattices, each contiguous, in ``dtype``
    (default ``cfa.dtype``; the cast is part of the one copy). With ``zeros`` = 1 each plane is
    padded by one zero per side, as ``pad(split(cfa), "constant")`` without the second copy."""
    batch, height, width = cfa.shape
    shape = (batch, 2, 2, height // 2 + 2 * zeros, width // 2 + 2 * zeros)
    planes = empty_output(shape, dtype or cfa.dtype, cfa.device)
    interior = planes
    if zeros:
        for side in (
            planes[..., :zeros, :],
            planes[..., -zeros:, :],
            planes[..., :, :zeros],
            planes[..., :, -zeros:],
        ):
            side.zero_()
        interior = planes[..., zeros:-zeros, zeros:-zeros]
    interior.copy_(cfa.reshape(batch, height // 2, 2, width // 2, 2).permute(0, 2, 4, 1, 3))
    return {(a, b): planes[:, a, b] for a, b in SITES}


def total(padded: Field, site: Site, offsets: tuple[tuple[int, int], ...]) -> torch.Tensor:
    """Sum of a padded field's values at full-resolution ``offsets`` (dy, dx) from the sites of one
    class, each offset within one sub-lattice step; a new tensor."""
    first, *rest = (at(padded, site, dy, dx) for dy, dx in offsets)
    out = first + rest[0] if rest else first.clone()
    for term in rest[1:]:
        out += term
    return out


def merge(field: Field) -> torch.Tensor:
    """Field of four (B, h, w) sub-lattices -> (B, 2h, 2w) image."""
    return assemble([field])[:, 0]


def assemble(channels: list[Field], out: torch.Tensor | None = None) -> torch.Tensor:
    """C fields of (B, h, w) sub-lattices -> (B, C, 2h, 2w) image, every value written once
    (into ``out``, a contiguous (B, C, 2h, 2w) tensor, if given)."""
    reference = next(plane for field in channels for plane in field.values() if plane is not None)
    batch, height, width = reference.shape
    if out is None:
        out = empty_output((batch, len(channels), 2 * height, 2 * width), reference.dtype, reference.device)
    out = out.view(batch, len(channels), height, 2, width, 2)
    planes = [plane for field in channels for plane in field.values() if plane is not None]
    interleave = all(plane.dtype == out.dtype for plane in planes) and out.dtype in _INTERLEAVED_DTYPES
    interleave &= not (torch.is_grad_enabled() and any(plane.requires_grad for plane in planes))
    for channel, field in enumerate(channels):
        for a in (0, 1):
            even, odd = field[(a, 0)], field[(a, 1)]
            if interleave and even is not None and odd is not None:
                # A complex number is its real and imaginary parts side by side in memory: building
                # one from the two sub-lattices of a row writes both, interleaved, with contiguous
                # stores (2x faster than two stride-2 writes, which torch does not vectorise).
                torch.complex(even, odd, out=torch.view_as_complex(out[:, channel, :, a]))
                continue
            for b, plane in ((0, even), (1, odd)):
                out[:, channel, :, a, :, b] = 0 if plane is None else plane
    return out.view(batch, len(channels), 2 * height, 2 * width)


@lru_cache(maxsize=256)
def _source(size: int, parity: int, mode: str) -> tuple[int | None, int | None]:
    """Half-resolution indices that the one-element pads before and after a sub-lattice copy.

    ``size`` is the sub-lattice length, ``parity`` its offset in the full-resolution image;
    ``None`` means zero (``constant`` mode).
    """
    full = 2 * size
    sources = []
    for position in (parity - 2, parity + full):  # the full-res neighbours one lattice step outside
        if mode == "constant":
            sources.append(None)
            continue
        mapped = int(_boundary_indices(full, 2, 2, mode, "cpu")[position + 2])
        if mapped % 2 != parity:
            raise InputError(f"Boundary mode {mode!r} does not preserve the Bayer sub-lattice.")
        sources.append(mapped // 2)
    return sources[0], sources[1]


def _pad_plane(plane: torch.Tensor, row_parity: int, col_parity: int, mode: str) -> torch.Tensor:
    """Pad one sub-lattice by one element per side.

    torch's native pad writes every value once; where the full-resolution ``mirror`` lands on the
    second sample of the sub-lattice instead of its edge, that row or column is copied over after.
    """
    height, width = plane.shape[-2:]
    if mode == "constant":
        return F.pad(plane, (1, 1, 1, 1))
    top, bottom = _source(height, row_parity, mode)
    left, right = _source(width, col_parity, mode)
    out = F.pad(plane, (1, 1, 1, 1), mode="replicate")
    # Columns first over every row, then whole rows: the corners come out right as well.
    for col, source in ((0, left), (width + 1, right)):
        if source != (0 if col == 0 else width - 1):
            out[..., :, col] = out[..., :, 1 + source]
    for row, source in ((0, top), (height + 1, bottom)):
        if source != (0 if row == 0 else height - 1):
            out[..., row, :] = out[..., 1 + source, :]
    return out


def pad(field: Field, mode: str) -> Field:
    """Pad every sub-lattice by one element on each side, as ``mode`` extends the full image."""
    return {
        (a, b): None if plane is None else _pad_plane(plane, a, b, mode) for (a, b), plane in field.items()
    }


def at(padded: Field, site: Site, dy: int, dx: int) -> torch.Tensor | None:
    """Values of a padded field at full-resolution offset (dy, dx) from every site of class ``site``.

    Offsets reach at most one sub-lattice step (|dy|, |dx| <= 2).
    """
    a, b = site
    target = ((a + dy) % 2, (b + dx) % 2)
    plane = padded[target]
    if plane is None:
        return None
    shift_row, shift_col = (a + dy - target[0]) // 2, (b + dx - target[1]) // 2
    height, width = plane.shape[-2] - 2, plane.shape[-1] - 2
    return plane[..., 1 + shift_row : 1 + shift_row + height, 1 + shift_col : 1 + shift_col + width]


def select(mask: torch.Tensor, if_one: torch.Tensor, if_zero: torch.Tensor) -> torch.Tensor:
    """``torch.where(mask == 1, if_one, if_zero)`` for a 0/1 float ``mask``, exactly.

    ``torch.lerp(if_zero, if_one, w)`` is computed as ``if_zero + w * d`` for w < 0.5 and as
    ``if_one - d * (1 - w)`` otherwise (d = if_one - if_zero), so w = 0 and w = 1 return the
    inputs bit for bit (for finite values); gradients are those of ``where``. On CPU it is
    about 7x faster than ``torch.where``, whose bool-condition kernel is not vectorised.
    """
    return torch.lerp(if_zero, if_one, mask)


def _add(x, y):
    if x is None:
        return y
    return x if y is None else x + y


def _scaled(x, weight):
    # x * 1.0 is x exactly: skip the pass (the decision window is mostly ones).
    return None if x is None else x if weight == 1 else x * weight


def filter1d(padded: Field, site: Site, taps: tuple[float, ...], horizontal: bool) -> torch.Tensor:
    """``scipy.ndimage.convolve1d`` of the field along one axis, at the sites of one class.

    Symmetric filters of 3 or 5 taps, summed in scipy's order: the centre, then the outer pairs
    inwards, each pair added before it is weighted. Zero taps and zero neighbours are skipped,
    which changes no value (adding zero is exact).
    """
    half = len(taps) // 2
    if len(taps) % 2 == 0 or any(taps[half + i] != taps[half - i] for i in range(1, half + 1)):
        raise InputError(f"filter1d needs an odd symmetric filter, got {taps}.")

    def neighbour(offset):
        return at(padded, site, 0, offset) if horizontal else at(padded, site, offset, 0)

    out = _scaled(neighbour(0), taps[half]) if taps[half] else None
    for offset in range(-half, 0):
        if taps[half + offset]:
            out = _add(out, _scaled(_add(neighbour(offset), neighbour(-offset)), taps[half + offset]))
    if out is None:
        raise InputError("filter1d found only zeros around this site class.")
    return out


def convolve_sparse(padded: Field, site: Site, kernel: tuple[tuple[float, ...], ...]) -> torch.Tensor:
    """``scipy.ndimage.convolve`` with a small sparse kernel, at the sites of one class.

    scipy sums the non-zero weights of the flipped kernel in raster order, starting from zero.
    """
    radius_y, radius_x = len(kernel) // 2, len(kernel[0]) // 2
    out = None
    for row, values in enumerate(reversed(kernel)):
        for col, weight in enumerate(reversed(values)):
            if weight:
                term = _scaled(at(padded, site, row - radius_y, col - radius_x), weight)
                out = _add(out, term)
    return out
