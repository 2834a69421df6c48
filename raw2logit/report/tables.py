"""Tables of the report as plain data for the templates' ``table`` macro.

Every number sits in a cell with machine-readable attributes: ``data-table`` (which table),
``data-row``/``data-col`` or ``data-key`` (where), ``data-value`` (10 significant digits), and for
matrices ``data-std`` and ``data-rank``. The templates only lay these out.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from raw2logit.report.formatting import array_text, fmt, is_number, number_attribute, numeric, shape_text


@dataclass
class Cell:
    """One ``<td>`` or ``<th>``: its text, its HTML attributes, and how the text is shown."""

    text: str
    attrs: dict[str, str] = field(default_factory=dict)
    tag: str = "td"
    pre: bool = False  # arrays keep their line breaks
    parts: tuple[tuple[str, str], ...] = ()  # (css class, text) spans, for matrix cells


@dataclass
class Table:
    """A table: ``name`` is its ``data-table``; ``head`` may be empty (key/value tables)."""

    name: str
    rows: list[list[Cell]]
    head: list[Cell] = field(default_factory=list)
    css: str | None = None


def attributes(**values: object) -> dict[str, str]:
    """``data_row="x"`` -> ``{"data-row": "x"}``; ``class_`` -> ``class``; None values left out."""
    return {
        key.rstrip("_").replace("_", "-"): str(value) for key, value in values.items() if value is not None
    }


def heading(text: object, row: bool = False) -> Cell:
    """A ``<th>``; ``row`` for a row's label (left-aligned)."""
    return Cell(str(text), attributes(class_="row" if row else None), tag="th")


def number_cell(value: object, digits: int = 4, **attrs: object) -> Cell:
    """A scalar's cell: numbers carry ``data-value``; anything else is shown as text."""
    if is_number(value):
        return Cell(fmt(value, digits), attributes(class_="num", data_value=number_attribute(value), **attrs))
    return Cell(fmt(value), attributes(class_="text", **attrs))


def array_cell(value: object, **attrs: object) -> Cell:
    """An array (θ, a colour matrix) as numpy prints it (4 decimals), line breaks kept."""
    return Cell(array_text(value), attributes(class_="array", **attrs), pre=True)


def kv_table(rows: Sequence[tuple[str, object]], name: str, keys: Sequence[str] | None = None) -> Table:
    """Two columns, label and value; ``keys`` gives each row's ``data-key`` (default: the label)."""
    body = []
    for number, (label, value) in enumerate(rows):
        key = keys[number] if keys is not None else label
        body.append([Cell(str(label)), number_cell(value, data_table=name, data_key=key)])
    return Table(name, body, css="kv")


def frame_table(frame: pd.DataFrame, name: str, index_name: str | None = None, digits: int = 4) -> Table:
    """Any data frame; a non-default index becomes the row labels (``data-row``)."""
    index_name = index_name if index_name is not None else (frame.index.name or "")
    show_index = not isinstance(frame.index, pd.RangeIndex)
    head = ([heading(index_name, row=True)] if show_index else []) + [heading(c) for c in frame.columns]
    # Column by column (not iterrows, which turns an int column of a mixed row into floats).
    columns = {column: frame[column].tolist() for column in frame.columns}
    rows = []
    for number, label in enumerate(frame.index):
        row = [heading(label, row=True)] if show_index else []
        for column, values in columns.items():
            row.append(number_cell(values[number], digits, data_table=name, data_row=label, data_col=column))
        rows.append(row)
    return Table(name, rows, head)


# -- coloured matrices ------------------------------------------------------------------------------
def colour(value: float, vmin: float, vmax: float) -> tuple[str, str]:
    """Viridis background for ``value`` on [vmin, vmax], and a text colour readable on it."""
    from matplotlib import colormaps

    if math.isnan(value):
        return "#ffffff", "#1d2430"
    shade = (value - vmin) / (vmax - vmin) if vmax > vmin else 0.5
    shade = min(max(shade, 0.0), 1.0)
    red, green, blue, _ = colormaps["viridis"](shade)
    background = f"#{round(red * 255):02x}{round(green * 255):02x}{round(blue * 255):02x}"
    return background, "#ffffff" if shade < 0.45 else "#111111"


def legend(vmin: float, vmax: float, label: str) -> dict[str, str]:
    """The colour scale of the matrices: its ends, its label and a CSS gradient."""
    from matplotlib import colormaps

    stops = ", ".join(
        "#{:02x}{:02x}{:02x}".format(*(round(c * 255) for c in colormaps["viridis"](s)[:3]))
        for s in np.linspace(0, 1, 9)
    )
    return {"low": fmt(vmin, 3), "high": fmt(vmax, 3), "label": label,
            "style": f"background: linear-gradient(to right, {stops})"}  # fmt: skip


