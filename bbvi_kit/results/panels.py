"""How a diagnostic's CSV is drawn, whatever the diagnostic: which columns get a panel, which are
constants, which numbered columns share one (:func:`plan_panels`). No drawing here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from bbvi_kit.results.table import Table, finite

__all__ = ["BOOKKEEPING", "FAMILY_MIN", "MAX_PANELS", "SE_BAND", "Panel", "family_index", "plan_panels"]

BOOKKEEPING = ("step", "epoch", "block_start", "block_end", "time")
"""Columns of a diagnostic's CSV that say where and when, not what was measured."""

SE_BAND = 2.0
"""Half-width of the shaded band around a column with a ``_se`` companion, in standard errors."""


@dataclass
class Panel:
    """One panel of a diagnostic figure: a value column (or a family of numbered columns), its
    ``_se`` companion if any, and whether its y axis is logarithmic.

    ``members`` lists the columns of a family ``prefix_0, prefix_1, ...`` drawn together as thin
    lines (``column`` is then ``prefix_<j>``); it is empty for a single column."""

    column: str
    se: str | None
    log: bool
    members: list[str] = field(default_factory=list)


MAX_PANELS = 12
"""A diagnostic figure draws at most this many panels; the caption names the columns left out."""

FAMILY_MIN = 3
"""Columns ``prefix_0``, ``prefix_1``, ... (at least this many) share one panel."""

_FAMILY = re.compile(r"(.+)_(\d+)")
# the same value measured at several K (snr with num_particles: [...]): X_K1, X_K4, ...
_K_FAMILY = re.compile(r"(.+)_K(\d+)")


def family_index(column: str) -> int:
    """The number ending a family column: j of ``prefix_<j>``, k of ``X_K<k>``."""
    return int(re.sub(r"^.*\D", "", column))


def plan_panels(tables: Sequence[Table]) -> tuple[list[Panel], dict[str, float]]:
    """The panels a diagnostic figure draws for these CSVs (one per run), and its constants.

    Every column except ``step``, ``epoch``, ``time`` and the ``X_se`` companions of a column
    ``X`` gets a panel, in file order, unless it has no finite value or holds one value in every
    row of every table (at least two rows in all): then it is a constant, named in the caption.
    Numbered columns ``prefix_0, prefix_1, ...`` (at least :data:`FAMILY_MIN`, e.g. the per-unit
    ``au_z_<j>`` of posterior_collapse) share one panel, ``prefix_<j>``; so do the columns
    ``X_K<k>`` of one value measured at several K (at least two; ``snr`` with ``num_particles``),
    as ``X_K<k>``. A panel is logarithmic
    when all its finite values are positive and max / min > 10.
    """
    columns: list[str] = []
    for t in tables:
        columns.extend(c for c in t.columns if c not in columns)
    total_rows = sum(len(t) for t in tables)

    def values_of(cs: Sequence[str]) -> np.ndarray:
        arrays = [t.column(c) for t in tables for c in cs if c in t.columns]
        return finite(np.concatenate(arrays)) if arrays else np.array([])

    def log_scale(values: np.ndarray) -> bool:
        return bool(np.all(values > 0) and values.max() / values.min() > 10)

    families: dict[str, list[str]] = {}
    for c in columns:
        match = _K_FAMILY.fullmatch(c) or _FAMILY.fullmatch(c)
        if match and c not in BOOKKEEPING:
            prefix = f"{match.group(1)}_K" if match.re is _K_FAMILY else match.group(1)
            families.setdefault(prefix, []).append(c)
    families = {p: sorted(m, key=family_index) for p, m in families.items()
                if len(m) >= (2 if p.endswith("_K") and _K_FAMILY.fullmatch(m[0]) else FAMILY_MIN)}
    in_family = {c: p for p, m in families.items() for c in m}

    panels: list[Panel] = []
    constants: dict[str, float] = {}
    done: set[str] = set()
    for c in columns:
        if c in BOOKKEEPING or (c.endswith("_se") and c[:-3] in columns):
            continue
        if c in in_family:
            prefix = in_family[c]
            if prefix not in done:
                done.add(prefix)
                values = values_of(families[prefix])
                if len(values):
                    name = f"{prefix}<k>" if _K_FAMILY.fullmatch(families[prefix][0]) else f"{prefix}_<j>"
                    panels.append(Panel(name, None, log_scale(values), families[prefix]))
            continue
        values = values_of([c])
        if not len(values):
            continue
        if total_rows >= 2 and np.all(values == values[0]) and all(
                np.all(np.isfinite(t.column(c))) for t in tables if c in t.columns):
            constants[c] = float(values[0])
            continue
        se = f"{c}_se" if f"{c}_se" in columns else None
        panels.append(Panel(c, se, log_scale(values)))
    return panels, constants
