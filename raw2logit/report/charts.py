"""Matplotlib figures as inline SVG for the report: no image file, no script, no request.

The SVG matplotlib writes is made fit to sit inside an HTML page under its Content-Security-Policy:
the XML prolog, DOCTYPE, metadata, namespace URLs and global ``<style>`` are dropped, text stays text
(searchable, in the page's font), and every ``id`` is prefixed with the chart's name so that several
charts on one page never share one. A line drawn with ``gid="series-N"`` keeps that id (prefixed), so
the page's series can be counted.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

from markupsafe import Markup, escape
from matplotlib.figure import Figure

SVG_SETTINGS = {"svg.fonttype": "none"}
# matplotlib's Creator/Date/Format/Type metadata would carry a URL and a time stamp.
NO_METADATA = {"Creator": None, "Date": None, "Format": None, "Type": None}
ROOT = re.compile(r"<svg\b[^>]*>")
SIZE = re.compile(r'\b(width|height|viewBox)="([^"]*)"')
GLOBAL_STYLE = re.compile(r"\s*<defs>\s*<style[^>]*>.*?</style>\s*</defs>", re.S)
REFERENCE = re.compile(r'(\bid="|\bhref="#|url\(#)([^")]+)')


@dataclass(frozen=True)
class Chart:
    """An inline chart: ``name`` (its ``data-chart``), the SVG markup, a caption, and the artifact file
    that holds the same figure as a PNG (named in the caption, not embedded again), if any."""

    name: str
    svg: Markup
    caption: str
    file: str | None = None


def svg_markup(fig: Figure, name: str, title: str) -> Markup:
    """``fig`` as an ``<svg class="chart">`` element (closed afterwards), ready to inline; ``name``
    prefixes its ids, ``title`` is its accessible name."""
    import matplotlib
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    with matplotlib.rc_context({**SVG_SETTINGS, "svg.hashsalt": name}):
        fig.savefig(buffer, format="svg", metadata=NO_METADATA)
    plt.close(fig)
    text = buffer.getvalue()
    root = ROOT.search(text)
    if root is None:
        raise ValueError("matplotlib wrote no <svg> element")
    size = dict(SIZE.findall(root.group(0)))
    body = GLOBAL_STYLE.sub("", text[root.end() :], count=1)
    body = REFERENCE.sub(lambda m: f"{m.group(1)}{name}-{m.group(2)}", body).replace("xlink:href=", "href=")
    head = (
        f'<svg class="chart" width="{escape(size.get("width", ""))}" height="{escape(size.get("height", ""))}" '
        f'viewBox="{escape(size.get("viewBox", ""))}" role="img" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>"
    )
    return Markup(head + body.strip())


def chart(fig: Figure, name: str, caption: str, file: str | None = None) -> Chart:
    """A ``Chart`` of ``fig`` (closed afterwards)."""
    return Chart(name, svg_markup(fig, name, caption), caption, file)
