"""The forensics section of report.html: the adversarial search (Eq. 9) with its curves and θ before and
after; for a sweep, the forensic signature (sensitivity ranking, metric and ℓ2 against λ, limitations of use)."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from raw2logit.modes.forensics import FOLDER
from raw2logit.report.artifacts import Artifacts
from raw2logit.report.charts import Chart, chart
from raw2logit.report.figures import draw_over_epochs, draw_signature
from raw2logit.report.formatting import fmt, is_number
from raw2logit.report.tables import (
    Cell,
    Table,
    array_cell,
    frame_table,
    heading,
    json_view,
    kv_table,
    number_cell,
    theta_table,
)

ANCHOR, TITLE, LABEL = "forensics", "Drift forensics", "Forensics"
LIMIT_ARRAYS = ("theta_stat", "safe_min", "safe_max")
LIMIT_NUMBERS = ("largest_safe_change", "smallest_unsafe_change", "worst_metric", "clean_metric")


def result_table(result: Mapping) -> Table:
    """The search's settings and outcome (``data-table="forensics"``, one ``data-key`` per row)."""
    before, after = result.get("metric_before"), result.get("metric_after")
    metric = result.get("metric", "metric")
    target = result.get("target")
    if isinstance(result.get("groups"), list) and result["groups"] != [target]:
        target = f"{target} ({', '.join(map(str, result['groups']))})"
    rows = [
        ("λ (weight of ‖V − Ṽ‖²)", result.get("lambda"), "lambda"),
        ("target θ group(s)", target, "target"),
        ("regulariser", result.get("regulariser"), "regulariser"),
        ("metric", metric, "metric"),
        (f"{metric} before (θ_stat)", before, "metric_before"),
        (f"{metric} after (θ~)", after, "metric_after"),
        (
            f"{metric} change",
            after - before if is_number(before) and is_number(after) else None,
            "metric_change",
        ),
        ("ℓ2 = ‖V − Ṽ‖², held-out mean per image", result.get("l2"), "l2"),
        ("ℓ2 per pixel value", result.get("l2_per_pixel"), "l2_per_pixel"),
        ("epochs", result.get("epochs"), "epochs"),
        ("plausible projection", result.get("plausible_projection"), "plausible_projection"),
    ]
    rows = [row for row in rows if row[1] is not None]
    return kv_table([(label, value) for label, value, _ in rows], "forensics", [key for *_, key in rows])


def history_charts(history: object, metric: str) -> list[Chart]:
    """The held-out metric, ℓ2 and loss after each epoch of the search, one chart each."""
    if not (isinstance(history, list) and history and all(isinstance(h, Mapping) for h in history)):
        return []
    frame = pd.DataFrame(history)
    epochs = frame["epoch"] if "epoch" in frame else pd.Series(range(1, len(frame) + 1))
    charts = []
    for column, quantity in (("metric", f"held-out {metric}"), ("l2", "ℓ2 = ‖V − Ṽ‖²"), ("loss", "loss")):
        if column in frame:
            fig = draw_over_epochs(epochs, pd.to_numeric(frame[column], errors="coerce"), quantity)
            charts.append(chart(fig, f"forensics-{column}", f"{quantity} after each epoch of the search"))
    return charts


