"""The data model stage by stage (the paper's Fig. 1): raw -> black level -> demosaic -> ... -> gamma."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from raw2logit.errors import InputError
from raw2logit.isp.parametrized import ParametrizedPipeline, static_theta
from raw2logit.isp.static import StaticPipeline
from raw2logit.isp.steps import STAGE_NAMES
from raw2logit.report.figures import interior, save_png

# Linear stages of real sensors are dark (a few percent of full scale) and, after white balance
# and colour correction, can exceed 1; each is shown scaled to its own bright end.
DISPLAY_PERCENTILE = 99.0
# The tone-mapped output is the view the task model sees: shown as it is.
SHOWN_AS_IS = ("gamma",)
DISPLAY_NOTE = (
    f"Display only: each linear stage is divided by its {DISPLAY_PERCENTILE:g}th percentile over the images "
    "shown (border pixels left out), then clipped to [0, 1]; gamma is shown as is, clipped to [0, 1]; raw "
    "and black_level are greyscale mosaics."
)
# θ entries closer than this to θ_stat count as unchanged (θ is stored in float64).
THETA_TOLERANCE = 1e-9


def describe_theta(pipeline: torch.nn.Module) -> str:
    """Which data model and which θ a figure of ``pipeline`` shows, as one phrase: a static pipeline by
    name, a parametrized one as at θ_stat or with the θ groups that differ from it (largest change)."""
    if isinstance(pipeline, StaticPipeline):
        return f"static data model {pipeline.name} (θ_stat of camera {pipeline.camera.name})"
    if not isinstance(pipeline, ParametrizedPipeline):
        return f"{type(pipeline).__name__} data model"
    described = f"parametrized data model {pipeline.variant} ({pipeline.tone_curve} tone curve, camera {pipeline.camera.name})"
    reference = static_theta(pipeline.camera)
    changes = {}
    for group in pipeline.active_groups():
        value = getattr(pipeline, group).detach().cpu().double().reshape(-1).numpy()
        change = float(np.max(np.abs(value - reference[group].reshape(-1).numpy())))
        if change > THETA_TOLERANCE:
            changes[group] = change
    if not changes:
        return f"{described} at θ_stat"
    listed = ", ".join(f"{group} (max |Δ| {change:.3g})" for group, change in changes.items())
    return f"{described}, θ differs from θ_stat in {listed}"


def _as_images(stage: torch.Tensor) -> np.ndarray:
    """(B, H, W), (B, 1, H, W) or (B, 3, H, W) tensor -> (B, H, W) or (B, H, W, 3) float64 array."""
    array = stage.detach().to("cpu", torch.float64).numpy()
    if array.ndim == 4 and array.shape[1] == 1:
        array = array[:, 0]
    elif array.ndim == 4:
        array = array.transpose(0, 2, 3, 1)
    return np.nan_to_num(array, nan=0.0, posinf=1.0, neginf=0.0)


def display_stage(name: str, images: np.ndarray) -> np.ndarray:
    """One stage's images (all rows of its column together, (B, H, W) or (B, H, W, 3)) scaled to [0, 1]
    for display; the scale is taken from the interior (``figures.interior``), so border artifacts of the
    filters do not darken the whole column."""
    if name in SHOWN_AS_IS:
        return np.clip(images, 0.0, 1.0)
    inside = interior(images)
    if name in STAGE_NAMES:
        bright = float(np.percentile(np.clip(inside, 0.0, None), DISPLAY_PERCENTILE))
        return np.clip(images / bright, 0.0, 1.0) if bright > 0 else np.clip(images, 0.0, 1.0)
    # Stages outside the data model proper (e.g. ``normalised``, a standardised view) are not
    # in [0, 1] at all: min-max over the column's interior.
    low, high = float(inside.min()), float(inside.max())
    return np.clip((images - low) / (high - low), 0.0, 1.0) if high > low else np.zeros_like(images)


def draw_stages(pipeline: torch.nn.Module, raw: torch.Tensor, names: Sequence[str] | None = None,
                max_images: int = 3, theta: str | None = None) -> Figure:  # fmt: skip
    """A grid of the data model's stages: one row per image, one column per stage; the title says which
    data model and θ it shows (``theta``, default ``describe_theta(pipeline)``).

    Args and errors as ``save_stage_figure``.
    """
    if not hasattr(pipeline, "forward_stages"):
        raise InputError(f"{type(pipeline).__name__} has no forward_stages(); expected a data model.")
    was_training = pipeline.training
    # eval: a pipeline ending in BatchNorm must not update its running statistics for a figure.
    pipeline.eval()
    try:
        with torch.no_grad():
            stages = pipeline.forward_stages(raw[: max(1, int(max_images))])
    finally:
        pipeline.train(was_training)
    if names is None:
        names = [n for n in STAGE_NAMES if n in stages] + [n for n in stages if n not in STAGE_NAMES]
    missing = [n for n in names if n not in stages]
    if missing:
        raise InputError(
            f"Stage(s) {', '.join(missing)} not produced by {type(pipeline).__name__}; "
            f"it returns {', '.join(stages)}."
        )
    columns = {name: display_stage(name, _as_images(stages[name])) for name in names}
    rows = next(iter(columns.values())).shape[0]
    height, width = columns[names[0]].shape[1:3]
    panel = 2.0
    fig, axes = plt.subplots(rows, len(names), figsize=(panel * len(names), panel * rows * height / width + 0.6),
                             squeeze=False, layout="constrained")  # fmt: skip
    for col, name in enumerate(names):
        for row in range(rows):
            ax = axes[row][col]
            image = columns[name][row]
            ax.imshow(
                image, cmap="gray" if image.ndim == 2 else None, vmin=0.0, vmax=1.0, interpolation="nearest"
            )
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize=9)
    for row in range(rows):
        axes[row][0].set_ylabel(f"image {row}", fontsize=8)
    shown = theta if theta is not None else describe_theta(pipeline)
    fig.suptitle(f"Data model stage by stage (paper Fig. 1): {shown}.\n{DISPLAY_NOTE}", fontsize=9, wrap=True)
    return fig


def save_stage_figure(pipeline: torch.nn.Module, raw: torch.Tensor, path: str | Path,
                      names: Sequence[str] | None = None, max_images: int = 3, theta: str | None = None) -> Path:  # fmt: skip
    """Save a grid of the data model's stages: one row per image, one column per stage.

    Args:
        pipeline: a data model with ``forward_stages`` (``StaticPipeline``, ``ParametrizedPipeline``).
        raw: raw images of shape (B, H, W), float in [0, 1]; the first ``max_images`` are shown.
        path: the PNG to write (its folder is created).
        names: the stages to show, in order; default: every stage the pipeline returns, in
            ``STAGE_NAMES`` order, then any others (e.g. ``normalised``).
        max_images: at most this many rows.
        theta: which θ the figure shows, for its title (e.g. "adversarial θ~, λ=0.001"); default:
            ``describe_theta(pipeline)``.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        InputError: the pipeline has no ``forward_stages``, or ``names`` holds a stage it does not return.
    """
    fig = draw_stages(pipeline, raw, names, max_images, theta)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_png(fig, path, dpi=110, bbox_inches="tight")
