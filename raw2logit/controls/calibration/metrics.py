"""How well a data model reproduces a device: PSNR and CIEDE2000 ΔE of sRGB-encoded images."""

from __future__ import annotations

import math

import numpy as np
import torch

from raw2logit.isp.parametrized import ParametrizedPipeline


def interior(image: np.ndarray, margin: int) -> np.ndarray:
    """(H, W, 3) without a border of ``margin`` pixels."""
    return image[margin : image.shape[0] - margin, margin : image.shape[1] - margin]


@torch.no_grad()
def view_of(pipeline: ParametrizedPipeline, raw: torch.Tensor) -> np.ndarray:
    """(H, W, 3) float64 view of one (H, W) mosaic."""
    return pipeline(raw[None])[0].clamp(0, 1).permute(1, 2, 0).double().cpu().numpy()


def image_errors(view: np.ndarray, target: np.ndarray, margin: int) -> tuple[float, float]:
    """(mean squared error, mean ΔE CIEDE2000) of one sRGB image pair (H, W, 3), border left out."""
    from skimage.color import deltaE_ciede2000, rgb2lab

    view = interior(np.asarray(view, np.float64), margin)
    target = interior(np.asarray(target, np.float64), margin)
    delta_e = deltaE_ciede2000(rgb2lab(target), rgb2lab(view))
    return float(np.mean((view - target) ** 2)), float(np.mean(delta_e))


def psnr_db(mse: float) -> float:
    return 10 * math.log10(1.0 / mse) if mse > 0 else math.inf


def image_metrics(views, targets, margin: int = 0) -> tuple[float, float]:
    """PSNR (dB, peak 1, of the squared error pooled over all images) and mean ΔE (CIEDE2000).

    Args:
        views, targets: (N, H, W, 3) sRGB-encoded images in [0, 1].
        margin: border width (pixels) left out.
    """
    errors = [image_errors(view, target, margin) for view, target in zip(views, targets)]
    return psnr_db(float(np.mean([e[0] for e in errors]))), float(np.mean([e[1] for e in errors]))


def evaluate_pipeline(pipeline, raw: torch.Tensor, targets: np.ndarray, margin: int, keep: int = 0):
    """``image_metrics`` of the pipeline's views, one image at a time (bounded memory for large
    raws); also returns the first ``keep`` views."""
    errors, kept = [], []
    for index, target in enumerate(targets):
        view = view_of(pipeline, raw[index])
        errors.append(image_errors(view, target, margin))
        if index < keep:
            kept.append(view)
    return psnr_db(float(np.mean([e[0] for e in errors]))), float(np.mean([e[1] for e in errors])), kept