def signature_context(artifacts: Artifacts, signature: object) -> dict:
    """``assemble_signature``'s document: sensitivity ranking, curves over λ (table and the paper's Fig. 6a,
    the same figure as signature.png), limitations of use; any other JSON as generic tables."""
    empty = {
        "blocks": None,
        "sensitivity": None,
        "curves": None,
        "chart": None,
        "limits": None,
        "tolerance": None,
    }
    if not isinstance(signature, Mapping) or not isinstance(signature.get("targets"), Mapping):
        return {**empty, "blocks": json_view(signature, "signature")}
    metric = str(signature.get("metric", "metric"))
    context = {**empty, "tolerance": fmt(signature.get("tolerance"))}
    sensitivity = signature.get("sensitivity") or {}
    ranking = signature.get("ranking") or sorted(sensitivity, key=lambda t: -sensitivity[t])
    if ranking:
        rows = [[Cell(str(rank), {"class": "num"}), heading(target, row=True),
                 number_cell(sensitivity.get(target), data_table="signature-sensitivity", data_row=target)]
                for rank, target in enumerate(ranking, start=1)]  # fmt: skip
        context["sensitivity"] = Table("signature-sensitivity", rows,
                                       [heading("rank"), heading("θ group", row=True), heading("drop per unit ℓ2")])  # fmt: skip
    targets = {t: [r for r in runs if isinstance(r, Mapping)] for t, runs in signature["targets"].items()
               if isinstance(runs, list)}  # fmt: skip
    records = [{"target": target, **run} for target, runs in targets.items() for run in runs]
    if records:
        frame = pd.DataFrame(records)
        frame.index = [f"{r['target']} λ={fmt(r.get('lambda'), 4)}" for r in records]
        context["curves"] = frame_table(frame.drop(columns="target"), "signature-curves", "run")
        fig = artifacts.guarded("forensics/signature.json (figure)", lambda: draw_signature(targets, metric))
        if fig is not None:
            context["chart"] = chart(fig, "forensics-signature",
                                     f"{metric} after the search against λ and against ℓ2, per θ group (paper Fig. 6a)",
                                     f"{FOLDER}/signature.png")  # fmt: skip
            artifacts.mark_shown(f"{FOLDER}/signature.png")
    limits = signature.get("limitations_of_use")
    if isinstance(limits, Mapping) and limits:
        rows = [[heading(target, row=True), *(array_cell(limit.get(key), data_table="signature-limits", data_row=target, data_col=key)
                                                 for key in LIMIT_ARRAYS),
                 *(number_cell(limit.get(key), data_table="signature-limits", data_row=target, data_col=key)
                   for key in LIMIT_NUMBERS)]
                for target, limit in limits.items() if isinstance(limit, Mapping)]  # fmt: skip
        titles = ["θ_stat", "safe min", "safe max", "largest safe change", "smallest unsafe change",
                  f"worst {metric}", f"clean {metric}"]  # fmt: skip
        context["limits"] = Table(
            "signature-limits", rows, [heading("θ group", row=True), *map(heading, titles)]
        )
    return context


def section_context(artifacts: Artifacts, summary: Mapping) -> dict | None:
    """What ``report.html.j2`` shows of ``forensics/``; None if there is nothing."""
    result = artifacts.json(f"{FOLDER}/result.json")
    context = {"result": None, "charts": [], "theta": None, "metric": str(summary.get("metric", "metric")),
               "signature": None, "markdown": None, "signature_image": None}  # fmt: skip
    if result is not None:
        context["metric"] = str(result.get("metric", context["metric"]))
        context["result"] = result_table(result)
        context["charts"] = history_charts(result.get("history"), context["metric"])
        context["theta"] = theta_table(
            result.get("theta_before"), result.get("theta_after"), "forensics-theta"
        )
    context["samples"] = artifacts.image(
        f"{FOLDER}/samples.png", f"{FOLDER}/samples.png: default and adversarial views"
    )
    signature = artifacts.json(f"{FOLDER}/signature.json", expect=(dict, list))
    if signature is not None:
        if result is None and isinstance(signature, Mapping) and "metric" in signature:
            context["metric"] = str(signature["metric"])
        context["signature"] = signature_context(artifacts, signature)
    context["markdown"] = artifacts.text(f"{FOLDER}/signature.md")
    # Only when signature.json could not be drawn: otherwise the chart above is this figure.
    context["signature_image"] = artifacts.image(f"{FOLDER}/signature.png")
    if not any(context[key] for key in ("result", "samples", "signature", "markdown", "signature_image")):
        return None
    return context
