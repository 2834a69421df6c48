"""Fitting a data model to a device: a search over the data model's structure, then θ refined.

The structure of a candidate is a static variant (demosaic, sharpen, denoise; Section 4.2.1) and
the place of the white balance (after demosaicing, as the paper; or before, as dcraw, LibRaw and
camera ISPs do: it matters for Malvar's and Menon's demosaics, which mix colours). Stages:

1. colour: from the camera's metadata, every θ group of one candidate, the cheapest (bilinear,
   ``bi_s_ga`` where tried: its kernels can undo or add sharpening and blur) is fitted; its colour
   groups (black level, white balance, colour matrix, and the tone curve's γ or knots) are the
   start of every candidate: colour is a low-frequency property, nearly independent of the demosaic.
2. search: every candidate is scored at the shared colour values (training loss on whole training
   images, a forward pass each); the ``CONTENDERS`` best fit their colour groups for ``search_steps``
   steps; the ``FINALISTS`` best of those continue with every active θ group, kernels included,
   for ``2 * search_steps`` steps; the best of those wins.
3. refinement: the winner continues for ``steps`` steps with every active θ group.

Every step is one batched forward + backward of the data model on the training pairs (whole
images, or one random crop per pair when they are large: ``optimise.BATCH_PIXELS``); the held-out
pairs are evaluated once per candidate and once at the end, never per step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from raw2logit.controls.calibration.metrics import evaluate_pairs, pooled, psnr_db
from raw2logit.controls.calibration.optimise import (
    Batches,
    Progress,
    auto_patch_size,
    chunks,
    optimise,
    selection_loss,
    valid_mask,
)
from raw2logit.controls.calibration.result import CalibrationResult, demosaic_note
from raw2logit.controls.calibration.simulate import _as_raw_tensor
from raw2logit.errors import InputError
from raw2logit.isp.camera import CameraParams
from raw2logit.isp.parametrized import ParametrizedPipeline
from raw2logit.isp.tone import curve_knots
from raw2logit.names import STATIC_PIPELINE_NAMES, TONE_CURVES, parse_pipeline_name, resolve_pipeline_names

# The continuous colour parameters, fitted for every candidate.
COLOUR_GROUPS = ("black_level", "white_balance", "colour_matrix", "gamma", "curve")
CONTENDERS = 4  # candidates that fit their own colour groups
FINALISTS = 2  # candidates that continue the search with every θ group
COLOUR_MIXING_DEMOSAICS = ("ma", "me")  # the white balance's place matters for these


@dataclass(frozen=True)
class Candidate:
    """A data model structure: a static variant and the white balance's place."""

    variant: str
    white_balance_first: bool = False

    @property
    def label(self) -> str:
        return f"{self.variant}+wb_first" if self.white_balance_first else self.variant


def candidates_of(variants: Sequence[str], white_balance_first: bool | None) -> list[Candidate]:
    """The candidates: each variant in the paper's order (``white_balance_first=False``), in the dcraw
    order (True), or both where it matters (None: Malvar and Menon are tried both ways)."""
    found = []
    for variant in variants:
        if white_balance_first is None:
            orders = (False, True) if parse_pipeline_name(variant)[0] in COLOUR_MIXING_DEMOSAICS else (False,)
        else:
            orders = (white_balance_first,)
        found += [Candidate(variant, order) for order in orders]
    return found


def start_pipeline(
    camera: CameraParams, candidate: Candidate, tone_curve: str, theta=None
) -> ParametrizedPipeline:
    """A candidate at the camera's metadata values (device output taken as sRGB: a curve starts on sRGB)."""
    start = {"curve": curve_knots("srgb")} if tone_curve == "curve" else {}
    return ParametrizedPipeline(camera, theta={**start, **(theta or {})}, variant=candidate.variant,
                                tone_curve=tone_curve, white_balance_first=candidate.white_balance_first)  # fmt: skip


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


