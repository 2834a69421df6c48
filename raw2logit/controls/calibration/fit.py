"""Fitting a data model to a device: the variant search and the refinement of θ (see the package docstring)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch

from raw2logit.controls.calibration.metrics import evaluate_pipeline
from raw2logit.controls.calibration.result import CalibrationResult
from raw2logit.controls.calibration.simulate import _as_raw_tensor
from raw2logit.errors import InputError, check_finite_loss
from raw2logit.isp.camera import CameraParams
from raw2logit.isp.parametrized import ParametrizedPipeline
from raw2logit.names import STATIC_PIPELINE_NAMES, TONE_CURVES, resolve_pipeline_names

LOSS_SCALE = 1.0 / 255.0
SATURATED = 254.0 / 255.0
BLACK = 1.0 / 255.0
# The continuous colour parameters fitted for every candidate variant.
COLOUR_GROUPS = ("black_level", "white_balance", "colour_matrix", "gamma")
# Learning rate per θ group relative to ``lr``: Adam steps are about ``lr`` in each parameter's
# own units, and black levels (a few hundredths) and kernel taps (tenths) are smaller numbers
# than gains and matrix entries (about 1).
GROUP_LR = {
    "black_level": 0.1,
    "demosaic": 0.1,
    "white_balance": 1.0,
    "colour_matrix": 1.0,
    "sharpen": 0.1,
    "denoise": 0.1,
    "gamma": 1.0,
}
FINAL_LR_FRACTION = 0.01  # cosine decay of every group's learning rate down to this fraction


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


def _valid_mask(target: torch.Tensor, margin: int) -> torch.Tensor:
    valid = (target > BLACK) & (target < SATURATED)
    if margin:
        border = torch.ones_like(valid)
        border[..., margin:-margin, margin:-margin] = False
        valid &= ~border
    return valid


def _crop_batch(raw, target, valid, patch_size, generator):
    if patch_size is None:
        return raw, target, valid
    height, width = raw.shape[-2:]
    top = 2 * int(torch.randint(0, (height - patch_size) // 2 + 1, (1,), generator=generator))
    left = 2 * int(torch.randint(0, (width - patch_size) // 2 + 1, (1,), generator=generator))
    rows, cols = slice(top, top + patch_size), slice(left, left + patch_size)
    return raw[:, rows, cols], target[..., rows, cols], valid[..., rows, cols]


def _optimise(
    pipeline: ParametrizedPipeline,
    groups: Sequence[str],
    raw: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor,
    steps: int,
    lr: float,
    patch_size: int | None,
    margin: int,
    generator: torch.Generator,
) -> None:
    """Adam on ``groups`` of θ with cosine-decaying learning rates, all training pairs per step."""
    if steps == 0 or not groups:
        return
    pipeline.set_trainable(groups)
    optimiser = torch.optim.Adam([{"params": [getattr(pipeline, g)], "lr": lr * GROUP_LR[g]} for g in groups])
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser,
        lambda step: (
            FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * step / steps))
        ),
    )
    for step in range(steps):
        batch_raw, batch_target, batch_valid = _crop_batch(raw, target, valid, patch_size, generator)
        if patch_size is not None:
            batch_valid = _valid_mask(batch_target, margin) & batch_valid
        optimiser.zero_grad(set_to_none=True)
        loss = calibration_loss(pipeline(batch_raw), batch_target, batch_valid)
        check_finite_loss(loss, "calibration loss", 0, step,
                          f"the fit stops with nothing written (calibrate.lr={lr:g}; lower it)")  # fmt: skip
        loss.backward()
        optimiser.step()
        schedule.step()
    pipeline.set_trainable([])


@torch.no_grad()
def _train_loss(pipeline, raw, target, valid) -> float:
    losses = [
        float(calibration_loss(pipeline(raw[i : i + 1]), target[i : i + 1], valid[i : i + 1]))
        for i in range(len(raw))
    ]
    weights = valid.flatten(1).sum(1).double().cpu().numpy()
    return float(np.average(losses, weights=weights)) if weights.sum() else math.nan


def _split(count: int, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) indices, sorted; deterministic in ``seed``."""
    if holdout == 0:
        return np.arange(count), np.array([], dtype=np.int64)
    if count < 2:
        raise InputError(
            f"holdout={holdout} needs at least 2 pairs to hold some out; got {count} (pass holdout=0)."
        )
    held = min(max(1, round(count * holdout)), count - 1)
    order = np.random.default_rng(seed).permutation(count)
    return np.sort(order[held:]), np.sort(order[:held])


