"""The data model stage by stage (the paper's Fig. 1): raw -> black level -> demosaic -> ... -> gamma."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from raw2logit.errors import InputError
from raw2logit.isp.static import STAGE_NAMES

# Linear stages of real sensors are dark (a few percent of full scale) and, after white balance
# and colour correction, can exceed 1; each is shown scaled to its own bright end.
DISPLAY_PERCENTILE = 99.0
# The tone-mapped output is the view the task model sees: shown as it is.
SHOWN_AS_IS = ("gamma",)
TITLE = (
    "Data model stage by stage (as the paper's Fig. 1). Display only: each linear stage is divided by "
    f"its {DISPLAY_PERCENTILE:g}th percentile over the images shown, then clipped to [0, 1]; "
    "gamma is shown as is, clipped to [0, 1]; raw and black_level are greyscale mosaics."
)


def _as_images(stage: torch.Tensor) -> np.ndarray:
    """(B, H, W), (B, 1, H, W) or (B, 3, H, W) tensor -> (B, H, W) or (B, H, W, 3) float64 array."""
    array = stage.detach().to("cpu", torch.float64).numpy()
    if array.ndim == 4 and array.shape[1] == 1:
        array = array[:, 0]
    elif array.ndim == 4:
        array = array.transpose(0, 2, 3, 1)
    return np.nan_to_num(array, nan=0.0, posinf=1.0, neginf=0.0)


def _display(name: str, images: np.ndarray) -> np.ndarray:
    """Scale one stage's images (all rows of its column together) to [0, 1] for display."""
    if name in SHOWN_AS_IS:
        return np.clip(images, 0.0, 1.0)
    if name in STAGE_NAMES:
        bright = float(np.percentile(np.clip(images, 0.0, None), DISPLAY_PERCENTILE))
        return np.clip(images / bright, 0.0, 1.0) if bright > 0 else np.clip(images, 0.0, 1.0)
    # Stages outside the data model proper (e.g. ``normalized``, a standardised view) are not
    # in [0, 1] at all: min-max over the column.
    low, high = float(images.min()), float(images.max())
    return (images - low) / (high - low) if high > low else np.zeros_like(images)


def save_stage_figure(
    pipeline: torch.nn.Module,
    raw: torch.Tensor,
    path: str | Path,
    names: Sequence[str] | None = None,
    max_images: int = 3,
) -> Path:
    """Save a grid of the data model's stages: one row per image, one column per stage.

    Args:
        pipeline: a data model with ``forward_stages`` (``StaticPipeline``, ``ParametrizedPipeline``).
        raw: raw images of shape (B, H, W), float in [0, 1]; the first ``max_images`` are shown.
        path: the PNG to write (its folder is created).
        names: the stages to show, in order; default: every stage the pipeline returns, in
            ``STAGE_NAMES`` order, then any others (e.g. ``normalized``).
        max_images: at most this many rows.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        InputError: the pipeline has no ``forward_stages``, or ``names`` holds a stage it does not return.
    """
    if not hasattr(pipeline, "forward_stages"):
        raise InputError(f"{type(pipeline).__name__} has no forward_stages(); expected a data model.")
    path = Path(path)
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
    columns = {name: _display(name, _as_images(stages[name])) for name in names}
    rows = next(iter(columns.values())).shape[0]
    height, width = columns[names[0]].shape[1:3]
    panel = 2.0
    fig, axes = plt.subplots(
        rows,
        len(names),
        figsize=(panel * len(names), panel * rows * height / width + 0.9),
        squeeze=False,
    )
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
    fig.suptitle(TITLE, fontsize=7, wrap=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
