"""A self-contained HTML report of one run or sweep directory: ``report.html``.

The page is built from whatever artifacts the directory holds (``summary.json``, ``run.json``,
``config.yaml``, each mode's folder, ``stages.png``); missing parts are left out, and a malformed
artifact is skipped with a note in the page. The mode's own section comes from the mode
(``raw2logit/modes/<mode>/report.py``). Tables carry every number in ``data-*`` attributes, charts
are inline SVG, every PNG is embedded as a ``data:`` URI, and a Content-Security-Policy blocks any
request the page could make: it opens from a file, offline, in any browser.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path

from raw2logit.errors import InputError
from raw2logit.names import MODES
from raw2logit.report.artifacts import Artifacts
from raw2logit.report.sections import (
    mode_section,
    other_figures_section,
    provenance_section,
    stages_section,
    summary_section,
)
from raw2logit.report.templating import render

REPORT_NAME = "report.html"
# The page may load nothing: images are data: URIs, styles are inline, there is no script.
CONTENT_SECURITY_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def mode_folders() -> dict[str, str]:
    """Mode name -> the artifact folder it writes (its ``FOLDER``), for every registered mode."""
    from raw2logit import modes

    return {name: modes.get(name).FOLDER for name in MODES}


def infer_mode(directory: Path, summary: Mapping | None) -> str | None:
    """The directory's mode: summary.json's ``mode``, else the first mode whose folder is present."""
    if summary and isinstance(summary.get("mode"), str):
        return summary["mode"]
    return next((name for name, folder in mode_folders().items() if (directory / folder).is_dir()), None)


def render_report(directory: str | Path, title: str | None = None) -> str:
    """The report page of ``directory`` as an HTML string (see ``write_report``)."""
    directory = Path(directory)
    artifacts = Artifacts(directory)
    summary = artifacts.json("summary.json")
    if summary is None and not (directory / "summary.json").exists():
        artifacts.notes.append("summary.json is missing: the run may not have finished.")
    mode = infer_mode(directory, summary)
    folders = mode_folders()
    # The directory's own mode first, then any other mode whose folder is there too.
    shown_modes = [name for name in MODES if name == mode]
    shown_modes += [name for name in MODES if name != mode and (directory / folders[name]).is_dir()]
    builders = [("summary", lambda: summary_section(artifacts, summary) if summary else None)]
    builders += [(f"{name} section", lambda name=name: mode_section(name, artifacts, summary or {}))
                 for name in shown_modes]  # fmt: skip
    builders += [
        ("stage figure", lambda: stages_section(artifacts)),
        ("other figures", lambda: other_figures_section(artifacts, [directory, *(directory / f for f in folders.values())])),
        ("provenance", lambda: provenance_section(artifacts)),
    ]  # fmt: skip
    # One at a time, in page order: a section's failure costs that section only, and a figure a section
    # shows is not shown again among the other figures.
    sections = [
        section for label, build in builders if (section := artifacts.guarded(label, build)) is not None
    ]
    title = title or f"raw2logit {mode or 'run'} report: {directory.resolve().name}"
    return render(
        "page.html.j2",
        title=title,
        mode=mode,
        directory=str(directory.resolve()),
        generated=time.strftime("%Y-%m-%d %H:%M:%S %z"),
        content_security_policy=CONTENT_SECURITY_POLICY,
        sections=sections,
        notes=artifacts.notes,
    )


def write_report(directory: str | Path, title: str | None = None) -> Path:
    """Write ``directory/report.html``, a self-contained page of the artifacts found there.

    Shows what is present and leaves out what is not: the summary values, the mode's section (the
    synthesis matrix and corruption table with std, ranks and colours; the forensic result, curves, θ
    and signature; the optimization Table-2 summary, curves and θ; the calibration fit), the
    stage-by-stage figure, other figures, and the provenance (seed, commit, packages, command, config).
    Images are embedded as data: URIs and charts as inline SVG; the page makes no request. A malformed
    artifact is skipped with a note in the page.

    Args:
        directory: a run directory or a sweep directory.
        title: the page title; default ``"raw2logit <mode> report: <directory name>"``.

    Returns:
        The path of the written ``report.html``.

    Raises:
        InputError: ``directory`` is not an existing directory.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"Cannot write a report for {directory}: it is not an existing directory.")
    page = render_report(directory, title)
    path = directory / REPORT_NAME
    # Written next to the target, then renamed: a reader never sees half a page.
    temporary = directory / f".{REPORT_NAME}.{os.getpid()}.tmp"
    try:
        temporary.write_text(page, encoding="utf-8")
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path
