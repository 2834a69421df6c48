"""A self-contained HTML report of one run or sweep directory: ``report.html``.

The page is built from whatever artifacts the directory holds (``summary.json``, ``run.json``,
``config.yaml``, ``synthesis/``, ``forensics/``, ``optimization/``, ``calibrate/``,
``stages.png``); missing parts are left out, and a malformed artifact is skipped with a note in
the page. Tables are rendered from the CSV/JSON files, every number with machine-readable
``data-*`` attributes; every PNG is embedded as a ``data:`` URI, and a Content-Security-Policy
blocks any request the page could make: it opens from a file, offline, in any browser.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from raw2logit.errors import InputError

REPORT_NAME = "report.html"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_PNG_BYTES = 20 * 1024 * 1024
ARTIFACT_FOLDERS = ("synthesis", "forensics", "optimization", "calibrate")
# The page may load nothing: images are data: URIs, styles are inline, there is no script.
CONTENT_SECURITY_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
JSON_KINDS = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean",
              type(None): "null"}  # fmt: skip
SERIES_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")

CSS = """
:root { --fg: #1d2430; --muted: #5b6576; --line: #d9dee7; --accent: #2b5cab; --bg-soft: #f5f7fa; }
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--fg); margin: 0 auto; padding: 1.2rem 1.6rem 3rem; max-width: 1500px; line-height: 1.4; }
h1 { font-size: 1.5rem; margin: 0 0 .2rem; }
h2 { font-size: 1.2rem; margin: 2rem 0 .6rem; padding-bottom: .2rem; border-bottom: 2px solid var(--line); }
h3 { font-size: 1rem; margin: 1.2rem 0 .4rem; }
p.meta, .muted { color: var(--muted); font-size: .85rem; }
nav { font-size: .85rem; margin: .6rem 0 0; }
nav a { color: var(--accent); margin-right: .9rem; text-decoration: none; }
.notes { background: #fff6e0; border: 1px solid #f0c36d; border-radius: 6px; padding: .5rem .9rem; margin: 1rem 0; }
.notes li { font-size: .85rem; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-size: .8rem; margin: .3rem 0 .8rem; }
th, td { border: 1px solid var(--line); padding: .25rem .45rem; text-align: right; vertical-align: middle; }
th { background: var(--bg-soft); font-weight: 600; }
th.row, td.text { text-align: left; }
table.kv td:first-child { text-align: left; color: var(--muted); }
table.kv td { text-align: left; }
td.num { font-variant-numeric: tabular-nums; }
table.matrix td.cell { position: relative; min-width: 4.6rem; text-align: center; font-variant-numeric: tabular-nums; }
table.matrix td.cell .sd { display: block; font-size: .68rem; opacity: .85; }
table.matrix td.cell sup.rank { position: absolute; top: 1px; right: 3px; font-size: .62rem; font-weight: 700; }
table.matrix td.diagonal { outline: 2px solid #111; outline-offset: -2px; }
table.matrix th.col { white-space: nowrap; font-size: .72rem; }
.legend { display: flex; align-items: center; gap: .4rem; font-size: .75rem; color: var(--muted); margin-bottom: .8rem; }
.legend .bar { width: 220px; height: 12px; border: 1px solid var(--line); }
figure { margin: .6rem 0 1.2rem; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { font-size: .75rem; color: var(--muted); }
.charts { display: flex; flex-wrap: wrap; gap: 1rem; }
svg.chart { background: #fff; border: 1px solid var(--line); }
svg.chart text { font-family: inherit; font-size: 10px; fill: #333; }
pre { background: var(--bg-soft); border: 1px solid var(--line); padding: .5rem .7rem; font-size: .75rem;
      overflow-x: auto; max-height: 32rem; }
td pre { margin: 0; padding: .2rem .3rem; max-height: none; border: none; background: transparent; text-align: left; }
details { margin: .5rem 0; }
summary { cursor: pointer; font-weight: 600; }
.best { font-weight: 700; }
"""


# -- small HTML helpers -------------------------------------------------------------------------
def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _number_attribute(value: float) -> str:
    """Full precision for machines: ``0.9210000001`` -> ``"0.9210000001"``; NaN -> ``"NaN"``."""
    value = float(value)
    return "NaN" if math.isnan(value) else format(value, ".10g")


def _fmt(value: object, digits: int = 4) -> str:
    """A number for people: fixed decimals for moderate values, significant digits otherwise."""
    if value is None:
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value):
            return "–"
        if value != 0 and (abs(value) >= 1e4 or abs(value) < 10 ** (-digits)):
            return f"{value:.{digits - 1}e}"
        return f"{value:.{digits}f}"
    return str(value)


def _attributes(**attributes: object) -> str:
    """``data_row="x"`` -> `` data-row="x"``; None values are left out."""
    parts = []
    for key, value in attributes.items():
        if value is None:
            continue
        parts.append(f' {key.rstrip("_").replace("_", "-")}="{_esc(value)}"')
    return "".join(parts)


def _number_cell(value: object, digits: int = 4, **attributes: object) -> str:
    """A ``<td>`` for a scalar; numbers carry ``data-value``."""
    if _is_number(value):
        return f'<td class="num"{_attributes(data_value=_number_attribute(value), **attributes)}>{_esc(_fmt(value, digits))}</td>'
    return f'<td class="text"{_attributes(**attributes)}>{_esc(_fmt(value))}</td>'


def _kv_table(rows: Sequence[tuple[str, object]], table: str, keys: Sequence[str] | None = None) -> str:
    """Two-column table of (label, value); ``keys`` gives each row's ``data-key``."""
    body = []
    for number, (label, value) in enumerate(rows):
        key = keys[number] if keys is not None else label
        body.append(f"<tr><td>{_esc(label)}</td>{_number_cell(value, data_table=table, data_key=key)}</tr>")
    return f'<table class="kv"{_attributes(data_table=table)}>{"".join(body)}</table>'


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{_esc(anchor)}"><h2>{_esc(title)}</h2>{body}</section>'


def _pre(text: str, limit: int = 40_000) -> str:
    if len(text) > limit:
        text = text[:limit] + f"\n… ({len(text) - limit} more characters not shown)"
    return f"<pre>{_esc(text)}</pre>"


def _colour(value: float, vmin: float, vmax: float) -> tuple[str, str]:
    """Viridis background for ``value`` on [vmin, vmax], and a readable text colour."""
    from matplotlib import colormaps

    if math.isnan(value):
        return "#ffffff", "#1d2430"
    shade = (value - vmin) / (vmax - vmin) if vmax > vmin else 0.5
    shade = min(max(shade, 0.0), 1.0)
    red, green, blue, _ = colormaps["viridis"](shade)
    background = f"#{round(red * 255):02x}{round(green * 255):02x}{round(blue * 255):02x}"
    return background, "#ffffff" if shade < 0.45 else "#111111"


def _legend(vmin: float, vmax: float, label: str) -> str:
    from matplotlib import colormaps

    stops = ", ".join(
        "#{:02x}{:02x}{:02x}".format(*(round(c * 255) for c in colormaps["viridis"](s)[:3]))
        for s in np.linspace(0, 1, 9)
    )
    return (
        f'<div class="legend"><span>{_esc(_fmt(vmin, 3))}</span>'
        f'<span class="bar" style="background: linear-gradient(to right, {stops})"></span>'
        f"<span>{_esc(_fmt(vmax, 3))}</span><span>{_esc(label)}</span></div>"
    )


# -- reading artifacts --------------------------------------------------------------------------
class _Artifacts:
    """Reads the directory's files; collects a note for each malformed one instead of raising."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.notes: list[str] = []
        self.embedded: set[Path] = set()

    def relative(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.directory))
        except ValueError:
            return str(path)

    def note(self, path: Path | str, error: BaseException | str) -> None:
        name = self.relative(path) if isinstance(path, Path) else path
        reason = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        self.notes.append(f"{name} was skipped: {reason}")

    def load(
        self, relative: str, reader: Callable[[Path], object], check: Callable[[object], None] | None = None
    ):
        """``reader(path)`` if the file exists and reads well, else None (with a note if malformed)."""
        path = self.directory / relative
        if not path.is_file():
            return None
        try:
            value = reader(path)
            if check is not None:
                check(value)
            return value
        except Exception as error:
            self.note(path, error)
            return None

    def json(self, relative: str, expect: type | tuple[type, ...] = dict):
        kinds = expect if isinstance(expect, tuple) else (expect,)

        def check(value):
            if not isinstance(value, kinds):
                expected = " or ".join(JSON_KINDS.get(k, k.__name__) for k in kinds)
                found = JSON_KINDS.get(type(value), type(value).__name__)
                raise ValueError(f"expected a JSON {expected}, got {found}")

        return self.load(relative, lambda p: json.loads(p.read_text(encoding="utf-8")), check)

    def csv(self, relative: str, index: bool = True, required: Sequence[str] = ()):
        def read(path):
            frame = pd.read_csv(path, index_col=0 if index else None)
            missing = [c for c in required if c not in frame.columns]
            if missing:
                raise ValueError(
                    f"missing column(s) {', '.join(missing)}; has {', '.join(map(str, frame.columns))}"
                )
            if frame.empty:
                raise ValueError("no rows")
            return frame

        return self.load(relative, read)

    def text(self, relative: str):
        return self.load(relative, lambda p: p.read_text(encoding="utf-8"))

    def image(self, relative: str | Path, caption: str | None = None) -> str:
        """A ``<figure>`` with the PNG as a data: URI; empty if absent (a note if unusable)."""
        path = relative if isinstance(relative, Path) else self.directory / relative
        if not path.is_file():
            return ""
        self.embedded.add(path.resolve())
        try:
            data = path.read_bytes()
            if len(data) > MAX_PNG_BYTES:
                raise ValueError(f"{len(data)} bytes, more than the {MAX_PNG_BYTES} embedded at most")
            if not data.startswith(PNG_SIGNATURE):
                raise ValueError("not a PNG file")
        except Exception as error:
            self.note(path, error)
            return ""
        encoded = base64.b64encode(data).decode("ascii")
        name = self.relative(path)
        return (
            f'<figure><img src="data:image/png;base64,{encoded}" alt="{_esc(name)}">'
            f"<figcaption>{_esc(caption or name)}</figcaption></figure>"
        )

    def guarded(self, label: str, build: Callable[[], str]) -> str:
        """Run one section builder; an unexpected error costs that section only."""
        try:
            return build()
        except Exception as error:
            self.note(label, error)
            return ""


# -- tables from data frames --------------------------------------------------------------------
def _frame_table(frame: pd.DataFrame, table: str, index_name: str | None = None, digits: int = 4) -> str:
    """Any data frame as a table; numbers carry ``data-value``, ``data-row``, ``data-col``."""
    index_name = index_name if index_name is not None else (frame.index.name or "")
    show_index = not isinstance(frame.index, pd.RangeIndex)
    head = (f'<th class="row">{_esc(index_name)}</th>' if show_index else "") + "".join(
        f"<th>{_esc(c)}</th>" for c in frame.columns
    )
    rows = []
    # Column by column (not iterrows, which turns an int column of a mixed row into floats).
    columns = {column: frame[column].tolist() for column in frame.columns}
    for number, label in enumerate(frame.index):
        cells = f'<th class="row">{_esc(label)}</th>' if show_index else ""
        for column, values in columns.items():
            value = values[number]
            cells += _number_cell(value, digits, data_table=table, data_row=label, data_col=column)
        rows.append(f"<tr>{cells}</tr>")
    return (
        f'<div class="scroll"><table{_attributes(data_table=table)}><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _matrix_table(
    mean: pd.DataFrame,
    std: pd.DataFrame | None,
    table: str,
    vmin: float,
    vmax: float,
    row_label: str,
    column_label: str,
) -> str:
    """Mean ± std per cell, coloured by value; per column the top three rows ranked, a star on the best."""
    mean = mean.apply(pd.to_numeric, errors="coerce")
    if std is not None:
        std = std.apply(pd.to_numeric, errors="coerce").reindex(index=mean.index, columns=mean.columns)
    ranks = mean.rank(axis=0, ascending=False, method="min")
    head = f'<th class="row">{_esc(row_label)} ↓ / {_esc(column_label)} →</th>' + "".join(
        f'<th class="col">{_esc(c)}</th>' for c in mean.columns
    )
    rows = []
    for train in mean.index:
        cells = f'<th class="row">{_esc(train)}</th>'
        for test in mean.columns:
            value = float(mean.loc[train, test])
            spread = float(std.loc[train, test]) if std is not None else math.nan
            rank = ranks.loc[train, test]
            rank = None if pd.isna(rank) else int(rank)
            background, foreground = _colour(value, vmin, vmax)
            text = "–" if math.isnan(value) else f"{value:.3f}"
            if rank == 1:
                text = "★" + text
            content = f'<span class="v">{_esc(text)}</span>'
            if not math.isnan(spread):
                content += f'<span class="sd">±{spread:.3f}</span>'
            if rank is not None and rank <= 3:
                content += f'<sup class="rank">{rank}</sup>'
            tooltip = f"train {train} → {column_label} {test}: {_fmt(value)}"
            if not math.isnan(spread):
                tooltip += f" ± {_fmt(spread)}"
            if rank is not None:
                tooltip += f" (rank {rank} in column)"
            classes = "cell diagonal" if train == test else "cell"
            attributes = _attributes(
                class_=classes,
                style=f"background:{background};color:{foreground}",
                title=tooltip,
                data_table=table,
                data_row=train,
                data_col=test,
                data_value=_number_attribute(value),
                data_std=None if math.isnan(spread) else _number_attribute(spread),
                data_rank=rank,
            )
            cells += f"<td{attributes}>{content}</td>"
        rows.append(f"<tr>{cells}</tr>")
    return (
        f'<div class="scroll"><table class="matrix"{_attributes(data_table=table)}><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


# -- inline SVG line charts ---------------------------------------------------------------------
def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high <= low:
        return [low]
    return list(np.linspace(low, high, count))


def _svg_chart(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    title: str,
    xlabel: str,
    ylabel: str,
    width: int = 440,
    height: int = 250,
) -> str:
    """A small line chart as inline SVG (no image file, no script): one polyline per series."""
    points = {
        name: [(float(x), float(y)) for x, y in zip(xs, ys) if np.isfinite(x) and np.isfinite(y)]
        for name, (xs, ys) in series.items()
    }
    points = {name: p for name, p in points.items() if p}
    if not points:
        return ""
    xs = [x for p in points.values() for x, _ in p]
    ys = [y for p in points.values() for _, y in p]
    x_low, x_high = min(xs), max(xs)
    y_low, y_high = min(ys), max(ys)
    if y_high == y_low:
        y_low, y_high = y_low - 0.5 * (abs(y_low) or 1.0), y_high + 0.5 * (abs(y_high) or 1.0)
    if x_high == x_low:
        x_low, x_high = x_low - 1.0, x_high + 1.0
    left, right, top, bottom = 56, 12, 26, 40
    plot_w, plot_h = width - left - right, height - top - bottom

    def sx(x):
        return left + (x - x_low) / (x_high - x_low) * plot_w

    def sy(y):
        return top + (1 - (y - y_low) / (y_high - y_low)) * plot_h

    parts = [
        f'<svg class="chart" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{_esc(title)}"><title>{_esc(title)}</title>',
        f'<text x="{width / 2:.1f}" y="15" text-anchor="middle" font-weight="600">{_esc(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#bbb"/>',
    ]
    for tick in _ticks(y_low, y_high):
        y = sy(tick)
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{left - 4}" y="{y + 3:.1f}" text-anchor="end">{_esc(f"{tick:.3g}")}</text>')
    for tick in _ticks(x_low, x_high):
        x = sx(tick)
        parts.append(
            f'<text x="{x:.1f}" y="{top + plot_h + 13}" text-anchor="middle">{_esc(f"{tick:.4g}")}</text>'
        )
    parts.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 6}" text-anchor="middle">{_esc(xlabel)}</text>'
        f'<text x="12" y="{top + plot_h / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 12 {top + plot_h / 2:.1f})">{_esc(ylabel)}</text>'
    )
    for number, (name, line) in enumerate(points.items()):
        colour = SERIES_COLOURS[number % len(SERIES_COLOURS)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in line)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.8" points="{path}"/>')
        if len(line) <= 40:
            parts.extend(
                f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.2" fill="{colour}"/>' for x, y in line
            )
        if len(points) > 1:
            y = top + 12 + 13 * number
            parts.append(
                f'<line x1="{left + 8}" x2="{left + 22}" y1="{y - 3}" y2="{y - 3}" stroke="{colour}" stroke-width="2"/>'
                f'<text x="{left + 26}" y="{y}">{_esc(name)}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


# -- θ (data model parameters) ------------------------------------------------------------------
def _numeric(value: object) -> np.ndarray | None:
    """``value`` as a float array, or None if it is not numbers (e.g. θ's ``pattern``)."""
    try:
        return np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        return None


def _array_text(value: object) -> str:
    if value is None:
        return "–"
    array = _numeric(value)
    if array is None:
        return str(value)
    return np.array2string(array, precision=4, suppress_small=True, max_line_width=72)


def _shape(value: object) -> str:
    array = _numeric(value)
    return "–" if array is None else str(array.shape)


def _theta_table(before: Mapping | None, after: Mapping | None, table: str) -> str:
    """θ group by group: shape, values before and after, and the largest change (``before`` None: θ alone)."""
    if not isinstance(after, Mapping) or (before is not None and not isinstance(before, Mapping)):
        return ""
    groups = list(dict.fromkeys([*(before or {}), *after]))
    rows = []
    for group in groups:
        new = after.get(group)
        cells = f'<th class="row">{_esc(group)}</th><td class="text">{_esc(_shape(new))}</td>'
        if before is not None:
            old = before.get(group)
            old_array, new_array = _numeric(old), _numeric(new)
            change = "<td></td>"
            if old_array is not None and new_array is not None and old_array.shape == new_array.shape:
                delta = float(np.max(np.abs(new_array - old_array), initial=0.0))
                change = _number_cell(delta, data_table=table, data_row=group, data_col="max_abs_change")
            cells += f"<td><pre>{_esc(_array_text(old))}</pre></td><td><pre>{_esc(_array_text(new))}</pre></td>{change}"
        else:
            cells += f"<td><pre>{_esc(_array_text(new))}</pre></td>"
        rows.append(f"<tr>{cells}</tr>")
    if not rows:
        return ""
    head = "<th>group</th><th>shape</th>" + (
        "<th>θ before</th><th>θ after</th><th>max |Δ|</th>" if before is not None else "<th>θ</th>"
    )
    return (
        f'<div class="scroll"><table{_attributes(data_table=table)}><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


# -- generic JSON ------------------------------------------------------------------------------
def _flatten(value: object, prefix: str = "") -> list[tuple[str, object]]:
    """Nested dicts -> (dotted key, leaf); short lists of scalars are kept as one leaf."""
    if isinstance(value, Mapping):
        items = []
        for key, inner in value.items():
            items.extend(_flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return items
    if isinstance(value, list) and not all(_is_number(v) or isinstance(v, str) for v in value):
        return [(prefix, json.dumps(value)[:300])]
    if isinstance(value, list):
        return [(prefix, ", ".join(_fmt(v) for v in value))]
    return [(prefix, value)]


def _json_view(value: object, table: str) -> str:
    """A JSON document as tables where it has a tabular shape, else as text."""
    if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        try:
            return _frame_table(pd.DataFrame(value), table)
        except Exception:
            return _pre(json.dumps(value, indent=2))
    if isinstance(value, Mapping):
        scalars = [(k, v) for k, v in value.items() if not isinstance(v, (Mapping, list))]
        parts = [_kv_table(scalars, table)] if scalars else []
        for key, inner in value.items():
            if isinstance(inner, (Mapping, list)):
                parts.append(f"<h3>{_esc(key)}</h3>{_json_view(inner, f'{table}.{key}')}")
        return "".join(parts)
    if isinstance(value, list):
        return _pre(json.dumps(value, indent=2))
    return _kv_table([("value", value)], table)


# -- sections ----------------------------------------------------------------------------------
def _summary_section(summary: Mapping, artifacts: _Artifacts) -> str:
    parts = []
    metric = summary.get("metric", "metric")
    rows = []
    for name, key in (("ISP (data model)", "isp"), ("Common Corruptions", "corruptions")):
        block = summary.get(key)
        if not isinstance(block, Mapping):
            continue
        label = name + (f" (severity {block['severity']})" if "severity" in block else "")
        cells = "".join(
            _number_cell(block.get(part), data_table="summary", data_key=f"{key}.{part}")
            for part in ("train", "test", "change")
        )
        rows.append(f'<tr><th class="row">{_esc(label)}</th>{cells}</tr>')
    if rows:
        parts.append(
            f"<h3>Drift: {_esc(metric)} on the training distribution → under drift</h3>"
            '<table data-table="summary"><thead><tr><th class="row">drift</th><th>train</th><th>test</th>'
            f"<th>change</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
            '<p class="muted">ISP: train = mean of the diagonal (test pipeline = train pipeline), test = mean '
            "off the diagonal. Common Corruptions: train = clean held-out views, test = mean over corruptions.</p>"
        )
    highlights = [
        (label, summary[key])
        for label, key in (
            ("metric", "metric"),
            ("cells (train pipeline × fold)", "cells"),
            ("folds", "folds"),
            ("best train pipeline", "best_train_pipeline"),
            ("results store", "results_store"),
        )
        if key in summary
    ]
    if highlights:
        values = [(label, ", ".join(map(str, v)) if isinstance(v, list) else v) for label, v in highlights]
        keys = [
            key
            for key in ("metric", "cells", "folds", "best_train_pipeline", "results_store")
            if key in summary
        ]
        parts.append(_kv_table(values, "summary", keys))
    flat = _flatten(summary)
    # Open where the mode has no drift table above to summarise it.
    parts.append(
        f"<details{'' if rows else ' open'}><summary>All values of summary.json</summary>"
        f"{_kv_table(flat, 'summary-json')}</details>"
    )
    return _section("summary", "Summary", "".join(parts))


def _synthesis_section(artifacts: _Artifacts, metric: str) -> str:
    matrix = artifacts.csv("synthesis/matrix.csv")
    matrix_std = artifacts.csv("synthesis/matrix_std.csv")
    corruptions = artifacts.csv("synthesis/corruptions.csv")
    corruptions_std = artifacts.csv("synthesis/corruptions_std.csv")
    ranking = artifacts.csv("synthesis/ranking.csv")
    best = artifacts.csv("synthesis/best_train_per_test.csv")
    parts = []
    frames = [f for f in (matrix, corruptions) if f is not None]
    if frames:
        values = np.concatenate(
            [f.apply(pd.to_numeric, errors="coerce").to_numpy(float).ravel() for f in frames]
        )
        finite = values[np.isfinite(values)]
        vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        parts.append(_legend(vmin, vmax, f"{metric} (mean over folds; colour scale shared by both tables)"))
    if matrix is not None:
        parts.append(
            f"<h3>Cross-pipeline matrix: {_esc(metric)}, train data model × test data model</h3>"
            '<p class="muted">Each cell: mean ± standard deviation over folds. Small digits rank the top three '
            "train pipelines per test pipeline, ★ marks the best; the outlined diagonal is train = test.</p>"
            + _matrix_table(matrix, matrix_std, "matrix", vmin, vmax, "train", "test")
        )
    if corruptions is not None:
        parts.append(
            f"<h3>Common Corruptions: {_esc(metric)}, train data model × corruption</h3>"
            '<p class="muted">"clean" is the train pipeline\'s own held-out views; each other column the same '
            "views under one corruption. Mean ± std over folds, ranks per column as above.</p>"
            + _matrix_table(corruptions, corruptions_std, "corruptions", vmin, vmax, "train", "corruption")
        )
    if ranking is not None:
        parts.append(
            "<h3>Ranking of train pipelines (average over test pipelines)</h3>"
            + _frame_table(ranking, "ranking", "train")
        )
    if best is not None:
        parts.append(
            "<h3>Best train pipeline per test pipeline</h3>"
            + _frame_table(best, "best_train_per_test", "test")
        )
    parts.append(
        artifacts.image(
            "synthesis/heatmap.png", "synthesis/heatmap.png: the same matrices as the paper's Fig. 4/5"
        )
    )
    body = "".join(p for p in parts if p)
    return _section("synthesis", "Drift synthesis", body) if body else ""


def _forensics_section(artifacts: _Artifacts) -> str:
    result = artifacts.json("forensics/result.json")
    parts = []
    if result is not None:
        before, after = result.get("metric_before"), result.get("metric_after")
        change = after - before if _is_number(before) and _is_number(after) else None
        metric = result.get("metric", "metric")
        target = result.get("target")
        if isinstance(result.get("groups"), list) and result["groups"] != [target]:
            target = f"{target} ({', '.join(map(str, result['groups']))})"
        rows = [
            ("λ (weight of ‖V − Ṽ‖²)", result.get("lambda"), "lambda"),
            ("target θ group(s)", target, "target"),
            ("regularizer", result.get("regularizer"), "regularizer"),
            ("metric", metric, "metric"),
            (f"{metric} before (θ_stat)", before, "metric_before"),
            (f"{metric} after (θ~)", after, "metric_after"),
            (f"{metric} change", change, "metric_change"),
            ("ℓ2 distance of the views, ‖V − Ṽ‖", result.get("l2"), "l2"),
            ("ℓ2 per pixel", result.get("l2_per_pixel"), "l2_per_pixel"),
            ("epochs", result.get("epochs"), "epochs"),
            ("plausible projection", result.get("plausible_projection"), "plausible_projection"),
        ]
        rows = [r for r in rows if r[1] is not None]
        parts.append(
            "<h3>Adversarial search over the data model (Eq. 9)</h3>"
            + _kv_table([(label, value) for label, value, _ in rows], "forensics", [key for *_, key in rows])
        )
        history = result.get("history")
        if isinstance(history, list) and history and all(isinstance(h, Mapping) for h in history):
            frame = pd.DataFrame(history)
            x = frame["epoch"] if "epoch" in frame else pd.Series(range(len(frame)))
            charts = [
                _svg_chart(
                    {column: (x, pd.to_numeric(frame[column], errors="coerce"))}, column, "epoch", column
                )
                for column in ("metric", "l2", "loss")
                if column in frame
            ]
            parts.append(
                '<h3>Forensic curves (held-out, after each epoch of the search)</h3><div class="charts">'
                + "".join(charts)
                + "</div>"
            )
        theta = _theta_table(result.get("theta_before"), result.get("theta_after"), "forensics-theta")
        if theta:
            parts.append("<h3>θ before and after the search</h3>" + theta)
    parts.append(
        artifacts.image("forensics/samples.png", "forensics/samples.png: default and adversarial views")
    )
    signature = artifacts.json("forensics/signature.json", expect=(dict, list))
    if signature is not None:
        parts.append("<h3>Forensic signature of the sweep</h3>" + _signature_view(signature))
    markdown = artifacts.text("forensics/signature.md")
    if markdown:
        parts.append("<details><summary>signature.md</summary>" + _pre(markdown) + "</details>")
    parts.append(artifacts.image("forensics/signature.png"))
    body = "".join(p for p in parts if p)
    return _section("forensics", "Drift forensics", body) if body else ""


def _signature_view(signature: object) -> str:
    """``assemble_signature``'s document: sensitivity ranking, curves over λ, limitations of use."""
    if not isinstance(signature, Mapping) or not isinstance(signature.get("targets"), Mapping):
        return _json_view(signature, "signature")
    metric = signature.get("metric", "metric")
    parts = []
    sensitivity = signature.get("sensitivity") or {}
    ranking = signature.get("ranking") or sorted(sensitivity, key=lambda t: -sensitivity[t])
    if ranking:
        rows = "".join(
            f'<tr><td class="num">{rank}</td><th class="row">{_esc(target)}</th>'
            f"{_number_cell(sensitivity.get(target), data_table='signature-sensitivity', data_row=target)}</tr>"
            for rank, target in enumerate(ranking, start=1)
        )
        parts.append(
            f"<h3>Sensitivity: {_esc(metric)} drop per unit ℓ2 (higher is more dangerous)</h3>"
            '<table data-table="signature-sensitivity"><thead><tr><th>rank</th><th class="row">θ group</th>'
            f"<th>drop per unit ℓ2</th></tr></thead><tbody>{rows}</tbody></table>"
        )
    records = [
        {"target": target, **run}
        for target, runs in signature["targets"].items()
        if isinstance(runs, list)
        for run in runs
        if isinstance(run, Mapping)
    ]
    if records:
        frame = pd.DataFrame(records)
        frame.index = [f"{r['target']} λ={_fmt(r.get('lambda'), 4)}" for r in records]
        parts.append(
            f"<h3>{_esc(metric)} and ℓ2 against λ</h3>"
            + _frame_table(frame.drop(columns="target"), "signature-curves", "run")
        )
        charts = []
        for column, label in (("metric_after", f"{metric} after"), ("l2", "ℓ2")):
            if column not in frame or "lambda" not in frame:
                continue
            series = {}
            for target, runs in frame.groupby("target", sort=False):
                lam = pd.to_numeric(runs["lambda"], errors="coerce").to_numpy(float)
                keep = lam > 0
                series[str(target)] = (
                    np.log10(lam[keep]),
                    pd.to_numeric(runs[column], errors="coerce")[keep],
                )
            charts.append(_svg_chart(series, f"{label} against λ", "log10 λ", label))
        parts.append('<div class="charts">' + "".join(charts) + "</div>")
    limits = signature.get("limitations_of_use")
    if isinstance(limits, Mapping) and limits:
        rows = []
        for target, limit in limits.items():
            if not isinstance(limit, Mapping):
                continue
            rows.append(
                f'<tr><th class="row">{_esc(target)}</th>'
                + "".join(
                    f"<td><pre>{_esc(_array_text(limit.get(key)))}</pre></td>"
                    for key in ("theta_stat", "safe_min", "safe_max")
                )
                + "".join(
                    _number_cell(limit.get(key), data_table="signature-limits", data_row=target, data_col=key)
                    for key in (
                        "largest_safe_change",
                        "smallest_unsafe_change",
                        "worst_metric",
                        "clean_metric",
                    )
                )
                + "</tr>"
            )
        tolerance = signature.get("tolerance")
        parts.append(
            f"<h3>Limitations of use: ranges within which {_esc(metric)} stayed within "
            f"{_esc(_fmt(tolerance))} of the clean value</h3>"
            '<div class="scroll"><table data-table="signature-limits"><thead><tr><th class="row">θ group</th>'
            "<th>θ_stat</th><th>safe min</th><th>safe max</th><th>largest safe change</th>"
            f"<th>smallest unsafe change</th><th>worst {_esc(metric)}</th><th>clean {_esc(metric)}</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>"
        )
    return "".join(parts)


def _optimization_section(artifacts: _Artifacts, summary: Mapping) -> str:
    parts = []
    # ``table2`` as the optimization mode writes it; ``settings`` as an older summary did.
    settings = summary.get("table2", summary.get("settings"))
    metric = summary.get("metric", "metric")
    if isinstance(settings, Mapping) and settings:
        settings = {k: v if isinstance(v, Mapping) else {"mean": v} for k, v in settings.items()}
        means = {name: s["mean"] for name, s in settings.items() if _is_number(s.get("mean"))}
        best = max(means, key=means.get) if means else None
        has_final = any("final_mean" in s for s in settings.values())
        rows = []
        for name, values in settings.items():
            cells = []
            for key, spread in (("mean", "std"), *((("final_mean", "final_std"),) if has_final else ())):
                mean, std = values.get(key), values.get(spread)
                text = _fmt(mean) + (f" ± {_fmt(std)}" if _is_number(std) else "")
                if name == best and key == "mean":
                    text = "★ " + text
                attributes = _attributes(
                    class_="num best" if name == best and key == "mean" else "num",
                    data_table="optimization-summary",
                    data_row=name,
                    data_col=key,
                    data_value=_number_attribute(mean) if _is_number(mean) else None,
                    data_std=_number_attribute(std) if _is_number(std) else None,
                )
                cells.append(f"<td{attributes}>{_esc(text)}</td>")
            extra = "".join(
                f'<td class="num">{_esc(_fmt(values.get(k)))}</td>' for k in ("folds", "points") if has_final
            )
            rows.append(f'<tr><th class="row">{_esc(name)}</th>{"".join(cells)}{extra}</tr>')
        head = f"<th>{_esc(metric)} over steps and folds</th>"
        if has_final:
            head += f"<th>final {_esc(metric)} over folds</th><th>folds</th><th>points</th>"
        parts.append(
            f"<h3>Table 2: validation {_esc(metric)} per setting (mean ± std)</h3>"
            f'<table data-table="optimization-summary"><thead><tr><th class="row">setting</th>{head}'
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )
    history = artifacts.csv("optimization/history.csv", index=False, required=("step", "setting", "metric"))
    if history is not None:
        curves = history.groupby(["setting", "step"], sort=True)["metric"].mean()
        series = {
            str(setting): (curve.index.get_level_values("step"), curve.to_numpy(float))
            for setting, curve in curves.groupby(level="setting")
        }
        folds = history["fold"].nunique() if "fold" in history else 1
        parts.append(
            f"<h3>Optimization curves (validation {_esc(metric)}, mean over {folds} fold(s))</h3>"
            + _svg_chart(series, f"validation {metric}", "step", str(metric), width=620, height=300)
        )
    parts.append(artifacts.image("optimization/curves.png"))
    theta = artifacts.json("optimization/theta.json")
    if theta is not None:
        table = _theta_table(None, theta.get("theta", theta), "optimization-theta")
        if table:
            parts.append("<h3>Learned θ (first fold)</h3>" + table)
    comparison = artifacts.csv("optimization/comparison.csv")
    if comparison is not None:
        parts.append("<h3>Comparison over the sweep</h3>" + _frame_table(comparison, "comparison"))
    parts.append(artifacts.image("optimization/comparison.png"))
    parts.append(
        artifacts.image("optimization/samples.png", "optimization/samples.png: frozen and learned views")
    )
    body = "".join(p for p in parts if p)
    return _section("optimization", "Drift optimization", body) if body else ""


def _calibration_section(artifacts: _Artifacts) -> str:
    parts = []
    fit = artifacts.json("calibrate/fit.json")
    if fit is not None:
        rows = [(key, fit[key]) for key in ("variant", "tone_curve") if key in fit]
        metrics = fit.get("metrics")
        if isinstance(metrics, Mapping):
            rows += [(key, value) for key, value in metrics.items() if not isinstance(value, (Mapping, list))]
        for key in ("train_pairs", "heldout_pairs"):
            if isinstance(fit.get(key), list):
                rows.append((f"{key} (count)", len(fit[key])))
        known = {"variant", "tone_curve", "metrics", "train_pairs", "heldout_pairs", "theta", "camera",
                 "initial_camera", "variants", "settings", "effective_colour_matrix"}  # fmt: skip
        rows += [(k, v) for k, v in fit.items() if k not in known and not isinstance(v, (Mapping, list))]
        parts.append("<h3>Fit</h3>" + _kv_table(rows, "calibration-fit"))
        camera, initial = fit.get("camera"), fit.get("initial_camera")
        if isinstance(camera, Mapping):
            keys = [k for k in camera if k != "name"]
            body = "".join(
                f'<tr><th class="row">{_esc(k)}</th>'
                f"<td><pre>{_esc(_array_text(initial.get(k)) if isinstance(initial, Mapping) else '–')}</pre></td>"
                f"<td><pre>{_esc(_array_text(camera.get(k)))}</pre></td></tr>"
                for k in keys
            )
            parts.append(
                "<h3>Camera parameters</h3>"
                '<table data-table="calibration-camera"><thead><tr><th class="row">parameter</th><th>initial</th>'
                f"<th>fitted</th></tr></thead><tbody>{body}</tbody></table>"
            )
        theta = _theta_table(None, fit.get("theta"), "calibration-theta")
        if theta:
            parts.append("<h3>Fitted θ</h3>" + theta)
        if "effective_colour_matrix" in fit:
            parts.append(
                "<h3>Effective colour matrix</h3>" + _pre(_array_text(fit["effective_colour_matrix"]))
            )
        if isinstance(fit.get("settings"), Mapping):
            parts.append(
                "<details><summary>Fit settings</summary>"
                + _kv_table(_flatten(fit["settings"]), "calibration-settings")
                + "</details>"
            )
    variants = artifacts.csv("calibrate/variants.csv")
    if variants is not None:
        parts.append("<h3>Pipeline variants</h3>" + _frame_table(variants, "calibration-variants"))
    parts.append(artifacts.image("calibrate/residuals.png"))
    body = "".join(p for p in parts if p)
    return _section("calibration", "Calibration", body) if body else ""


def _stages_section(artifacts: _Artifacts) -> str:
    figure = artifacts.image(
        "stages.png", "stages.png: raw → black level → demosaic → … → gamma, one row per image (paper Fig. 1)"
    )
    return _section("stages", "Data model, stage by stage", figure) if figure else ""


def _other_figures_section(artifacts: _Artifacts) -> str:
    folders = [artifacts.directory, *(artifacts.directory / f for f in ARTIFACT_FOLDERS)]
    pngs = [p for folder in folders if folder.is_dir() for p in sorted(folder.glob("*.png"))]
    figures = "".join(artifacts.image(p) for p in pngs if p.resolve() not in artifacts.embedded)
    return _section("figures", "Other figures", figures) if figures else ""


def _provenance_section(artifacts: _Artifacts) -> str:
    run = artifacts.json("run.json")
    config = artifacts.text("config.yaml")
    if run is None and config is None:
        return ""
    parts = []
    if run is not None:
        keys = (
            "seed",
            "git_commit",
            "command",
            "started",
            "python",
            "platform",
            "mlflow_run_id",
            "tracking_uri",
        )
        rows = [(key, run[key]) for key in keys if key in run]
        parts.append(_kv_table(rows, "provenance"))
        packages = run.get("packages")
        if isinstance(packages, Mapping) and packages:
            parts.append(
                "<h3>Package versions</h3>"
                + _kv_table(
                    [(k, v if v is not None else "not installed") for k, v in packages.items()], "packages"
                )
            )
        if config is None and isinstance(run.get("config"), Mapping):
            parts.append("<h3>Resolved config (run.json)</h3>" + _pre(json.dumps(run["config"], indent=2)))
    if config is not None:
        parts.append("<h3>config.yaml</h3>" + _pre(config))
    return (
        '<section id="provenance"><h2>Provenance</h2><details><summary>Seed, git commit, package versions, '
        f"command and config</summary>{''.join(parts)}</details></section>"
    )


# -- the page ----------------------------------------------------------------------------------
def _infer_mode(directory: Path, summary: Mapping | None) -> str | None:
    if summary and isinstance(summary.get("mode"), str):
        return summary["mode"]
    for folder in ("synthesis", "forensics", "optimization"):
        if (directory / folder).is_dir():
            return folder
    if (directory / "calibrate").is_dir():
        return "calibrate"
    return None


def render_report(directory: str | Path, title: str | None = None) -> str:
    """The report page of ``directory`` as an HTML string (see ``write_report``)."""
    directory = Path(directory)
    artifacts = _Artifacts(directory)
    summary = artifacts.json("summary.json")
    if summary is None and not (directory / "summary.json").exists():
        artifacts.notes.append("summary.json is missing: the run may not have finished.")
    mode = _infer_mode(directory, summary)
    metric = str((summary or {}).get("metric", "metric"))
    sections = [
        artifacts.guarded("summary", lambda: _summary_section(summary, artifacts)) if summary else "",
        artifacts.guarded("stage figure", lambda: _stages_section(artifacts)),
        artifacts.guarded("synthesis section", lambda: _synthesis_section(artifacts, metric)),
        artifacts.guarded("forensics section", lambda: _forensics_section(artifacts)),
        artifacts.guarded("optimization section", lambda: _optimization_section(artifacts, summary or {})),
        artifacts.guarded("calibration section", lambda: _calibration_section(artifacts)),
        artifacts.guarded("other figures", lambda: _other_figures_section(artifacts)),
        artifacts.guarded("provenance", lambda: _provenance_section(artifacts)),
    ]
    sections = [s for s in sections if s]
    title = title or f"raw2logit {mode or 'run'} report: {directory.resolve().name}"
    anchors = [
        (anchor, label)
        for anchor, label in (
            ("summary", "Summary"),
            ("stages", "Stages"),
            ("synthesis", "Synthesis"),
            ("forensics", "Forensics"),
            ("optimization", "Optimization"),
            ("calibration", "Calibration"),
            ("figures", "Figures"),
            ("provenance", "Provenance"),
        )
        if any(s.startswith(f'<section id="{anchor}"') for s in sections)
    ]
    navigation = "".join(f'<a href="#{a}">{_esc(label)}</a>' for a, label in anchors)
    notes = ""
    if artifacts.notes:
        items = "".join(f"<li>{_esc(n)}</li>" for n in artifacts.notes)
        notes = f'<div class="notes" id="notes"><strong>Notes</strong><ul>{items}</ul></div>'
    if not sections:
        sections = ['<p class="muted">No artifacts found in this directory.</p>']
    generated = time.strftime("%Y-%m-%d %H:%M:%S %z")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_esc(CONTENT_SECURITY_POLICY)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generator" content="raw2logit.report.html"><title>{_esc(title)}</title>'
        f"<style>{CSS}</style></head>\n"
        f'<body data-mode="{_esc(mode or "")}"><header><h1>{_esc(title)}</h1>'
        f'<p class="meta">mode: {_esc(mode or "unknown")} · directory: {_esc(directory.resolve())} · '
        f"report written {_esc(generated)}</p><nav>{navigation}</nav></header>\n"
        f"{notes}\n" + "\n".join(sections) + "\n</body></html>\n"
    )


def write_report(directory: str | Path, title: str | None = None) -> Path:
    """Write ``directory/report.html``, a self-contained page of the artifacts found there.

    Shows what is present and leaves out what is not: the summary numbers, the stage-by-stage
    figure, the synthesis matrix and corruption table (mean ± std, ranks, colours), ranking,
    forensics result, curves, θ and signature, optimization Table-2 summary and curves,
    calibration, other figures, and the provenance (seed, commit, packages, command). Images are
    embedded as data: URIs; the page makes no request. A malformed artifact is skipped with a
    note in the page.

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
