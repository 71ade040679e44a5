"""What the paper-style figures share: the style, the palette, a band over seeds, tidy log axes,
a legend under the panels, and the atomic save of each figure as PNG and PDF."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import matplotlib
import numpy as np

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FixedFormatter, FuncFormatter  # noqa: E402

from bbvi_kit.results.bands import Band  # noqa: E402
from bbvi_kit.results.groups import Group  # noqa: E402

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

__all__ = ["MAX_INSET_LEGEND", "PANEL_HEIGHT", "REFERENCE", "RUNNING_AVERAGE", "STYLE", "band_phrase",
           "constant_legend", "describe", "draw_band", "finish_axes", "legend_below", "number", "palette", "save",
           "span"]

STYLE: dict[RcKeyType, Any] = {
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "legend.fontsize": 9.5,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "pdf.fonttype": 42,
    "axes.spines.top": False,
    "axes.spines.right": False,
}

RUNNING_AVERAGE = r"$\frac{1}{n}\,\Sigma_{k\leq n}\|g_k\|^2$"
REFERENCE = r"dashed: $C\,\log n/\sqrt{n}$, C fitted by least squares in log scale on $n \geq n_{\max}/2$"


def palette(count: int) -> list[Any]:
    cmap = matplotlib.colormaps["tab10" if count <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(count)]


def describe(groups: Sequence[Group]) -> str:
    """'gaussian_vae on digits' (from the recipes; several names joined by '/')."""
    def values(key: str) -> str:
        found = []
        for g in groups:
            v = g.setting(key)
            if v is not None and str(v) not in found:
                found.append(str(v))
        return " / ".join(found) if found else "?"
    return f"{values('model.name')} on {values('data.name')}"


def span(counts: Sequence[int]) -> str:
    counts = sorted(set(counts))
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"


def band_phrase(counts: Sequence[int]) -> str:
    if set(counts) == {1}:
        return "one seed (no band)" if len(counts) == 1 else "one seed per group (no band)"
    return f"bold line: mean over seeds; band: min–max over {span(counts)} seeds"


def draw_band(ax: Any, band: Band, colour: Any, markers: bool = False) -> None:
    style = {"marker": "o", "markersize": 3.5} if markers and len(band) <= 20 else {}
    ax.plot(band.x, band.mean, color=colour, lw=2.2, **style)
    if band.n > 1:
        ax.fill_between(band.x, band.lo, band.hi, color=colour, alpha=0.22, lw=0)


def number(value: float) -> str:
    """3 significant digits, plainly written between 0.001 and 10⁶ (2120, 90.3, 0.0123)."""
    if value != 0 and not 1e-3 <= abs(value) < 1e6:
        mantissa, exponent = f"{value:.2e}".split("e")
        return rf"${mantissa}\times10^{{{int(exponent)}}}$"
    return np.format_float_positional(value, precision=3, unique=False, fractional=False, trim="-")


def _minor_log_label(value: float, _pos: Any = None) -> str:
    mantissa = value / 10 ** math.floor(math.log10(value)) if value > 0 else 0
    return number(value) if any(abs(mantissa - m) < 1e-6 for m in (2, 3, 5)) else ""


def _tidy_log_axis(axis: Any) -> None:
    """Plain numbers on a log axis (1, 10, 100 rather than 10⁰, 10¹, 10²); under about 1.5
    decades, also at 2, 3 and 5 × 10^k rather than 2×10¹ on every minor tick."""
    if isinstance(axis.get_major_formatter(), FixedFormatter):
        return
    axis.set_major_formatter(FuncFormatter(lambda value, _pos: number(value)))
    lo, hi = sorted(axis.get_view_interval())
    if lo > 0 and hi / lo < 30:
        axis.set_minor_formatter(FuncFormatter(_minor_log_label))


def finish_axes(ax: Any, title: str, xlabel: str, ylabel: str) -> None:
    for axis in (ax.xaxis, ax.yaxis):
        if axis.get_scale() == "log":
            _tidy_log_axis(axis)
    ax.set_title(title, loc="left")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.35)
    ax.grid(True, which="minor", alpha=0.12)


def legend_below(fig: Figure, handles: list[Any], labels: list[str], caption: str) -> None:
    """One legend under the panels: a colour per group, the caption (band, reference) as its
    title. As many columns as the figure's width holds; the figure grows by the legend's height."""
    width_chars = fig.get_figwidth() * 13  # about 13 characters of 9.5 pt text per inch
    widest = max((len(s) for s in labels), default=0) + 6  # with the line sample
    ncol = max(1, min(len(labels), 6, int(width_chars // widest)))
    rows = -(-len(labels) // ncol) + caption.count("\n") + 1
    fig.set_figheight(fig.get_figheight() + 0.2 + 0.26 * rows)
    fig.legend(handles, labels, loc="outside lower center", ncol=ncol, frameon=False, title=caption,
               title_fontsize=9.5)


def save(fig: Figure, out: Path, stem: str) -> list[Path]:
    """``stem.png`` and ``stem.pdf`` in ``out``, each written to a temporary file and renamed
    (the atomic write of :func:`bbvi_kit.plots.run.plot_run`)."""
    paths = []
    for ext, extra in (("png", {"dpi": 150}), ("pdf", {"metadata": {"CreationDate": None}})):
        path = out / f"{stem}.{ext}"
        tmp = out / f".{stem}.tmp-{os.getpid()}.{ext}"
        try:
            fig.savefig(tmp, format=ext, **extra)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        paths.append(path)
    return paths


PANEL_HEIGHT = 4.0
"""Inches of a figure above its legend (titles, panels, axis labels)."""

MAX_INSET_LEGEND = 6
"""Up to this many groups, each panel lists its fitted constants in a small legend of its own."""


def constant_legend(ax: Any, fitted: list[tuple[Any, float]]) -> None:
    handles = [Line2D([], [], color=colour, lw=1.4, ls="--") for colour, _ in fitted]
    ax.legend(handles, [f"C = {number(c)}" for _, c in fitted], loc="best", fontsize=8.5, framealpha=0.85,
              title="fitted C", title_fontsize=8.5)
