"""The synthesis section of report.html: the drift in numbers, the cross-pipeline matrix and the Common
Corruptions table (mean ± std, ranks, one colour scale), the ranking and the paper's heatmap figure."""

from __future__ import annotations

from collections.abc import Mapping

from raw2logit.modes.synthesis import FOLDER
from raw2logit.report.artifacts import Artifacts
from raw2logit.report.tables import (
    Table,
    frame_table,
    heading,
    legend,
    matrix_table,
    number_cell,
    shared_range,
)

ANCHOR, TITLE, LABEL = "synthesis", "Drift synthesis", "Synthesis"
HEATMAP_CAPTION = "synthesis/heatmap.png: the same matrices as the paper's Fig. 4/5"


def drift_table(summary: Mapping) -> Table | None:
    """ISP drift and Common Corruptions drift: the metric on the training distribution, under drift, and
    the change (``data-table="summary"``, keys ``isp.train`` ...); None if summary.json has neither."""
    rows = []
    for name, key in (("ISP (data model)", "isp"), ("Common Corruptions", "corruptions")):
        block = summary.get(key)
        if not isinstance(block, Mapping):
            continue
        label = name + (f" (severity {block['severity']})" if "severity" in block else "")
        rows.append([heading(label, row=True)] + [number_cell(block.get(part), data_table="summary", data_key=f"{key}.{part}")
                                                  for part in ("train", "test", "change")])  # fmt: skip
    if not rows:
        return None
    return Table("summary", rows, [heading("drift", row=True), *map(heading, ("train", "test", "change"))])


def section_context(artifacts: Artifacts, summary: Mapping) -> dict | None:
    """What ``report.html.j2`` shows of ``synthesis/`` and summary.json; None if there is nothing."""
    metric = str(summary.get("metric", "metric"))
    matrix = artifacts.csv(f"{FOLDER}/matrix.csv")
    matrix_std = artifacts.csv(f"{FOLDER}/matrix_std.csv")
    corruptions = artifacts.csv(f"{FOLDER}/corruptions.csv")
    corruptions_std = artifacts.csv(f"{FOLDER}/corruptions_std.csv")
    ranking = artifacts.csv(f"{FOLDER}/ranking.csv")
    best = artifacts.csv(f"{FOLDER}/best_train_per_test.csv")
    context = {
        "metric": metric,
        "drift": drift_table(summary),
        "legend": None,
        "matrix": None,
        "corruptions": None,
        "ranking": frame_table(ranking, "ranking", "train") if ranking is not None else None,
        "best": frame_table(best, "best_train_per_test", "test") if best is not None else None,
        "heatmap": artifacts.image(f"{FOLDER}/heatmap.png", HEATMAP_CAPTION),
    }
    frames = [frame for frame in (matrix, corruptions) if frame is not None]
    if frames:
        vmin, vmax = shared_range(frames)
        context["legend"] = legend(
            vmin, vmax, f"{metric} (mean over folds; colour scale shared by both tables)"
        )
        if matrix is not None:
            context["matrix"] = matrix_table(matrix, matrix_std, "matrix", vmin, vmax, "train", "test")
        if corruptions is not None:
            context["corruptions"] = matrix_table(corruptions, corruptions_std, "corruptions", vmin, vmax, "train",
                                                  "corruption")  # fmt: skip
    if not any(context[key] for key in ("matrix", "corruptions", "ranking", "best", "heatmap")):
        return None
    return context