def fit(
    pairs_raw,
    pairs_rgb,
    camera: CameraParams,
    variants: str | Iterable[str] = STATIC_PIPELINE_NAMES,
    tone_curve: str = "srgb",
    steps: int = 400,
    lr: float = 0.01,
    holdout: float = 0.25,
    seed: int = 0,
    log: Callable[[str], object] | None = print,
    search_steps: int | None = None,
    margin: int = 4,
    patch_size: int | None = None,
    names: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
) -> CalibrationResult:
    """Fit a data model to a device from paired raw and processed images.

    1. Variant search: for each candidate, a ``ParametrizedPipeline(camera, variant=...)`` fits its
       continuous colour parameters (black level, white balance, colour matrix, and γ with
       ``tone_curve="power"``) for ``search_steps`` steps from the camera's values; the variant
       with the lowest training loss wins (the first in ``variants`` order on an exact tie).
    2. Refinement: the winner continues for ``steps`` steps with every active θ group, kernels
       included (bilinear demosaic kernels for ``bi``, the sharpening kernel for ``s``, the
       Gaussian kernel for ``ga``).

    Adam with one learning rate per group (``lr`` times ``GROUP_LR``), cosine-decayed to 1 %;
    the loss is ``calibration_loss`` (see the module docstring for the loss and colour space).

    Args:
        pairs_raw: (N, H, W) mosaics in [0, 1], H and W even (numpy or torch).
        pairs_rgb: (N, H, W, 3) device images in [0, 1], sRGB-encoded.
        camera: initial camera parameters (e.g. ``CalibrationPairs.camera`` from the DNG metadata).
        variants: candidate static variants, or ``"all"``.
        tone_curve: ``"srgb"`` (device output is sRGB-encoded) or ``"power"`` (learned γ).
        steps: refinement steps.
        lr: base learning rate.
        holdout: fraction of pairs held out for the metrics (at least one when > 0), chosen by ``seed``.
        seed: seeds the held-out split and the patch positions.
        log: called with one line per candidate and for the result; None for silence.
        search_steps: colour-fitting steps per candidate (default ``max(1, steps // 4)``).
        margin: border width (pixels) left out of the loss and the metrics.
        patch_size: even side of random square crops per step (for large images); None: whole images.
        names: pair names for the result and figure (default ``pair0``, ``pair1``, ...).
        device: torch device to fit on.

    Returns:
        ``CalibrationResult``.

    Raises:
        InputError: mismatched shapes, values outside [0, 1], unknown variants or tone curve,
            bad ``steps``, ``holdout``, ``margin`` or ``patch_size``.
    """
    started = time.perf_counter()
    say = log or (lambda message: None)
    variants = resolve_pipeline_names(variants)
    if not variants:
        raise InputError("variants is empty; expected at least one of the static pipeline names.")
    if tone_curve not in TONE_CURVES:
        raise InputError(f"Unknown tone curve {tone_curve!r}; expected one of {', '.join(TONE_CURVES)}.")
    if not isinstance(camera, CameraParams):
        raise InputError(f"camera must be a CameraParams; got {type(camera).__name__}.")
    search_steps = max(1, steps // 4) if search_steps is None else search_steps
    if int(steps) != steps or steps < 0 or int(search_steps) != search_steps or search_steps < 0:
        raise InputError(
            f"steps and search_steps must be non-negative integers; got {steps} and {search_steps}."
        )
    if not 0 <= holdout < 1:
        raise InputError(f"holdout must lie in [0, 1); got {holdout}.")
    raw = _as_raw_tensor(pairs_raw, "pairs_raw").float()
    rgb = pairs_rgb if isinstance(pairs_rgb, torch.Tensor) else torch.tensor(np.asarray(pairs_rgb))
    if rgb.ndim == 3:
        rgb = rgb[None]
    count, height, width = raw.shape
    if tuple(rgb.shape) != (count, height, width, 3):
        raise InputError(
            f"pairs_rgb must have shape (N, H, W, 3) = {(count, height, width, 3)} to match pairs_raw; "
            f"got {tuple(rgb.shape)}."
        )
    rgb = rgb.detach().float().cpu()
    if not torch.isfinite(rgb).all() or rgb.min() < 0 or rgb.max() > 1:
        raise InputError("pairs_rgb must hold finite values in [0, 1] (divide 8-bit images by 255).")
    if not 0 <= margin < min(height, width) // 2 - 1:
        raise InputError(
            f"margin must lie in [0, {min(height, width) // 2 - 2}] for {height}x{width} images; got {margin}."
        )
    if patch_size is not None and (patch_size % 2 or not 2 * margin + 2 <= patch_size <= min(height, width)):
        raise InputError(
            f"patch_size must be even, above 2 x margin and at most {min(height, width)}; got {patch_size}."
        )
    names = [f"pair{i}" for i in range(count)] if names is None else list(names)
    if len(names) != count:
        raise InputError(f"names must give one name per pair ({count}); got {len(names)}.")

    train, held = _split(count, holdout, seed)
    evaluate = held if len(held) else train
    evaluated_on = "held-out" if len(held) else "train"
    raw, target = raw.to(device), rgb.permute(0, 3, 1, 2).contiguous().to(device)
    train_raw, train_target = raw[train], target[train]
    train_valid = _valid_mask(train_target, margin)
    eval_raw, eval_target = raw[evaluate], rgb[evaluate].numpy()
    generator = torch.Generator().manual_seed(seed)

    def metrics(pipeline: ParametrizedPipeline) -> tuple[float, float]:
        return evaluate_pipeline(pipeline, eval_raw, eval_target, margin)[:2]

    say(
        f"calibration: {len(train)} training and {len(held)} held-out pair(s) of {height}x{width}, "
        f"{len(variants)} candidate variant(s), tone curve {tone_curve}"
    )
    if patch_size is None and len(train) * height * width > 4_000_000:
        say("calibration: the training pairs are large; pass patch_size (e.g. 256) to fit on random crops")
    table: dict[str, dict[str, float]] = {}
    fitted: dict[str, ParametrizedPipeline] = {}
    for variant in variants:
        pipeline = ParametrizedPipeline(camera, variant=variant, tone_curve=tone_curve).to(device)
        groups = [g for g in COLOUR_GROUPS if g in pipeline.active_groups()]
        _optimise(
            pipeline,
            groups,
            train_raw,
            train_target,
            train_valid,
            search_steps,
            lr,
            patch_size,
            margin,
            generator,
        )
        loss = _train_loss(pipeline, train_raw, train_target, train_valid)
        psnr, delta_e = metrics(pipeline)
        table[variant] = {"train_loss": loss, "heldout_psnr": psnr, "heldout_delta_e": delta_e}
        fitted[variant] = pipeline
        say(
            f"calibration: {variant}: train loss {loss:.3f} (8-bit steps), {evaluated_on} PSNR {psnr:.2f} dB, "
            f"ΔE {delta_e:.2f}"
        )
    ranked = sorted(variants, key=lambda v: (table[v]["train_loss"], variants.index(v)))
    best = ranked[0]
    runner_up = f"; runner-up {ranked[1]} at {table[ranked[1]]['train_loss']:.3f}" if len(ranked) > 1 else ""
    say(
        f"calibration: chose {best} (train loss {table[best]['train_loss']:.3f}{runner_up}); refining all θ groups"
    )

    initial_psnr, initial_delta_e = metrics(
        ParametrizedPipeline(camera, variant=best, tone_curve=tone_curve).to(device)
    )
    pipeline = fitted[best]
    _optimise(
        pipeline,
        pipeline.active_groups(),
        train_raw,
        train_target,
        train_valid,
        steps,
        lr,
        patch_size,
        margin,
        generator,
    )
    # Rebuild around the fitted camera: a static pipeline or θ reset built from the exported
    # file's camera then shows the device's colours. θ overrides θ_stat, so the views are unchanged.
    theta = pipeline.theta_dict()
    fitted_camera = CameraParams(
        theta["black_level"],
        theta["white_balance"],
        theta["colour_matrix"],
        camera.pattern,
        name=f"calibrated {camera.name}",
    )
    pipeline = ParametrizedPipeline(fitted_camera, theta=theta, variant=best, tone_curve=tone_curve).to(
        device
    )
    train_loss = _train_loss(pipeline, train_raw, train_target, train_valid)
    psnr, delta_e, views = evaluate_pipeline(pipeline, eval_raw, eval_target, margin, keep=3)
    say(
        f"calibration: {best} fitted: train loss {train_loss:.3f}, {evaluated_on} PSNR {psnr:.2f} dB "
        f"(initial camera {initial_psnr:.2f} dB), ΔE {delta_e:.2f} (initial {initial_delta_e:.2f}) "
        f"in {time.perf_counter() - started:.1f} s"
    )
    examples = [(names[i], eval_target[k].astype(np.float64), views[k]) for k, i in enumerate(evaluate[:3])]
    return CalibrationResult(
        variant=best,
        pipeline=pipeline,
        variants=table,
        psnr=psnr,
        delta_e=delta_e,
        initial_psnr=initial_psnr,
        initial_delta_e=initial_delta_e,
        train_loss=train_loss,
        train_names=[names[i] for i in train],
        heldout_names=[names[i] for i in held],
        evaluated_on=evaluated_on,
        examples=examples,
        initial_camera=camera,
        settings={
            "steps": int(steps),
            "search_steps": int(search_steps),
            "lr": lr,
            "holdout": holdout,
            "seed": seed,
            "margin": margin,
            "patch_size": patch_size,
            "tone_curve": tone_curve,
            "candidates": list(variants),
        },
    )
