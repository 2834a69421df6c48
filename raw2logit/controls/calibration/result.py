"""The result of a calibration: the fitted data model, its figures, and the files it is written to."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from raw2logit.data.files import write_json_atomic
from raw2logit.isp.camera import CameraParams
from raw2logit.isp.parametrized import ParametrizedPipeline

# The chosen structure "does not follow the device's demosaic" when its error on the strongest-edge
# tenth of the pixels (metrics.EDGE_SHARE) is more than EDGE_GAP_DB above its error elsewhere and the
# fit is below FOLLOWS_PSNR: colour and tone fit, the remaining error sits where demosaics differ.
EDGE_GAP_DB = 6.0
FOLLOWS_PSNR = 40.0


def demosaic_note(label: str, errors) -> dict[str, object]:
    """Where the fitted model's error lies (edges or flat areas), and a sentence saying whether the
    chosen structure follows the device's demosaic.

    Args:
        label: the chosen structure (variant, and ``+wb_first``).
        errors: the evaluated pairs' ``metrics.PairErrors``.
    """
    from raw2logit.controls.calibration.metrics import EDGE_SHARE, psnr_db

    edge = float(np.mean([e.edge_mse for e in errors]))
    flat = float(np.mean([e.flat_mse for e in errors]))
    share = EDGE_SHARE * edge / max(EDGE_SHARE * edge + (1 - EDGE_SHARE) * flat, 1e-30)
    psnr, edge_psnr, flat_psnr = (
        psnr_db(float(np.mean([e.mse for e in errors]))),
        psnr_db(edge),
        psnr_db(flat),
    )
    follows = psnr >= FOLLOWS_PSNR or flat_psnr - edge_psnr <= EDGE_GAP_DB
    note = (
        f"{label} follows the device: {psnr:.1f} dB, edges {edge_psnr:.1f} dB, elsewhere {flat_psnr:.1f} dB."
        if follows
        else f"{label} follows the device's colour and tone ({flat_psnr:.1f} dB away from edges) but not its "
        f"demosaic, which none of the twelve variants reproduces: the {EDGE_SHARE:.0%} of pixels with the strongest "
        f"edges are at {edge_psnr:.1f} dB and hold {share:.0%} of the squared error."
    )
    return {"follows_device": follows, "edge_psnr": edge_psnr, "flat_psnr": flat_psnr,
            "edge_share_of_error": share, "note": note}  # fmt: skip


def effective_colour_matrix(pipeline: ParametrizedPipeline) -> np.ndarray:
    """``M @ diag(wb)``: the white balance and colour matrix as one (3, 3) map, which the data determine."""
    matrix = pipeline.colour_matrix.detach().double().cpu().numpy()
    gains = pipeline.white_balance.detach().double().cpu().numpy()
    return matrix * gains[None, :]


@dataclass
class CalibrationResult:
    """A fitted device data model and how well it reproduces the device.

    Attributes:
        variant: the chosen static variant, e.g. ``"ma_u_me"``.
        pipeline: the fitted ``ParametrizedPipeline`` (its camera holds the fitted black level,
            white balance and colour matrix; θ holds every group).
        variants: per candidate structure (variant, and ``+wb_first`` for the white balance before
            demosaicing), after the search: ``variant``, ``white_balance_first``, ``stage`` (``colour``:
            colour groups fitted; ``all groups``: a finalist), ``train_loss`` (8-bit steps),
            ``heldout_psnr`` (dB), ``heldout_delta_e`` (CIEDE2000).
        psnr, delta_e: the final model's held-out PSNR (dB) and mean ΔE.
        initial_psnr, initial_delta_e: the same for the chosen variant at the initial camera parameters.
        train_loss: the final model's loss on the training pairs.
        train_names, heldout_names: the pairs used for fitting and for the metrics (if nothing is
            held out, the metrics are computed on the training pairs; ``evaluated_on`` says which).
        examples: up to three (name, target, fitted) evaluation images (H, W, 3) for the figure.
        initial_camera: the camera parameters the fit started from.
        settings: the fit's arguments (steps, lr, seed, ...).
        pairs: per evaluated pair: ``psnr``, ``delta_e``, the same at the camera's metadata
            (``initial_psnr``, ``initial_delta_e``), and ``edge_psnr``/``flat_psnr``.
        demosaic: where the error lies and whether the demosaic follows the device (``demosaic_note``).
        timing: ``seconds`` of fitting, ``steps``, ``seconds_per_step``, ``pixels_per_step``.
    """

    variant: str
    pipeline: ParametrizedPipeline
    variants: dict[str, dict[str, float]]
    psnr: float
    delta_e: float
    initial_psnr: float
    initial_delta_e: float
    train_loss: float
    train_names: list[str]
    heldout_names: list[str]
    evaluated_on: str
    examples: list[tuple[str, np.ndarray, np.ndarray]]
    initial_camera: CameraParams
    settings: dict[str, object]
    pairs: dict[str, dict[str, float]] = field(default_factory=dict)
    demosaic: dict[str, object] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The chosen structure: the variant, with ``+wb_first`` when the white balance comes first."""
        return f"{self.variant}+wb_first" if self.pipeline.white_balance_first else self.variant

    @property
    def camera(self) -> CameraParams:
        """The fitted camera parameters (black level, white balance, colour matrix)."""
        return self.pipeline.camera

    def summary(self) -> dict[str, object]:
        return {
            "variant": self.variant,
            "tone_curve": self.pipeline.tone_curve,
            "white_balance_first": self.pipeline.white_balance_first,
            "demosaic": self.demosaic.get("note", ""),
            "metrics": {
                "psnr": self.psnr,
                "delta_e": self.delta_e,
                "initial_psnr": self.initial_psnr,
                "initial_delta_e": self.initial_delta_e,
                "train_loss": self.train_loss,
                "evaluated_on": self.evaluated_on,
            },
            "pairs": self.pairs,
            "demosaic_diagnosis": self.demosaic,
            "variants": self.variants,
            "timing": self.timing,
            "theta": self.pipeline.theta_dict(),
            "effective_colour_matrix": effective_colour_matrix(self.pipeline).tolist(),
            "camera": self.pipeline.camera.to_dict(),
            "initial_camera": self.initial_camera.to_dict(),
            "train_pairs": self.train_names,
            "heldout_pairs": self.heldout_names,
            "settings": self.settings,
        }

    def write(self, folder: str | Path) -> dict[str, Path]:
        """Write ``fit.json``, ``variants.csv``, ``residuals.png`` and ``pipeline.json`` into ``folder``.

        ``pipeline.json`` is ``ParametrizedPipeline.save_theta_json``'s file: pass it as
        ``calibrated:<path>`` to ``raw2logit.isp.specs.build_data_model``.

        Returns:
            artifact name -> path.
        """
        directory = Path(folder)
        directory.mkdir(parents=True, exist_ok=True)
        paths = {
            "fit": directory / "fit.json",
            "variants": directory / "variants.csv",
            "residuals": directory / "residuals.png",
            "pipeline": directory / "pipeline.json",
        }
        write_json_atomic(paths["fit"], _json_ready(self.summary()))
        with paths["variants"].open("w", newline="") as stream:
            writer = csv.writer(stream)
            columns = [
                "variant",
                "white_balance_first",
                "stage",
                "train_loss",
                "heldout_psnr",
                "heldout_delta_e",
            ]
            writer.writerow(["candidate", *columns, "chosen"])
            for name, row in self.variants.items():
                # ΔE is computed for the contenders only (a candidate ranked out at the shared colour has none)
                cells = ["not scored" if row.get(column) is None else row[column] for column in columns]
                writer.writerow([name, *cells, int(name == self.label)])
        from raw2logit.report.figures import residual_figure

        residual_figure(self.examples, f"{self.label}, {self.evaluated_on} pairs", paths["residuals"])
        self.pipeline.save_theta_json(paths["pipeline"])
        return paths


def _json_ready(value):
    """Non-finite floats as strings (strict JSON has no Infinity/NaN)."""
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