def matrix_table(mean: pd.DataFrame, std: pd.DataFrame | None, name: str, vmin: float, vmax: float,
                 row_label: str, column_label: str) -> Table:  # fmt: skip
    """Mean ± std per cell, coloured by value; per column the top three rows ranked, a star on the best;
    the diagonal (row = column) outlined."""
    mean = mean.apply(pd.to_numeric, errors="coerce")
    if std is not None:
        std = std.apply(pd.to_numeric, errors="coerce").reindex(index=mean.index, columns=mean.columns)
    ranks = mean.rank(axis=0, ascending=False, method="min")
    head = [heading(f"{row_label} ↓ / {column_label} →", row=True)]
    head += [Cell(str(c), attributes(class_="col"), tag="th") for c in mean.columns]
    rows = []
    for train in mean.index:
        row = [heading(train, row=True)]
        for test in mean.columns:
            value = float(mean.loc[train, test])
            spread = float(std.loc[train, test]) if std is not None else math.nan
            rank = ranks.loc[train, test]
            rank = None if pd.isna(rank) else int(rank)
            background, foreground = colour(value, vmin, vmax)
            text = "–" if math.isnan(value) else f"{value:.3f}"
            parts = [("v", "★" + text if rank == 1 else text)]
            if not math.isnan(spread):
                parts.append(("sd", f"±{spread:.3f}"))
            if rank is not None and rank <= 3:
                parts.append(("rank", str(rank)))
            tooltip = f"train {train} → {column_label} {test}: {fmt(value)}"
            tooltip += f" ± {fmt(spread)}" if not math.isnan(spread) else ""
            tooltip += f" (rank {rank} in column)" if rank is not None else ""
            attrs = attributes(
                class_="cell diagonal" if train == test else "cell",
                style=f"background:{background};color:{foreground}",
                title=tooltip,
                data_table=name,
                data_row=train,
                data_col=test,
                data_value=number_attribute(value),
                data_std=None if math.isnan(spread) else number_attribute(spread),
                data_rank=rank,
            )
            row.append(Cell(text, attrs, parts=tuple(parts)))
        rows.append(row)
    return Table(name, rows, head, css="matrix")


def shared_range(frames: Sequence[pd.DataFrame]) -> tuple[float, float]:
    """(min, max) of the finite numbers of all ``frames`` (one colour scale for all); (0, 1) if none."""
    values = np.concatenate([f.apply(pd.to_numeric, errors="coerce").to_numpy(float).ravel() for f in frames])
    finite = values[np.isfinite(values)]
    return (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)


# -- θ (data model parameters) ------------------------------------------------------------------
def theta_table(before: Mapping | None, after: Mapping | None, name: str) -> Table | None:
    """θ group by group: shape, values before and after and the largest change; with ``before`` None,
    θ alone. None if ``after`` is not a mapping (or ``before`` is given and is not one)."""
    if not isinstance(after, Mapping) or (before is not None and not isinstance(before, Mapping)):
        return None
    rows = []
    for group in dict.fromkeys([*(before or {}), *after]):
        new = after.get(group)
        row = [heading(group, row=True), Cell(shape_text(new), attributes(class_="text"))]
        if before is not None:
            old = before.get(group)
            old_array, new_array = numeric(old), numeric(new)
            change = Cell("")
            if old_array is not None and new_array is not None and old_array.shape == new_array.shape:
                delta = float(np.max(np.abs(new_array - old_array), initial=0.0))
                change = number_cell(delta, data_table=name, data_row=group, data_col="max_abs_change")
            row += [array_cell(old, data_table=name, data_row=group, data_col="theta_before"),
                    array_cell(new, data_table=name, data_row=group, data_col="theta_after"), change]  # fmt: skip
        else:
            row.append(array_cell(new, data_table=name, data_row=group, data_col="theta"))
        rows.append(row)
    if not rows:
        return None
    titles = ["group", "shape", *(("θ before", "θ after", "max |Δ|") if before is not None else ("θ",))]
    return Table(name, rows, [heading(t) for t in titles])


# -- any JSON document ------------------------------------------------------------------------------
def flatten(value: object, prefix: str = "") -> list[tuple[str, object]]:
    """Nested mappings -> (dotted key, leaf) pairs; a list of scalars is one leaf, joined by commas."""
    if isinstance(value, Mapping):
        items = []
        for key, inner in value.items():
            items.extend(flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return items
    if isinstance(value, list) and not all(is_number(v) or isinstance(v, str) for v in value):
        return [(prefix, json.dumps(value)[:300])]
    if isinstance(value, list):
        return [(prefix, ", ".join(fmt(v) for v in value))]
    return [(prefix, value)]


def json_view(value: object, name: str) -> list[tuple[str, object]]:
    """A JSON document as blocks for the ``blocks`` macro: ``("table", Table)`` where it has a tabular
    shape, ``("heading", text)`` before each nested part, ``("pre", text)`` otherwise."""
    if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        try:
            return [("table", frame_table(pd.DataFrame(value), name))]
        except Exception:
            return [("pre", json.dumps(value, indent=2))]
    if isinstance(value, Mapping):
        scalars = [(k, v) for k, v in value.items() if not isinstance(v, (Mapping, list))]
        blocks: list[tuple[str, object]] = [("table", kv_table(scalars, name))] if scalars else []
        for key, inner in value.items():
            if isinstance(inner, (Mapping, list)):
                blocks.append(("heading", str(key)))
                blocks.extend(json_view(inner, f"{name}.{key}"))
        return blocks
    if isinstance(value, list):
        return [("pre", json.dumps(value, indent=2))]
    return [("table", kv_table([("value", value)], name))]
