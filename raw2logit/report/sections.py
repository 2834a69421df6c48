"""The sections of the page: the ones every run has (summary, stage figure, other figures, provenance)
and each mode's own, which the mode builds (``raw2logit/modes/<mode>/report.py`` and its template).

A mode's ``report`` module defines ``ANCHOR`` (the section's id), ``TITLE``, ``LABEL`` (its link in the
navigation) and ``section_context(artifacts, summary) -> dict | None``: what its template
``report.html.j2`` needs, or None when the directory holds nothing of that mode.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from markupsafe import Markup

from raw2logit.report.artifacts import Artifacts
from raw2logit.report.formatting import is_number
from raw2logit.report.tables import flatten, kv_table
from raw2logit.report.templating import render, section_template

# What the provenance table shows of run.json, in this order.
PROVENANCE_KEYS = (
    "seed",
    "git_commit",
    "command",
    "started",
    "python",
    "platform",
    "mlflow_run_id",
    "tracking_uri",
)
STAGES_CAPTION = "stages.png: raw → black level → demosaic → … → gamma, one row per image (paper Fig. 1)"


@dataclass(frozen=True)
class Section:
    """One ``<section>`` of the page: its id, heading, navigation label and rendered body."""

    anchor: str
    title: str
    label: str
    body: Markup


def summary_section(artifacts: Artifacts, summary: Mapping) -> Section:
    """summary.json: its top-level values as a table (``data-table="summary"``), everything in a
    collapsed table below."""
    highlights = []
    for key, value in summary.items():
        if key == "mode":
            continue
        if isinstance(value, list) and all(is_number(v) or isinstance(v, str) for v in value):
            value = ", ".join(map(str, value))
        if not isinstance(value, (Mapping, list)):
            highlights.append((key, value))
    body = render(
        "summary.html.j2",
        highlights=kv_table(highlights, "summary", [key for key, _ in highlights]) if highlights else None,
        everything=kv_table(flatten(summary), "summary-json"),
    )
    return Section("summary", "Summary", "Summary", body)


def stages_section(artifacts: Artifacts) -> Section | None:
    """stages.png, the data model stage by stage, if the run drew it."""
    figure = artifacts.image("stages.png", STAGES_CAPTION)
    if figure is None:
        return None
    return Section("stages", "Data model, stage by stage", "Stages", render("stages.html.j2", figure=figure))


def mode_section(mode: str, artifacts: Artifacts, summary: Mapping) -> Section | None:
    """Mode ``mode``'s own section, built by its ``report`` module; None if it has nothing to show."""
    from raw2logit import modes

    report = importlib.import_module(f"{modes.get(mode).__name__}.report")
    context = report.section_context(artifacts, summary)
    if context is None:
        return None
    return Section(report.ANCHOR, report.TITLE, report.LABEL, render(section_template(mode), **context))


def other_figures_section(artifacts: Artifacts, folders: Iterable[Path]) -> Section | None:
    """Every PNG in ``folders`` that no other section shows."""
    paths = [path for folder in folders if folder.is_dir() for path in sorted(folder.glob("*.png"))]
    figures = [figure for figure in (artifacts.image(path) for path in paths) if figure is not None]
    if not figures:
        return None
    return Section("figures", "Other figures", "Figures", render("figures.html.j2", figures=figures))


def provenance_section(artifacts: Artifacts) -> Section | None:
    """run.json (seed, commit, command, package versions) and config.yaml, collapsed."""
    run = artifacts.json("run.json")
    config = artifacts.text("config.yaml")
    if run is None and config is None:
        return None
    context = {"run": None, "packages": None, "run_config": None, "config": config}
    if run is not None:
        context["run"] = kv_table([(key, run[key]) for key in PROVENANCE_KEYS if key in run], "provenance")
        packages = run.get("packages")
        if isinstance(packages, Mapping) and packages:
            rows = [
                (name, version if version is not None else "not installed")
                for name, version in packages.items()
            ]
            context["packages"] = kv_table(rows, "packages")
        if config is None and isinstance(run.get("config"), Mapping):
            context["run_config"] = json.dumps(run["config"], indent=2)
    return Section("provenance", "Provenance", "Provenance", render("provenance.html.j2", **context))
