"""DDFAPD demosaicing with the refining step, as colour-demosaicing's ``demosaicing_CFA_Bayer_Menon2007``.

Reference: Menon, Andriani & Calvagno (2007), "Demosaicing with directional filtering and a
posteriori decision", IEEE Transactions on Image Processing 16(1). Green is interpolated
horizontally and vertically; per pixel the direction with the smaller colour-difference gradient
is kept, then red and blue follow along that direction. Boundary modes follow the reference:
1-D filters extend the image by ``mirror``, the decision window by zeros.

The directional decision compares sums that tie exactly in real images (flat regions, quantised
values). It is therefore computed in float64 with scipy's order of operations, which reproduces
the reference's choice bit for bit; the interpolation itself runs in the working dtype. The
choice is a hard selection, so the output is differentiable almost everywhere.
"""

from __future__ import annotations

import torch

from raw2logit.isp.demosaic import lattice
from raw2logit.isp.demosaic.lattice import at, bayer_sites, convolve_sparse, filter1d, select

H_0 = (0.0, 0.5, 0.0, 0.5, 0.0)
H_1 = (-0.25, 0.0, 0.5, 0.0, -0.25)
K_B = (0.5, 0.0, 0.5)
FIR = (1 / 3, 1 / 3, 1 / 3)
DECISION_WINDOW = (
    (0.0, 0.0, 1.0, 0.0, 1.0),
    (0.0, 0.0, 0.0, 1.0, 0.0),
    (0.0, 0.0, 3.0, 0.0, 3.0),
    (0.0, 0.0, 0.0, 1.0, 0.0),
    (0.0, 0.0, 1.0, 0.0, 1.0),
)
DECISION_WINDOW_T = tuple(zip(*DECISION_WINDOW))


def _h(padded, site, taps):
    return filter1d(padded, site, taps, horizontal=True)


def _v(padded, site, taps):
    return filter1d(padded, site, taps, horizontal=False)


def _green_estimates(cfa: lattice.Field, sites) -> tuple[dict, dict]:
    """Horizontal and vertical green at the R and B sites (Menon's h_0 + h_1 filters)."""
    padded = lattice.pad(cfa, "mirror")
    horizontal, vertical = {}, {}
    for name in ("R", "B"):
        site = sites[name]
        horizontal[name] = _h(padded, site, H_0) + _h(padded, site, H_1)
        vertical[name] = _v(padded, site, H_0) + _v(padded, site, H_1)
    return horizontal, vertical


def directional_decision(cfa: torch.Tensor, pattern: str):
    """Green estimates and the per-site choice between them, at the R and B sites.

    Computed in float64 with scipy's order of operations: ``d_V >= d_H`` is then exactly the
    reference's choice, ties included. The green estimates stay on the autograd graph.

    Args:
        cfa: mosaic of shape (B, H, W).

    Returns:
        (green_horizontal, green_vertical, horizontal): dicts "R"/"B" -> (B, H/2, W/2) float64
        tensors, ``horizontal`` 1.0 where the horizontal estimate is kept and 0.0 elsewhere (a
        selection mask for ``lattice.select``).
    """
    sites = bayer_sites(pattern)
    field = lattice.split(cfa.double())
    green_h, green_v = _green_estimates(field, sites)
    gradients = {}
    for direction, green in (("h", green_h), ("v", green_v)):
        difference = {site: None for site in lattice.SITES}
        for name in ("R", "B"):
            difference[sites[name]] = field[sites[name]] - green[name]
        padded = lattice.pad(difference, "mirror")  # numpy's pad(mode="reflect") is scipy's mirror
        gradient = {site: None for site in lattice.SITES}
        for name in ("R", "B"):
            site = sites[name]
            shifted = at(padded, site, 0, 2) if direction == "h" else at(padded, site, 2, 0)
            gradient[site] = (difference[site] - shifted).abs()
        gradients[direction] = lattice.pad(gradient, "constant")
    horizontal = {}
    for name in ("R", "B"):
        d_h = convolve_sparse(gradients["h"], sites[name], DECISION_WINDOW)
        d_v = convolve_sparse(gradients["v"], sites[name], DECISION_WINDOW_T)
        # Written straight into a float mask: on CPU a bool tensor then a cast costs 2x more.
        horizontal[name] = torch.ge(d_v.detach(), d_h.detach(), out=d_h.new_empty(d_h.shape))
    return green_h, green_v, horizontal


