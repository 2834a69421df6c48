"""``mode=calibrate``: fit a data model to a device from paired raw and processed images.

With ``calibrate.pairs=<folder>`` the pairs are the user's (DNG raws and the device's JPEG/PNG/TIFF
of each); without, a demonstration: the dataset's raw through a hidden, perturbed data model. The
fitted data model is written as ``calibrate/pipeline.json``, usable wherever a pipeline is named:
``calibrated:<that file>``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from raw2logit.modes.common import Context, device, finish_run, log, mode_run
from raw2logit.names import CALIBRATED_PREFIX, STATIC_PIPELINE_NAMES

FOLDER = "calibrate"


def uses_dataset(cfg) -> bool:
    """User pairs need no dataset; the demonstration makes its pairs from the dataset."""
    return not cfg.calibrate.pairs


def run(ctx: Context) -> dict:
    import torch
    from omegaconf import OmegaConf

    from raw2logit.controls.calibration import fit, read_pairs, simulate_pairs
    from raw2logit.isp.specs import parse_specs

    cfg, options = ctx.cfg, ctx.cfg.calibrate
    if options.pairs:
        pairs = read_pairs(options.pairs, cfg.dataset.get("on_bad_file", "raise"))
        raw, rgb, camera, names = pairs.raw, pairs.rgb, pairs.camera, pairs.names
        source = f"{len(names)} pairs from {options.pairs}"
    else:  # a demonstration: the dataset's raw through a hidden, perturbed data model
        hidden = OmegaConf.to_container(options.hidden, resolve=True)
        count = min(int(options.num_pairs), len(ctx.dataset))
        raw = ctx.dataset.normalised(np.arange(count)).numpy()
        camera = ctx.dataset.camera
        overrides = {"black_level": (np.asarray(camera.black_level) + hidden["black_level_offset"]).tolist(),
                     "white_balance": (np.asarray(camera.white_balance) * np.asarray(hidden["white_balance_scale"])).tolist()}  # fmt: skip
        rgb = simulate_pairs(raw, camera, hidden["variant"], overrides, options.tone_curve, quantise_bits=8)
        names = ctx.dataset.names[:count]
        source = f"{count} simulated pairs (hidden data model {hidden['variant']}, 8-bit)"
    variants = STATIC_PIPELINE_NAMES if options.variants == "all" else parse_specs(options.variants)
    log(f"calibrating on {source}; trying {len(variants)} variant(s)")
    with mode_run(ctx, f"calibrate {Path(str(options.pairs or 'simulated')).name}") as run_id:
        result = fit(raw, rgb, camera, variants=list(variants), tone_curve=options.tone_curve, steps=options.steps,
                     lr=options.lr, holdout=options.holdout, seed=cfg.seed, log=log, patch_size=options.patch_size,
                     names=list(names), device=device(cfg),
                     white_balance_first=options.get("white_balance_first"))  # fmt: skip
        paths = result.write(ctx.run_dir / FOLDER)
        summary = {"mode": "calibrate", "source": source, "variant": result.variant,
                   "white_balance_first": result.pipeline.white_balance_first, "psnr": result.psnr,
                   "delta_e": result.delta_e, "initial_psnr": result.initial_psnr,
                   "initial_delta_e": result.initial_delta_e, "demosaic": result.demosaic.get("note", ""),
                   "pipeline": str(paths["pipeline"]),
                   "use": f"synthesis.test=[all_static...,{CALIBRATED_PREFIX}{paths['pipeline']}]"}  # fmt: skip
        log(f"\ncalibrated data model: {result.label}, held-out PSNR {result.psnr:.1f} dB, mean ΔE2000 "
            f"{result.delta_e:.2f}\n  use it as a pipeline: {CALIBRATED_PREFIX}{paths['pipeline']}")  # fmt: skip
        ctx.tracker.log_metrics(run_id, {"psnr": result.psnr, "delta_e": result.delta_e})
        sample = torch.as_tensor(np.asarray(raw[:3]), dtype=torch.float32)
        finish_run(ctx, run_id, summary, ctx.run_dir / FOLDER, result.pipeline, sample)
    return summary
