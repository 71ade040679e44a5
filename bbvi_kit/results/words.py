"""Numbers and messages as the findings and tables write them: significant digits, integers
plainly, a missing value as a dash, an error message on one line."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["first_line", "num", "one_line", "short", "to_float"]


def num(value: Any, digits: int = 6) -> str:
    """``value`` with ``digits`` significant digits; integers plainly; missing or NaN as '—'."""
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(v):
        return "—"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return f"{v:.{digits}g}"


def short(value: Any) -> str:
    """3 significant digits, for sentences."""
    return num(value, 3)


def one_line(text: Any, limit: int = 300) -> str:
    """``text`` with its white space collapsed, cut at ``limit`` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def first_line(text: Any, limit: int = 300) -> str:
    """The first non-empty line of an error message (Pyro appends trace shapes below it)."""
    lines = [line for line in str(text).splitlines() if line.strip()]
    return one_line(lines[0] if lines else "", limit)


def to_float(value: Any) -> float:
    """``float(value)``, NaN for what is not a number (a ``summary.csv`` cell)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
