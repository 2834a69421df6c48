"""How well a data model reproduces a device: PSNR and CIEDE2000 ΔE of sRGB-encoded images.

Besides the pooled figures, each evaluation says where the error lies: on the ``EDGE_SHARE`` of
pixels with the strongest edges in the device's image, or elsewhere. A data model whose colour and
tone are right but whose demosaic differs from the device's is off mainly at edges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from raw2logit.isp.parametrized import ParametrizedPipeline

EDGE_SHARE = 0.1  # the strongest-edge tenth of the pixels counts as "edges"


@dataclass
class PairErrors:
    """One pair's errors (border left out): squared error, ΔE, and the squared error on edges."""

    mse: float
    delta_e: float
    edge_mse: float
    flat_mse: float

    @property
    def psnr(self) -> float:
        return psnr_db(self.mse)


def interior(image: np.ndarray, margin: int) -> np.ndarray:
    """(H, W, 3) without a border of ``margin`` pixels."""
    return image[margin : image.shape[0] - margin, margin : image.shape[1] - margin]


@torch.no_grad()
def view_of(pipeline: ParametrizedPipeline, raw: torch.Tensor) -> np.ndarray:
    """(H, W, 3) float64 view of one (H, W) mosaic."""
    return pipeline(raw[None])[0].clamp(0, 1).permute(1, 2, 0).double().cpu().numpy()


def edge_mask(target: np.ndarray, share: float = EDGE_SHARE) -> np.ndarray:
    """(H, W) bool: the ``share`` of pixels with the largest luma gradient (central differences)."""
    luma = target @ np.array([0.299, 0.587, 0.114])
    rows, cols = np.gradient(luma)
    strength = np.hypot(rows, cols)
    return strength >= np.quantile(strength, 1 - share)


def pair_errors(view: np.ndarray, target: np.ndarray, margin: int) -> PairErrors:
    """The errors of one sRGB image pair (H, W, 3) in [0, 1], border left out."""
    from skimage.color import deltaE_ciede2000, rgb2lab

    view = interior(np.asarray(view, np.float64), margin)
    target = interior(np.asarray(target, np.float64), margin)
    squared = ((view - target) ** 2).mean(axis=-1)
    edges = edge_mask(target)
    delta_e = deltaE_ciede2000(rgb2lab(target), rgb2lab(view))
    return PairErrors(float(squared.mean()), float(np.mean(delta_e)), float(squared[edges].mean()),
                      float(squared[~edges].mean()))  # fmt: skip


def image_errors(view: np.ndarray, target: np.ndarray, margin: int) -> tuple[float, float]:
    """(mean squared error, mean ΔE CIEDE2000) of one sRGB image pair (H, W, 3), border left out."""
    errors = pair_errors(view, target, margin)
    return errors.mse, errors.delta_e


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


def evaluate_pairs(pipeline, raw: torch.Tensor, targets: np.ndarray, margin: int, keep: int = 0):
    """Every pair's ``PairErrors`` for the pipeline's views, one image at a time (bounded memory for
    large raws); also returns the first ``keep`` views (H, W, 3)."""
    errors, kept = [], []
    for index, target in enumerate(targets):
        view = view_of(pipeline, raw[index])
        errors.append(pair_errors(view, target, margin))
        if index < keep:
            kept.append(view)
    return errors, kept


def pooled(errors: list[PairErrors]) -> tuple[float, float]:
    """(PSNR of the pooled squared error, mean ΔE) over pairs."""
    return psnr_db(float(np.mean([e.mse for e in errors]))), float(np.mean([e.delta_e for e in errors]))


def evaluate_pipeline(pipeline, raw: torch.Tensor, targets: np.ndarray, margin: int, keep: int = 0):
    """``image_metrics`` of the pipeline's views (PSNR, ΔE), and the first ``keep`` views."""
    errors, kept = evaluate_pairs(pipeline, raw, targets, margin, keep)
    return (*pooled(errors), kept)
