"""The gradient steps of a calibration: loss, batches of crops, Adam per θ group, progress lines.

A step is one forward and one backward pass of the data model on a batch (float32), the loss,
and an Adam update: nothing else runs per step (no evaluation on whole images), so a step costs
little more than the data model's own forward + backward (``scripts/bench_calibration.py``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import torch

from raw2logit.errors import check_finite_loss
from raw2logit.isp.parametrized import ParametrizedPipeline

LOSS_SCALE = 1.0 / 255.0
SATURATED = 254.0 / 255.0
BLACK = 1.0 / 255.0
# Learning rate per θ group relative to ``lr``: Adam steps are about ``lr`` in each parameter's
# own units, and black levels (a few hundredths) and kernel taps (tenths) are smaller numbers
# than gains, matrix entries (about 1) and tone curve values (in [0, 1], fitted to 1/255).
GROUP_LR = {
    "black_level": 0.1,
    "demosaic": 0.1,
    "white_balance": 1.0,
    "colour_matrix": 1.0,
    "sharpen": 0.1,
    "denoise": 0.1,
    "gamma": 1.0,
    "curve": 0.3,
}
FINAL_LR_FRACTION = 0.01  # cosine decay of every group's learning rate down to this fraction
# Pixels per step: whole training images up to this many, random crops beyond (one per pair).
BATCH_PIXELS = 9 * 48 * 48
PROGRESS_SECONDS = 3.0


def calibration_loss(view: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Charbonnier loss in 8-bit steps over the valid target values.

    Args:
        view: model output (B, 3, H, W) in [0, 1].
        target: device output (B, 3, H, W) in [0, 1].
        valid: (B, 3, H, W) bool, False where the target is saturated, black or in the border.

    Returns:
        scalar ``mean((sqrt(d² + s²) - s) / s)`` over valid values, ``s`` one 8-bit step.
    """
    difference = (view - target) / LOSS_SCALE
    per_value = torch.sqrt(difference * difference + 1.0) - 1.0
    return (per_value * valid).sum() / valid.sum().clamp_min(1)


def valid_mask(target: torch.Tensor, margin: int) -> torch.Tensor:
    """(B, 3, H, W) bool: target values neither black nor saturated, away from a ``margin`` border."""
    valid = (target > BLACK) & (target < SATURATED)
    if margin:
        border = torch.ones_like(valid)
        border[..., margin:-margin, margin:-margin] = False
        valid &= ~border
    return valid


