"""Matplotlib figures as inline SVG: fit for a page with a strict Content-Security-Policy."""

from __future__ import annotations

import re

from raw2logit.report.charts import chart, svg_markup
from raw2logit.report.figures import draw_over_epochs


def test_inline_svg_is_a_bare_svg_element():
    svg = svg_markup(
        draw_over_epochs([1, 2, 3], [0.5, 0.4, 0.3], "held-out accuracy"), "c1", "accuracy <by epoch>"
    )
    assert svg.startswith('<svg class="chart"') and svg.rstrip().endswith("</svg>")
    assert "<?xml" not in svg and "<!DOCTYPE" not in svg and "<metadata" not in svg and "<style" not in svg
    assert "http" not in svg  # no namespace URL, no generator link
    assert "<title>accuracy &lt;by epoch&gt;</title>" in svg  # the title is escaped
    assert ">held-out accuracy</text>" in svg  # text stays text (searchable), not glyph outlines


def test_ids_are_prefixed_and_unique_across_charts():
    first = str(chart(draw_over_epochs([1, 2], [1, 2], "a"), "one", "a").svg)
    second = str(chart(draw_over_epochs([1, 2], [1, 2], "a"), "two", "a").svg)
    ids = re.findall(r'\bid="([^"]+)"', first + second)
    assert ids and len(ids) == len(set(ids))
    assert all(i.startswith(("one-", "two-")) for i in ids)
    for svg in (first, second):  # every reference points into its own chart
        references = re.findall(r'(?:href="#|url\(#)([^")]+)', svg)
        own = set(re.findall(r'\bid="([^"]+)"', svg))
        assert references and set(references) <= own
    assert 'id="one-series-0"' in first