def demosaic_menon2007(
    cfa: torch.Tensor, pattern: str = "RGGB", refining_step: bool = True, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Menon (2007) demosaicing of a batch of Bayer mosaics.

    Args:
        cfa: mosaic of shape (B, H, W). Pass float64 values to match the reference's decision
            exactly (the pipelines keep the black-level-corrected mosaic in float64).
        pattern: one of ``RGGB``, ``BGGR``, ``GRBG``, ``GBRG``.
        refining_step: apply the refining step (colour-demosaicing's default).
        dtype: dtype of the interpolation and the output; defaults to ``cfa.dtype``.

    Returns:
        RGB image of shape (B, 3, H, W), not clipped.
    """
    dtype = dtype or cfa.dtype
    sites = bayer_sites(pattern)
    R, B, G1, G2 = sites["R"], sites["B"], sites["G1"], sites["G2"]
    green_h, green_v, horizontal64 = directional_decision(cfa, pattern)
    horizontal = {name: mask.to(dtype) for name, mask in horizontal64.items()}
    mosaic = lattice.split(cfa.to(dtype))

    green = {G1: mosaic[G1], G2: mosaic[G2]}
    green[R] = select(horizontal64["R"], green_h["R"], green_v["R"]).to(dtype)
    green[B] = select(horizontal64["B"], green_h["B"], green_v["B"]).to(dtype)
    red = {R: mosaic[R], G1: None, G2: None, B: None}
    blue = {B: mosaic[B], G1: None, G2: None, R: None}

    # Red and blue at green sites, along the rows and columns that hold them. Each assignment
    # reads the planes as the previous ones left them, as in the reference.
    # Only the planes a rule reads are formed and padded (None is skipped): K_B's centre is 0, so
    # red and blue at green sites read green at the red and blue sites only.
    pg = lattice.pad({R: green[R], B: green[B], G1: None, G2: None}, "mirror")
    pr = lattice.pad(red, "mirror")
    red[G1] = green[G1] + _h(pr, G1, K_B) - _h(pg, G1, K_B)
    red[G2] = green[G2] + _v(pr, G2, K_B) - _v(pg, G2, K_B)
    pb = lattice.pad(blue, "mirror")
    blue[G2] = green[G2] + _h(pb, G2, K_B) - _h(pg, G2, K_B)
    blue[G1] = green[G1] + _v(pb, G1, K_B) - _v(pg, G1, K_B)

    # Red at blue sites and blue at red sites, along the chosen direction.
    pr, pb = lattice.pad(red, "mirror"), lattice.pad(blue, "mirror")
    red[B] = select(
        horizontal["B"],
        blue[B] + _h(pr, B, K_B) - _h(pb, B, K_B),
        blue[B] + _v(pr, B, K_B) - _v(pb, B, K_B),
    )
    blue[R] = select(
        horizontal["R"],
        red[R] + _h(pb, R, K_B) - _h(pr, R, K_B),
        red[R] + _v(pb, R, K_B) - _v(pr, R, K_B),
    )
    if refining_step:
        red, green, blue = _refine(red, green, blue, horizontal, sites)
    return lattice.assemble([red, green, blue])


def _difference(x: lattice.Field, y: lattice.Field, sites=lattice.SITES) -> lattice.Field:
    """x - y at the given site classes (None at the others)."""
    return {site: x[site] - y[site] if site in sites else None for site in lattice.SITES}


def _refine(red, green, blue, horizontal, sites):
    """Menon (2007) refining step, as colour-demosaicing's ``refining_step_Menon2007``."""
    R, B, G1, G2 = sites["R"], sites["B"], sites["G1"], sites["G2"]

    def along_decision(padded, name):
        site = sites[name]
        return select(horizontal[name], _h(padded, site, FIR), _v(padded, site, FIR))

    # Green at red and blue sites, from the smoothed colour differences.
    blue_minus_green = along_decision(lattice.pad(_difference(blue, green, (B, G1, G2)), "mirror"), "B")
    red_minus_green = along_decision(lattice.pad(_difference(red, green, (R, G1, G2)), "mirror"), "R")
    green = dict(green)
    green[R] = red[R] - red_minus_green
    green[B] = blue[B] - blue_minus_green

    # Red and blue at green sites: red at G2 from the reds above and below, at G1 from those
    # left and right; blue likewise.
    red_green = lattice.pad(_difference(red, green, (R,)), "mirror")
    blue_green = lattice.pad(_difference(blue, green, (B,)), "mirror")
    red, blue = dict(red), dict(blue)
    red[G2] = green[G2] + _v(red_green, G2, K_B)
    red[G1] = green[G1] + _h(red_green, G1, K_B)
    blue[G1] = green[G1] + _v(blue_green, G1, K_B)
    blue[G2] = green[G2] + _h(blue_green, G2, K_B)

    # Red at blue sites and blue at red sites.
    red_blue = lattice.pad(_difference(red, blue), "mirror")
    red_at_blue = blue[B] + along_decision(red_blue, "B")
    blue[R] = red[R] - along_decision(red_blue, "R")
    red[B] = red_at_blue
    return red, green, blue
