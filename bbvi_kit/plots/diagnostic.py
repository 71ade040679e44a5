"""The report's generic figure of a diagnostic: every value column against the iteration n, one
panel each as :func:`bbvi_kit.results.plan_panels` plans them, one colour per series (a run, or
a sweep point with its seeds), so a new diagnostic plugin is drawn without code changes."""

from __future__ import annotations

import io
from typing import Any, Sequence

import matplotlib
import numpy as np

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from bbvi_kit.results.bands import aggregate  # noqa: E402
from bbvi_kit.results.panels import MAX_PANELS, SE_BAND, Panel, family_index, plan_panels  # noqa: E402
from bbvi_kit.results.table import Table, finite  # noqa: E402

__all__ = ["diagnostic_figure", "png"]


def png(fig: Figure, dpi: int = 110) -> bytes:
    """``fig`` as PNG bytes (no Software metadata), drawn at ``dpi``."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()


def _sorted_xy(table: Table, column: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = table.column("step"), table.column(column)
    order = np.argsort(x, kind="stable")
    return x[order], y[order]


def _curve(tables: Sequence[Table], column: str) -> tuple[np.ndarray, np.ndarray, int]:
    """One run's column, or the mean over runs at their common steps; and how many runs."""
    curves = [_sorted_xy(t, column) for t in tables if len(t) and column in t.columns]
    if not curves:
        return np.array([]), np.array([]), 0
    if len(curves) == 1:
        return curves[0][0], curves[0][1], 1
    band = aggregate(curves)
    return band.x, band.mean, len(curves)


def diagnostic_figure(
    name: str, series: Sequence[tuple[str, Any, Sequence[Table]]]
) -> tuple[bytes | None, list[Panel], dict[str, float]]:
    """Draw diagnostic ``name`` for ``series`` = [(label, colour, tables of its runs)], one colour
    per series: the PNG (``None`` when nothing can be drawn), the panels drawn (at most
    :data:`MAX_PANELS`; :func:`plan_panels` gives them all) and the constants.

    A series of one run draws the column, shaded ± :data:`SE_BAND` × ``X_se`` when it has one; a
    series of several runs draws the mean over runs at their common steps, bold, and the min–max
    over runs shaded. A family panel draws every member as a thin line (one run: coloured by
    index j; several series: in the series' colour; several runs: their mean).
    """
    tables = [t for _, _, ts in series for t in ts if len(t)]
    panels, constants = plan_panels(tables)
    panels = panels[:MAX_PANELS]
    if not panels:
        return None, panels, constants
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    legend = len(series) > 1
    fig = Figure(figsize=(4.4 * ncols, 3.2 * nrows + (0.5 if legend else 0) + 0.4), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, panel in zip(axes, panels):
        for _label, colour, runs in series:
            if panel.members:
                shades = matplotlib.colormaps["viridis"](np.linspace(0, 0.9, len(panel.members)))
                for j, member in enumerate(panel.members):
                    x, y, _ = _curve(runs, member)
                    if len(x):
                        ax.plot(x, y, color=colour if legend else shades[j], lw=0.9, alpha=0.6 if legend else 0.85)
                continue
            curves = [t for t in runs if len(t) and panel.column in t.columns]
            if not curves:
                continue
            lo = hi = None
            if len(curves) == 1:
                x, y = _sorted_xy(curves[0], panel.column)
                if panel.se is not None and panel.se in curves[0].columns:
                    _, se = _sorted_xy(curves[0], panel.se)
                    lo, hi = y - SE_BAND * se, y + SE_BAND * se
            else:
                band = aggregate([_sorted_xy(t, panel.column) for t in curves])
                x, y, lo, hi = band.x, band.mean, band.lo, band.hi
            style = {"marker": "o", "markersize": 3.5} if len(x) <= 30 else {}
            ax.plot(x, y, color=colour, lw=2.0, **style)
            if lo is not None and hi is not None:
                if panel.log:  # a band reaching 0 or below is cut under the lowest value
                    positive = finite(y)[finite(y) > 0]
                    floor = float(positive.min()) / 3 if len(positive) else 1e-12
                    lo = np.where(np.isfinite(lo), np.maximum(lo, floor), lo)
                ax.fill_between(x, lo, hi, color=colour, alpha=0.22, lw=0)
        if panel.log:
            ax.set_yscale("log")
        if panel.members and panel.column.endswith("<k>"):
            ks = ", ".join(str(family_index(m)) for m in panel.members)
            title = f"{panel.column}  (k = {ks}, dark to light)" if not legend else f"{panel.column}  (k = {ks})"
        elif panel.members:
            title = f"{panel.column}  ({len(panel.members)} columns, j = 0…{len(panel.members) - 1})"
        else:
            title = panel.column + (f"  (± {SE_BAND:g} × {panel.se})" if panel.se else "")
        ax.set_title(title, loc="left", fontsize=10.5)
        ax.set_xlabel("iteration n")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3, which="both" if panel.log else "major")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(f"diagnostic {name}", fontsize=12)
    if legend:
        handles = [Line2D([], [], color=colour, lw=2.2) for _, colour, _ in series]
        fig.legend(handles, [label for label, _, _ in series], loc="outside lower center",
                   ncol=min(len(series), 6), frameon=False)
    return png(fig), panels, constants
