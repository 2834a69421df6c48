"""The calibration section of report.html: the fit (held-out PSNR, ΔE), camera parameters before and after,
the fitted θ, the pipeline variants tried, and the residual images."""

from __future__ import annotations

from collections.abc import Mapping

from raw2logit.modes.calibrate import FOLDER
from raw2logit.report.artifacts import Artifacts
from raw2logit.report.formatting import array_text
from raw2logit.report.tables import Table, array_cell, flatten, frame_table, heading, kv_table, theta_table

# calibration names its section by the concept; the mode and its folder are "calibrate".
ANCHOR, TITLE, LABEL = "calibration", "Calibration", "Calibration"
# fit.json's parts shown in their own tables rather than in the fit's key/value table.
SHOWN_APART = {"variant", "tone_curve", "metrics", "train_pairs", "heldout_pairs", "theta", "camera",
               "initial_camera", "variants", "settings", "effective_colour_matrix"}  # fmt: skip


def fit_table(fit: Mapping) -> Table:
    """Variant, tone curve, metrics, pair counts and any other scalar of fit.json (``calibration-fit``)."""
    rows = [(key, fit[key]) for key in ("variant", "tone_curve") if key in fit]
    metrics = fit.get("metrics")
    if isinstance(metrics, Mapping):
        rows += [(key, value) for key, value in metrics.items() if not isinstance(value, (Mapping, list))]
    rows += [
        (f"{key} (count)", len(fit[key]))
        for key in ("train_pairs", "heldout_pairs")
        if isinstance(fit.get(key), list)
    ]
    rows += [(k, v) for k, v in fit.items() if k not in SHOWN_APART and not isinstance(v, (Mapping, list))]
    return kv_table(rows, "calibration-fit")


def camera_table(camera: object, initial: object) -> Table | None:
    """Each camera parameter, initial and fitted (``calibration-camera``); None without a fitted camera."""
    if not isinstance(camera, Mapping):
        return None
    initial = initial if isinstance(initial, Mapping) else {}
    rows = [[heading(key, row=True),
             array_cell(initial.get(key), data_table="calibration-camera", data_row=key, data_col="initial"),
             array_cell(camera.get(key), data_table="calibration-camera", data_row=key, data_col="fitted")]
            for key in camera if key != "name"]  # fmt: skip
    return Table(
        "calibration-camera", rows, [heading("parameter", row=True), heading("initial"), heading("fitted")]
    )


def section_context(artifacts: Artifacts, summary: Mapping) -> dict | None:
    """What ``report.html.j2`` shows of ``calibrate/``; None if there is nothing."""
    context = {
        "fit": None,
        "camera": None,
        "theta": None,
        "colour_matrix": None,
        "settings": None,
        "variants": None,
    }
    fit = artifacts.json(f"{FOLDER}/fit.json")
    if fit is not None:
        context["fit"] = fit_table(fit)
        context["camera"] = camera_table(fit.get("camera"), fit.get("initial_camera"))
        context["theta"] = theta_table(None, fit.get("theta"), "calibration-theta")
        if "effective_colour_matrix" in fit:
            context["colour_matrix"] = array_text(fit["effective_colour_matrix"])
        if isinstance(fit.get("settings"), Mapping):
            context["settings"] = kv_table(flatten(fit["settings"]), "calibration-settings")
    variants = artifacts.csv(f"{FOLDER}/variants.csv")
    if variants is not None:
        context["variants"] = frame_table(variants, "calibration-variants")
    context["residuals"] = artifacts.image(f"{FOLDER}/residuals.png")
    if not any(context[key] for key in ("fit", "variants", "residuals")):
        return None
    return context