def auto_patch_size(count: int, height: int, width: int, margin: int) -> int | None:
    """The crop side for ``count`` training pairs: None (whole images) when they fit ``BATCH_PIXELS``."""
    if count * height * width <= BATCH_PIXELS:
        return None
    side = int(math.sqrt(BATCH_PIXELS / count)) // 2 * 2
    return min(max(side, 2 * margin + 32), height // 2 * 2, width // 2 * 2)


class Batches:
    """Batches of the training pairs: whole images, or one random crop (even offsets) per pair.

    Args:
        raw: (N, H, W) mosaics; target: (N, 3, H, W) device images; valid: (N, 3, H, W) bool.
        patch_size: crop side, or None for whole images.
        margin: border left out of the loss in each crop (the data model's own border handling).
        generator: seeds the crop positions.
    """

    def __init__(self, raw, target, valid, patch_size: int | None, margin: int, generator: torch.Generator):
        self.raw, self.target, self.valid = raw, target, valid
        self.patch_size, self.margin, self.generator = patch_size, margin, generator
        self.pixels = len(raw) * (patch_size**2 if patch_size else raw.shape[-1] * raw.shape[-2])

    def next(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.patch_size is None:
            return self.raw, self.target, self.valid
        count, height, width = self.raw.shape
        size = self.patch_size
        tops = 2 * torch.randint(0, (height - size) // 2 + 1, (count,), generator=self.generator)
        lefts = 2 * torch.randint(0, (width - size) // 2 + 1, (count,), generator=self.generator)
        crops = [(slice(int(t), int(t) + size), slice(int(s), int(s) + size)) for t, s in zip(tops, lefts)]
        raw = torch.stack([self.raw[i, rows, cols] for i, (rows, cols) in enumerate(crops)])
        target = torch.stack([self.target[i, :, rows, cols] for i, (rows, cols) in enumerate(crops)])
        valid = torch.stack([self.valid[i, :, rows, cols] for i, (rows, cols) in enumerate(crops)])
        return raw, target, valid & valid_mask(target, self.margin)


class Progress:
    """Prints a line at most every ``every`` seconds while steps run, and at each stage's end."""

    def __init__(self, say: Callable[[str], object], every: float = PROGRESS_SECONDS):
        self.say, self.every = say, every
        self.started = self.last = time.perf_counter()
        self.steps = 0  # every step of every stage, for the cost per step
        self.step_seconds = 0.0
        self.durations: list[float] = []  # seconds of each step (its median is robust to a busy machine)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def update(self, what: str, step: int, total: int, loss: float) -> None:
        now = time.perf_counter()
        if now - self.last >= self.every:
            self.last = now
            self.say(f"calibration: {what}: step {step}/{total}, loss {loss:.3f} (8-bit steps), "
                     f"{now - self.started:.0f} s")  # fmt: skip

    def note(self, message: str) -> None:
        self.last = time.perf_counter()
        self.say(f"calibration: {message}")


def project_monotone(pipeline: ParametrizedPipeline) -> None:
    """Keep the stored tone curve knots non-decreasing (the curve uses their running maximum anyway)."""
    with torch.no_grad():
        pipeline.curve.copy_(torch.cummax(pipeline.curve, dim=-1).values)


def optimise(
    pipeline: ParametrizedPipeline,
    groups: Sequence[str],
    batches: Batches,
    steps: int,
    lr: float,
    progress: Progress,
    what: str,
) -> float:
    """Adam on ``groups`` of θ, one learning rate per group (``lr`` x ``GROUP_LR``), cosine-decayed to
    ``FINAL_LR_FRACTION``; one batch per step. Returns the last step's loss (nan without steps)."""
    groups = [g for g in groups if g in pipeline.active_groups()]
    if steps == 0 or not groups:
        return math.nan
    pipeline.set_trainable(groups)
    optimiser = torch.optim.Adam([{"params": [getattr(pipeline, g)], "lr": lr * GROUP_LR[g]} for g in groups])
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser,
        lambda step: (
            FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * step / steps))
        ),
    )
    started = time.perf_counter()
    for step in range(steps):
        step_started = time.perf_counter()
        raw, target, valid = batches.next()
        optimiser.zero_grad(set_to_none=True)
        loss = calibration_loss(pipeline(raw), target, valid)
        check_finite_loss(loss, "calibration loss", 0, step,
                          f"the fit stops with nothing written (calibrate.lr={lr:g}; lower it)")  # fmt: skip
        loss.backward()
        optimiser.step()
        schedule.step()
        if "curve" in groups:
            project_monotone(pipeline)
        progress.durations.append(time.perf_counter() - step_started)
        progress.update(what, step + 1, steps, float(loss.detach()))
    progress.steps += steps
    progress.step_seconds += time.perf_counter() - started
    pipeline.set_trainable([])
    return float(loss.detach())


EVALUATION_PIXELS = 1 << 20  # images per forward pass when scoring: about this many pixels


def chunks(count: int, height: int, width: int) -> list[slice]:
    """Slices of a batch of ``count`` images with about ``EVALUATION_PIXELS`` pixels each."""
    size = max(1, EVALUATION_PIXELS // (height * width))
    return [slice(start, start + size) for start in range(0, count, size)]


@torch.no_grad()
def selection_loss(pipeline: ParametrizedPipeline, raw, target, valid) -> float:
    """``calibration_loss`` over whole images (in batches), pooled over every valid value."""
    total, count = 0.0, 0
    for part in chunks(*raw.shape):
        weight = int(valid[part].sum())
        if weight:
            total += float(calibration_loss(pipeline(raw[part]), target[part], valid[part])) * weight
            count += weight
    return total / count if count else math.nan
