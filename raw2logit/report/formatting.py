"""Numbers and arrays as the report shows them: rounded for people, full precision for machines."""

from __future__ import annotations

import math

import numpy as np


def is_number(value: object) -> bool:
    """True for ints and floats (numpy's included), False for bools and anything else."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def number_attribute(value: float) -> str:
    """The value for a ``data-value`` attribute: 10 significant digits, ``"NaN"`` for NaN."""
    value = float(value)
    return "NaN" if math.isnan(value) else format(value, ".10g")


def fmt(value: object, digits: int = 4) -> str:
    """A value for people: fixed decimals for moderate numbers, significant digits for very large or
    small ones, ``–`` for None and NaN; anything else as ``str``."""
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


def numeric(value: object) -> np.ndarray | None:
    """``value`` as a float array, or None if it is not numbers (e.g. θ's ``pattern``)."""
    try:
        return np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        return None


def array_text(value: object) -> str:
    """An array (nested lists) as numpy prints it with 4 decimals; ``–`` for None; text as is."""
    if value is None:
        return "–"
    array = numeric(value)
    if array is None:
        return str(value)
    return np.array2string(array, precision=4, suppress_small=True, max_line_width=72)


def shape_text(value: object) -> str:
    """The array shape of ``value`` as text (``(3, 3)``), ``–`` if it is not numbers."""
    array = numeric(value)
    return "–" if array is None else str(array.shape)
