"""Reading report.html back for the tests: elements with their attributes, text and ancestors, the
numeric cells of each table (by their data-* attributes), embedded images and inline charts."""

from __future__ import annotations

import base64
import html
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# A data-value attribute holds 10 significant digits.
RELATIVE_TOLERANCE = 1e-8
NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?")
VOID_ELEMENTS = {
    "area",
    "base",
    "br",
    "col",
    "embed",
    "hr",
    "img",
    "input",
    "link",
    "meta",
    "source",
    "track",
    "wbr",
}


class Page(HTMLParser):
    """``elements``: (tag, attributes) in document order; ``ancestors[i]``: the tags enclosing element i;
    ``text_of(i)``: the text inside element i; ``text``: all text of the page."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict]] = []
        self.ancestors: list[tuple[str, ...]] = []
        self.texts: list[list[str]] = []
        self.text: list[str] = []
        self.open: list[tuple[str, int]] = []

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))
        self.ancestors.append(tuple(t for t, _ in self.open))
        self.texts.append([])
        if tag not in VOID_ELEMENTS:
            self.open.append((tag, len(self.elements) - 1))

    def handle_endtag(self, tag):
        for depth in range(len(self.open) - 1, -1, -1):
            if self.open[depth][0] == tag:
                del self.open[depth:]
                return

    def handle_data(self, data):
        self.text.append(data)
        for _, index in self.open:
            self.texts[index].append(data)

    def text_of(self, index: int) -> str:
        return "".join(self.texts[index])

    def all_text(self) -> str:
        return "".join(self.text)


def parse(page: str) -> Page:
    parser = Page()
    parser.feed(page)
    parser.close()
    return parser


def read(path: Path) -> tuple[str, Page]:
    text = path.read_text(encoding="utf-8")
    return text, parse(text)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def close(found: float, expected: float) -> bool:
    return abs(float(found) - float(expected)) <= 1e-12 + RELATIVE_TOLERANCE * abs(float(expected))


def cells(page: Page, table: str) -> dict[tuple[str, str], dict]:
    """(data-row, data-col) -> attributes of the numeric cells of one table."""
    return {
        (a.get("data-row"), a.get("data-col")): a
        for _, a in page.elements
        if a.get("data-table") == table and "data-value" in a
    }


def element(page: Page, table: str, row: str, column: str | None) -> tuple[int, dict]:
    """(index, attributes) of the one cell of a table at (row, column), numeric or not."""
    found = [(i, a) for i, (_, a) in enumerate(page.elements)
             if a.get("data-table") == table and a.get("data-row") == row and a.get("data-col") == column]  # fmt: skip
    assert len(found) == 1, f"{table}: {len(found)} cells for ({row}, {column})"
    return found[0]


def keyed(page: Page, table: str) -> dict[str, float]:
    """data-key -> data-value of one key/value table."""
    return {
        a["data-key"]: float(a["data-value"])
        for _, a in page.elements
        if a.get("data-table") == table and "data-key" in a and "data-value" in a
    }


def keyed_text(page: Page, table: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    """data-key -> (shown text, enclosing tags) of one key/value table."""
    return {
        a["data-key"]: (page.text_of(i), page.ancestors[i])
        for i, (_, a) in enumerate(page.elements)
        if a.get("data-table") == table and "data-key" in a
    }


def arrays_shown(page: Page, table: str, column: str) -> dict[str, np.ndarray]:
    """data-row -> the numbers shown in the column ``column`` of an array table (θ, camera, limits)."""
    return {
        a["data-row"]: np.array([float(n) for n in NUMBER.findall(page.text_of(i))])
        for i, (_, a) in enumerate(page.elements)
        if a.get("data-table") == table and a.get("data-col") == column
    }


def numeric_groups(theta: dict) -> dict[str, np.ndarray]:
    """The θ groups that are numbers (``pattern`` is not), flattened."""
    groups = {}
    for group, value in theta.items():
        try:
            groups[group] = np.asarray(value, dtype=float).ravel()
        except (TypeError, ValueError):
            continue
    return groups


def assert_frame_in_page(page: Page, table: str, frame: pd.DataFrame, attribute: str = "data-value") -> None:
    found = cells(page, table)
    for row in frame.index:
        for column in frame.columns:
            expected = float(frame.loc[row, column])
            if np.isnan(expected):
                continue
            attributes = found.get((str(row), str(column)))
            assert attributes is not None, f"{table}: no cell for ({row}, {column})"
            assert close(attributes[attribute], expected), (table, row, column)


def assert_self_contained(text: str) -> None:
    """Nothing in the page could make a request: no URL, script, link, import or font; every src/href
    and CSS url() is a data: URI or a reference inside the page (#...); and a CSP says so again."""
    lowered = text.lower()
    assert "http://" not in lowered and "https://" not in lowered
    assert "<script" not in lowered and "<link" not in lowered
    assert not re.search(r"<(iframe|object|embed)\b", lowered)
    assert "@import" not in lowered and "@font-face" not in lowered
    assert not re.search(r"url\((?!#)", lowered)  # charts clip to their own paths: url(#id)
    for source in re.findall(r'\b(?:src|href)\s*=\s*"([^"]*)"', text):
        assert source.startswith(("data:", "#")), source
    policy = re.search(r'<meta http-equiv="content-security-policy" content="([^"]*)">', lowered)
    assert policy is not None and html.unescape(policy.group(1)).startswith("default-src 'none';")


def images(page: Page) -> list[str]:
    return [a.get("alt") for tag, a in page.elements if tag == "img"]


def assert_images_embedded(page: Page, *names: str) -> None:
    """Exactly the PNGs ``names`` (paths relative to the report's folder) are embedded, as PNG data."""
    embedded = [a for tag, a in page.elements if tag == "img"]
    assert sorted(a.get("alt") for a in embedded) == sorted(names)
    for attributes in embedded:
        source = attributes.get("src", "")
        assert source.startswith("data:image/png;base64,")
        assert base64.b64decode(source.split(",", 1)[1]).startswith(PNG_SIGNATURE)


def charts(text: str) -> dict[str, str]:
    """data-chart name -> the inline SVG of each chart of the page."""
    found = re.findall(
        r'<figure class="chart" data-chart="([^"]+)">(<svg class="chart".*?</svg>)', text, re.S
    )
    names = [name for name, _ in found]
    assert len(names) == len(set(names)), f"charts drawn twice: {names}"
    return dict(found)


def series(svg: str) -> list[str]:
    """The data series (lines drawn with gid ``series-N``) of one chart."""
    return re.findall(r'<g id="[^"]*-series-(\d+)"', svg)


def assert_no_figure_shown_twice(text: str, page: Page) -> None:
    """No PNG is embedded twice, and none that holds the same figure as an inline chart."""
    shown = images(page)
    assert len(shown) == len(set(shown)), shown
    sources = [a.get("src") for tag, a in page.elements if tag == "img"]
    assert len(sources) == len(set(sources))
    also = re.findall(r"\(the same figure as ([^)]+)\)</figcaption>", text)
    assert not set(also) & set(shown), (also, shown)