def _checked_inputs(pairs_raw, pairs_rgb, margin, patch_size):
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
    return raw, rgb


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
    white_balance_first: bool | None = None,
) -> CalibrationResult:
    """Fit a data model to a device from paired raw and processed images (stages: module docstring).

    Adam with one learning rate per group (``lr`` times ``GROUP_LR``), cosine-decayed to 1 % in each
    stage; the loss is ``calibration_loss`` (see the package docstring for the loss and colour space).

    Args:
        pairs_raw: (N, H, W) mosaics in [0, 1], H and W even (numpy or torch).
        pairs_rgb: (N, H, W, 3) device images in [0, 1], sRGB-encoded.
        camera: initial camera parameters (e.g. ``CalibrationPairs.camera`` from the DNG metadata).
        variants: candidate static variants, or ``"all"``.
        tone_curve: ``"srgb"`` (device output is sRGB-encoded), ``"power"`` (learned γ) or ``"curve"``
            (a monotone per-channel curve with learned knots, starting on sRGB).
        steps: refinement steps.
        lr: base learning rate.
        holdout: fraction of pairs held out for the metrics (at least one when > 0), chosen by ``seed``.
        seed: seeds the held-out split and the crop positions.
        log: called with progress lines (at most every few seconds) and one line per stage; None for silence.
        search_steps: colour-fitting steps per candidate (default ``max(1, steps // 8)``); the
            shared colour stage takes ``2 * search_steps``, the finalists ``2 * search_steps`` each.
        margin: border width (pixels) left out of the loss and the metrics.
        patch_size: even side of the random crops (one per training pair and step); None: chosen
            from the image size (whole images when the training pairs are small).
        names: pair names for the result and figure (default ``pair0``, ``pair1``, ...).
        device: torch device to fit on.
        white_balance_first: the white balance's place for every candidate; None: both places are
            tried for Malvar's and Menon's demosaics.

    Returns:
        ``CalibrationResult``.

    Raises:
        InputError: mismatched shapes, values outside [0, 1], unknown variants or tone curve,
            bad ``steps``, ``holdout``, ``margin`` or ``patch_size``.
    """
    progress = Progress(log or (lambda message: None))
    variants = resolve_pipeline_names(variants)
    if not variants:
        raise InputError("variants is empty; expected at least one of the static pipeline names.")
    if tone_curve not in TONE_CURVES:
        raise InputError(f"Unknown tone curve {tone_curve!r}; expected one of {', '.join(TONE_CURVES)}.")
    if not isinstance(camera, CameraParams):
        raise InputError(f"camera must be a CameraParams; got {type(camera).__name__}.")
    if white_balance_first not in (None, True, False):
        raise InputError(
            f"white_balance_first must be true, false or null (both tried); got {white_balance_first!r}."
        )
    search_steps = max(1, steps // 8) if search_steps is None else search_steps
    if int(steps) != steps or steps < 0 or int(search_steps) != search_steps or search_steps < 0:
        raise InputError(
            f"steps and search_steps must be non-negative integers; got {steps} and {search_steps}."
        )
    if not 0 <= holdout < 1:
        raise InputError(f"holdout must lie in [0, 1); got {holdout}.")
    raw, rgb = _checked_inputs(pairs_raw, pairs_rgb, margin, patch_size)
    count, height, width = raw.shape
    names = [f"pair{i}" for i in range(count)] if names is None else list(names)
    if len(names) != count:
        raise InputError(f"names must give one name per pair ({count}); got {len(names)}.")

    train, held = _split(count, holdout, seed)
    evaluate = held if len(held) else train
    evaluated_on = "held-out" if len(held) else "train"
    raw, target = raw.to(device), rgb.permute(0, 3, 1, 2).contiguous().to(device)
    train_raw, train_target = raw[train], target[train]
    train_valid = valid_mask(train_target, margin)
    eval_raw, eval_target = raw[evaluate], rgb[evaluate].numpy()
    eval_torch = target[evaluate]
    patch = patch_size if patch_size is not None else auto_patch_size(len(train), height, width, margin)
    batches = Batches(
        train_raw, train_target, train_valid, patch, margin, torch.Generator().manual_seed(seed)
    )
    candidates = candidates_of(variants, white_balance_first)
    order = {c: i for i, c in enumerate(candidates)}
    progress.note(
        f"{len(train)} training and {len(held)} held-out pair(s) of {height}x{width}, "
        f"{len(candidates)} candidate structure(s), tone curve {tone_curve}, "
        f"{'whole images' if patch is None else f'{patch}x{patch} crops'} per step"
    )

    def train_loss(pipeline) -> float:
        return selection_loss(pipeline, train_raw, train_target, train_valid)

    @torch.no_grad()
    def heldout_psnr(pipeline) -> float:
        inside = (slice(None), slice(None), slice(margin, height - margin), slice(margin, width - margin))
        squared = [(pipeline(eval_raw[part]).clamp(0, 1) - eval_torch[part])[inside].square().flatten(1).mean(1)
                   for part in chunks(*eval_raw.shape)]  # fmt: skip
        return psnr_db(float(torch.cat(squared).mean()))

    # 1. colour, shared by every candidate: fitted with bilinear demosaicing (cheap), every group
    # (the kernels learn what the candidate's sharpening and denoising would add or take away).
    first = min(candidates, key=lambda c: (not c.variant.startswith("bi"), c.variant != "bi_s_ga", order[c]))
    shared = start_pipeline(camera, first, tone_curve).to(device)
    optimise(
        shared, shared.active_groups(), batches, 2 * search_steps, lr, progress, f"colour ({first.label})"
    )
    colour = {g: v for g, v in shared.theta_dict().items() if g in COLOUR_GROUPS}
    progress.note(f"colour fitted on {first.label}: train loss {train_loss(shared):.3f} (8-bit steps)")

    # 2. search: every candidate scored at the shared colour, the contenders fit their own colour
    # groups, the finalists every group.
    table: dict[str, dict[str, object]] = {}
    fitted: dict[Candidate, ParametrizedPipeline] = {}

    def score(candidate: Candidate, stage: str, with_delta_e: bool = True) -> None:
        """Training loss (the ranking) and held-out figures; ΔE (slower) only for contenders on."""
        pipeline = fitted[candidate]
        if with_delta_e:
            psnr, delta_e = pooled(evaluate_pairs(pipeline, eval_raw, eval_target, margin)[0])
        else:
            psnr, delta_e = heldout_psnr(pipeline), None  # not computed (empty in variants.csv)
        loss = train_loss(pipeline)
        table[candidate.label] = {"variant": candidate.variant, "white_balance_first": candidate.white_balance_first,
                                  "stage": stage, "train_loss": loss, "heldout_psnr": psnr, "heldout_delta_e": delta_e}  # fmt: skip
        shown = f", ΔE {delta_e:.2f}" if with_delta_e else ""
        progress.note(
            f"{candidate.label} ({stage}): train loss {loss:.3f}, {evaluated_on} PSNR {psnr:.2f} dB{shown}"
        )

    def best_of(group: list[Candidate], count: int) -> list[Candidate]:
        return sorted(group, key=lambda c: (table[c.label]["train_loss"], order[c]))[:count]

    for candidate in candidates:
        fitted[candidate] = start_pipeline(camera, candidate, tone_curve, colour).to(device)
        score(candidate, "shared colour", with_delta_e=False)
    contenders = best_of(candidates, CONTENDERS)
    for index, candidate in enumerate(contenders if len(candidates) > 1 else []):
        optimise(fitted[candidate], COLOUR_GROUPS, batches, search_steps, lr, progress,
                 f"contender {index + 1}/{len(contenders)} ({candidate.label})")  # fmt: skip
        score(candidate, "colour")
    finalists = best_of(contenders, FINALISTS)
    for index, candidate in enumerate(finalists if len(finalists) > 1 else []):
        optimise(fitted[candidate], fitted[candidate].active_groups(), batches, 2 * search_steps, lr, progress,
                 f"finalist {index + 1}/{len(finalists)} ({candidate.label})")  # fmt: skip
        score(candidate, "all groups")
    best = best_of(finalists, 1)[0]
    runner_up = [c for c in finalists if c != best]
    others = (
        f"; runner-up {runner_up[0].label} at {table[runner_up[0].label]['train_loss']:.3f}"
        if runner_up
        else ""
    )
    progress.note(f"chose {best.label} (train loss {table[best.label]['train_loss']:.3f}{others}); "
                  "refining all θ groups")  # fmt: skip

    # 3. refinement.
    pipeline = fitted[best]
    optimise(pipeline, pipeline.active_groups(), batches, steps, lr, progress, f"refinement ({best.label})")
    # Rebuild around the fitted camera: a static pipeline or θ reset built from the exported
    # file's camera then shows the device's colours. θ overrides θ_stat, so the views are unchanged.
    theta = pipeline.theta_dict()
    fitted_camera = CameraParams(theta["black_level"], theta["white_balance"], theta["colour_matrix"],
                                 camera.pattern, name=f"calibrated {camera.name}")  # fmt: skip
    pipeline = ParametrizedPipeline(fitted_camera, theta=theta, variant=best.variant, tone_curve=tone_curve,
                                    white_balance_first=best.white_balance_first).to(device)  # fmt: skip
    fit_seconds = progress.elapsed()
    train_loss_final = train_loss(pipeline)
    errors, views = evaluate_pairs(pipeline, eval_raw, eval_target, margin, keep=3)
    initial_errors, _ = evaluate_pairs(
        start_pipeline(camera, best, tone_curve).to(device), eval_raw, eval_target, margin
    )
    psnr, delta_e = pooled(errors)
    initial_psnr, initial_delta_e = pooled(initial_errors)
    per_pair = {
        names[i]: {"psnr": e.psnr, "delta_e": e.delta_e, "initial_psnr": start.psnr,
                   "initial_delta_e": start.delta_e, "edge_psnr": psnr_db(e.edge_mse), "flat_psnr": psnr_db(e.flat_mse)}
        for i, e, start in zip(evaluate, errors, initial_errors)
    }  # fmt: skip
    step_cost = progress.step_seconds / max(progress.steps, 1)
    progress.note(
        f"{best.label} fitted: train loss {train_loss_final:.3f}, {evaluated_on} PSNR {psnr:.2f} dB "
        f"(camera metadata {initial_psnr:.2f} dB), ΔE {delta_e:.2f} (camera metadata {initial_delta_e:.2f}); "
        f"{progress.steps} steps of {1000 * step_cost:.0f} ms in {progress.elapsed():.1f} s"
    )
    timing = {"seconds": fit_seconds, "steps": progress.steps, "seconds_per_step": step_cost,
              "median_seconds_per_step": float(np.median(progress.durations)) if progress.durations else 0.0,
              "pixels_per_step": batches.pixels}  # fmt: skip
    examples = [(names[i], eval_target[k].astype(np.float64), views[k]) for k, i in enumerate(evaluate[:3])]
    return CalibrationResult(
        variant=best.variant,
        pipeline=pipeline,
        variants=table,
        psnr=psnr,
        delta_e=delta_e,
        initial_psnr=initial_psnr,
        initial_delta_e=initial_delta_e,
        train_loss=train_loss_final,
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
            "patch_size": patch,
            "tone_curve": tone_curve,
            "white_balance_first": white_balance_first,
            "candidates": [c.label for c in candidates],
        },
        pairs=per_pair,
        demosaic=demosaic_note(best.label, errors),
        timing=timing,
    )
