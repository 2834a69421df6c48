"""What "equal" means between two code paths of the ISP, on every CPU (shared ARCHITECTURE.md).

Float32 arithmetic in another order (a fused matrix product, another SIMD kernel chosen by torch at
run time) gives other roundings, so two code paths agree within a tolerance, never bit for bit:
before the gamma within ``atol``; after it within ``max(atol, e ** (1/2.2))``, where ``e`` is the
pre-gamma difference, because ``x ** p`` (p = 1/2.2 < 1) is p-Hölder on [0, 1]:
``|a**p - b**p| <= |a - b| ** p``. Bitwise equality is asserted only for the same code run twice.
"""

from __future__ import annotations

import numpy as np
import torch

GAMMA = 2.2
PRE_GAMMA = "denoise"  # the last stage before the tone curve
# float32 atol between two torch code paths (the contract's 1e-5) and for float64 ones.
ATOL = {torch.float32: 1e-5, torch.float64: 1e-12}
# Rounding of the power itself (float32 ulp near 1 is 6e-8; exp/log add a few).
POWER_SLACK = {torch.float32: 1e-6, torch.float64: 1e-12}


def gamma_aware_bound(
    pre_a: np.ndarray, pre_b: np.ndarray, atol: float, slack: float, extra: float = 0.0
) -> np.ndarray:
    """Largest output difference the gamma can make of a pre-gamma difference, per value, on the
    values clipped to [0, 1]: the smaller of the Hölder bound ``e ** p`` and the mean-value bound
    ``p * low ** (p - 1) * e`` (the slope at the smaller value), at least ``atol``, plus ``slack``.
    ``extra`` widens ``e`` for a code path whose own pre-gamma values are known only within it."""
    a, b = np.clip(pre_a, 0, 1), np.clip(pre_b, 0, 1)
    p = 1 / GAMMA
    error = np.abs(a - b) + extra
    low = np.maximum(np.minimum(a, b) - extra, 0)
    positive = np.where(low > 0, low, 1.0)  # the slope is unbounded at 0: the Hölder bound applies
    slope_bound = np.where(low > 0, p * positive ** (p - 1) * error, np.inf)
    return np.maximum(atol, np.minimum(error**p, slope_bound) + slack)


def assert_same_views(a: torch.nn.Module, b: torch.nn.Module, raw: torch.Tensor, where: str = "") -> None:
    """``a`` and ``b`` compute the same data model on ``raw`` within the contract's tolerance.

    Stage by stage (``forward_stages``): every stage up to the gamma within ``ATOL``, the gamma stage
    within ``gamma_aware_bound`` of the pre-gamma difference. ``forward()``, which may fuse steps
    (its own pre-gamma values are then known only within ``ATOL`` of the stages'): within
    ``gamma_aware_bound`` of the pre-gamma difference widened by ``ATOL``.
    """
    atol, slack = ATOL[raw.dtype], POWER_SLACK[raw.dtype]
    stages_a, stages_b = a.forward_stages(raw), b.forward_stages(raw)
    for stage, value in stages_a.items():
        if stage == "gamma":
            continue
        difference = (value - stages_b[stage]).abs().max().item()
        assert difference <= atol, f"{where}: stage {stage} differs by {difference:.3g} > {atol:g}"
    pre_a = stages_a[PRE_GAMMA].detach().double().numpy()
    pre_b = stages_b[PRE_GAMMA].detach().double().numpy()
    checks = {
        "gamma stage": (stages_a["gamma"], stages_b["gamma"], 0.0),
        "forward()": (a(raw), b(raw), atol),
    }
    for name, (out_a, out_b, extra) in checks.items():
        error = np.abs(out_a.detach().double().numpy() - out_b.detach().double().numpy())
        bound = gamma_aware_bound(pre_a, pre_b, atol, slack, extra)
        assert np.all(error <= bound), f"{where}: {name} exceeds its bound by {np.max(error - bound):.3g}"
