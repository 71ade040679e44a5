"""The figure ``snr_vs_K``: the gradient signal-to-noise ratio of the encoder (φ) and the decoder
(θ) at the end of training against the number of particles K, one line per series of sweep points
that differ only in K (for example one per estimator), on log-log axes with the slopes the theory
predicts for the pathwise IWAE gradient drawn dashed: −1/2 for φ, +1/2 for θ (Rainforth et al.,
ICML 2018); DReG's φ line should rise as +1/2 instead (Tucker et al., ICLR 2019)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from bbvi_kit.diagnostics.noise import final_snr
from bbvi_kit.plots.common import PANEL_HEIGHT, describe, finish_axes, legend_below, palette, save
from bbvi_kit.results.groups import Group, format_value

__all__ = ["DIAGNOSTIC", "SnrSeries", "draw_snr_vs_k"]

DIAGNOSTIC = "snr"
SnrSeries = list[tuple[str, list[tuple[float, Group]]]]  # (label, [(K, group)]), as snr_series gives


def draw_snr_vs_k(series: SnrSeries, groups: Sequence[Group], out: Path) -> list[Path]:
    """``snr_vs_K.{png,pdf}`` in ``out``: per series of :func:`bbvi_kit.diagnostics.noise.snr_series`
    (diagnostic ``snr``), the mean over seeds of each run's last ``snr_phi`` and ``snr_theta``
    against K; returns the paths written."""
    fig = Figure(figsize=(12.5, PANEL_HEIGHT), layout="constrained")
    axes = fig.subplots(1, 2)
    colours = palette(len(series))
    all_k: set[float] = set()
    for ax, column, predicted in zip(axes, ("snr_phi", "snr_theta"), (-0.5, 0.5)):
        anchors = []
        for (_, points), colour in zip(series, colours):
            ks, means = final_snr(DIAGNOSTIC, points, column)
            if not ks:
                continue
            all_k.update(ks)
            ax.plot(ks, means, color=colour, lw=2.2, marker="o", markersize=6)
            anchors.append((ks[0], means[0]))
        if anchors:  # the predicted slope through the geometric mean of the first points
            k0 = min(k for k, _ in anchors)
            level = float(np.exp(np.mean([np.log(v) for _, v in anchors if v > 0]))) if any(
                v > 0 for _, v in anchors) else 1.0
            grid = np.array(sorted(all_k))
            ax.plot(grid, level * (grid / k0) ** predicted, color="0.35", lw=1.2, ls="--")
        ax.set_xscale("log")
        ax.set_yscale("log")
    ticks = sorted(all_k)
    for ax, title in ((axes[0], "(a) encoder: SNR(φ)"), (axes[1], "(b) decoder: SNR(θ)")):
        ax.set_xticks(ticks, [format_value(k) for k in ticks])
        ax.minorticks_off()
        finish_axes(ax, title, "number of samples K (log scale)", "gradient SNR, mean over coordinates (log)")
    fig.suptitle("Gradient signal-to-noise ratio at the end of training against K — " + describe(groups), fontsize=13)
    labels = [label or "all runs" for label, _ in series]
    handles: list[Line2D] = [Line2D([], [], color=c, lw=2.2, marker="o") for c in colours]
    handles.append(Line2D([], [], color="0.35", lw=1.2, ls="--"))
    labels.append("slope −1/2 (φ) and +1/2 (θ): pathwise IWAE, Rainforth et al. 2018")
    legend_below(fig, handles, labels, "mean over seeds of each run's last snr measurement")
    return save(fig, out, "snr_vs_K")
