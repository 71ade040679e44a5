"""Curves over seeds: the mean, minimum and maximum at the x values every seed shares (:class:`Band`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["Band", "MAX_POINTS", "aggregate"]

MAX_POINTS = 2000
"""Per-iteration curves with more points are thinned for drawing (never for means or fits)."""


@dataclass
class Band:
    """Mean and range over seeds at the x values common to every seed.

    ``mean[i]``, ``lo[i]``, ``hi[i]`` are the mean, minimum and maximum over the ``n`` curves at
    ``x[i]``.
    """

    x: np.ndarray
    mean: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    n: int

    def __len__(self) -> int:
        return len(self.x)

    def thinned(self, max_points: int = MAX_POINTS, log_x: bool = False) -> "Band":
        """At most about ``max_points`` of the points (evenly spaced in log x if ``log_x``), the
        first and last kept; for drawing only."""
        size = len(self.x)
        if size <= max_points:
            return self
        if log_x:
            idx = np.unique(np.geomspace(1, size, max_points).round().astype(int) - 1)
        else:
            idx = np.unique(np.linspace(0, size - 1, max_points).round().astype(int))
        return Band(self.x[idx], self.mean[idx], self.lo[idx], self.hi[idx], self.n)


def aggregate(curves: Sequence[tuple[ArrayLike, ArrayLike]]) -> Band:
    """Mean, minimum and maximum over seeds of curves ``(x, y)``, at the x values all share.

    For seeds of different lengths (a failed or still running seed) the common x values are the
    common prefix; a single curve gives ``lo == mean == hi``.
    """
    if not curves:
        return Band(np.array([]), np.array([]), np.array([]), np.array([]), 0)
    arrays = [(np.asarray(x, dtype=float), np.asarray(y, dtype=float)) for x, y in curves]
    common = arrays[0][0]
    for x, _ in arrays[1:]:
        common = np.intersect1d(common, x)
    common = np.unique(common)
    stacked = np.empty((len(arrays), len(common)))
    for i, (x, y) in enumerate(arrays):
        order = np.argsort(x, kind="stable")
        pos = np.searchsorted(x[order], common)
        stacked[i] = y[order][pos]
    return Band(common, stacked.mean(axis=0), stacked.min(axis=0), stacked.max(axis=0), len(arrays))
