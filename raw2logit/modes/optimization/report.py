"""The optimization section of report.html: Table 2 (validation metric per setting, mean ± std), the
validation curves (paper Fig. 7), the learned θ and, for a sweep, the comparison of its settings."""

from __future__ import annotations

from collections.abc import Mapping

from raw2logit.modes.optimization import FOLDER
from raw2logit.report.artifacts import Artifacts
from raw2logit.report.charts import chart
from raw2logit.report.figures import draw_curves
from raw2logit.report.formatting import fmt, is_number, number_attribute
from raw2logit.report.tables import Cell, Table, attributes, frame_table, heading, theta_table

ANCHOR, TITLE, LABEL = "optimization", "Drift optimization", "Optimization"


def table2(summary: Mapping) -> Table | None:
    """summary.json's ``table2`` (``settings`` in older summaries): per setting the metric over steps and
    folds and the final metric over folds, mean ± std (``data-value``, ``data-std``), ★ on the best."""
    settings = summary.get("table2", summary.get("settings"))
    if not isinstance(settings, Mapping) or not settings:
        return None
    metric = summary.get("metric", "metric")
    settings = {
        name: value if isinstance(value, Mapping) else {"mean": value} for name, value in settings.items()
    }
    means = {name: s["mean"] for name, s in settings.items() if is_number(s.get("mean"))}
    best = max(means, key=means.get) if means else None
    has_final = any("final_mean" in s for s in settings.values())
    parts = (("mean", "std"), ("final_mean", "final_std")) if has_final else (("mean", "std"),)
    rows = []
    for name, values in settings.items():
        row = [heading(name, row=True)]
        for key, spread in parts:
            mean, std = values.get(key), values.get(spread)
            text = fmt(mean) + (f" ± {fmt(std)}" if is_number(std) else "")
            star = name == best and key == "mean"
            row.append(Cell("★ " + text if star else text, attributes(
                class_="num best" if star else "num", data_table="optimization-summary", data_row=name, data_col=key,
                data_value=number_attribute(mean) if is_number(mean) else None,
                data_std=number_attribute(std) if is_number(std) else None)))  # fmt: skip
        if has_final:
            row += [Cell(fmt(values.get(key)), {"class": "num"}) for key in ("folds", "points")]
        rows.append(row)
    head = [heading("setting", row=True), heading(f"{metric} over steps and folds")]
    if has_final:
        head += [heading(f"final {metric} over folds"), heading("folds"), heading("points")]
    return Table("optimization-summary", rows, head)


def section_context(artifacts: Artifacts, summary: Mapping) -> dict | None:
    """What ``report.html.j2`` shows of ``optimization/`` and summary.json; None if there is nothing."""
    metric = str(summary.get("metric", "metric"))
    context = {"metric": metric, "table2": table2(summary), "curves": None, "curves_image": None, "theta": None,
               "comparison": None}  # fmt: skip
    history = artifacts.csv(f"{FOLDER}/history.csv", index=False, required=("step", "setting", "metric"))
    # A run's curves.png and a sweep's comparison.png are this figure: drawn once, inline.
    figure_file = next((name for name in (f"{FOLDER}/comparison.png", f"{FOLDER}/curves.png")
                        if (artifacts.directory / name).is_file()), f"{FOLDER}/curves.png")  # fmt: skip
    if history is not None:
        folds = history["fold"].nunique() if "fold" in history else 1
        fig = artifacts.guarded(f"{FOLDER}/history.csv (figure)", lambda: draw_curves(history, metric))
        if fig is not None:
            caption = (
                f"validation {metric} against optimisation step, mean ± std over {folds} fold(s), per setting"
            )
            context["curves"] = chart(fig, "optimization-curves", caption, figure_file)
            artifacts.mark_shown(figure_file)
    context["curves_image"] = artifacts.image(figure_file)
    theta = artifacts.json(f"{FOLDER}/theta.json")
    if theta is not None:
        context["theta"] = theta_table(None, theta.get("theta", theta), "optimization-theta")
    comparison = artifacts.csv(f"{FOLDER}/comparison.csv")
    if comparison is not None:
        context["comparison"] = frame_table(comparison, "comparison")
    context["samples"] = artifacts.image(
        f"{FOLDER}/samples.png", f"{FOLDER}/samples.png: frozen and learned views"
    )
    if not any(
        context[key] for key in ("table2", "curves", "curves_image", "theta", "comparison", "samples")
    ):
        return None
    return context
