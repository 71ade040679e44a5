"""The figure ``grad_norm_sq``: (a) the mini-batch ‖g_k‖² averaged over each epoch (or the
authors' per-epoch quantity with ``scale="paper"``), (b) the running averages against the
iteration n on log-log axes, the full-data one of ``full_gradient`` when it ran stratified,
with the dashed C log n / √n fitted per group (see :mod:`bbvi_kit.plots`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from bbvi_kit.plots.common import (
    MAX_INSET_LEGEND,
    PANEL_HEIGHT,
    REFERENCE,
    RUNNING_AVERAGE,
    band_phrase,
    constant_legend,
    describe,
    draw_band,
    finish_axes,
    legend_below,
    number,
    save,
)
from bbvi_kit.results.curves import GroupCurves
from bbvi_kit.results.groups import Group
from bbvi_kit.results.rates import reference_curve

__all__ = ["draw_grad_norm"]


def draw_grad_norm(datas: Sequence[GroupCurves], colours: Sequence[Any], groups: Sequence[Group], out: Path,
                   paper: bool) -> list[Path]:
    """``grad_norm_sq.{png,pdf}`` in ``out``: (a) the per-epoch mean of ‖g_k‖² (``paper``: in the
    authors' scale), (b) the running averages against n, one colour per group (``colours``),
    each with its dashed C log n / √n; returns the paths written."""
    fig = Figure(figsize=(12.5, PANEL_HEIGHT), layout="constrained")
    ax_epoch, ax_iter = fig.subplots(1, 2)
    for d, colour in zip(datas, colours):
        if d.per_epoch is not None and len(d.per_epoch):
            draw_band(ax_epoch, d.per_epoch, colour, markers=True)
            if d.c_epoch is not None:
                x = np.linspace(max(float(d.per_epoch.x[0]), 8.0 / d.ipe), float(d.per_epoch.x[-1]), 200)
                ax_epoch.plot(x, d.c_epoch * reference_curve(x * d.ipe), color=colour, lw=1.4, ls="--")
        if d.avg is not None and len(d.avg):
            draw_band(ax_iter, d.avg.thinned(log_x=True), colour)
            if d.c_avg is not None:
                n = np.geomspace(max(float(d.avg.x[0]), 8.0), float(d.avg.x[-1]), 200)
                ax_iter.plot(n, d.c_avg * reference_curve(n), color=colour, lw=1.4, ls="--")
        if d.full_avg is not None and len(d.full_avg):
            full = d.full_avg
            ax_iter.fill_between(full.x, np.maximum(full.lo, full.mean * 1e-3), full.hi, color=colour, alpha=0.12,
                                 lw=0)
            ax_iter.plot(full.x, full.mean, color=colour, lw=1.2, ls=":", marker="o", ms=3.5)
    ax_epoch.set_yscale("log")
    ax_epoch.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_iter.set_xscale("log")
    ax_iter.set_yscale("log")
    if paper:
        finish_axes(ax_epoch, r"(a) $\frac{1}{N d}\,\Sigma_{k \in \mathrm{epoch}} B_k^2 \|g_k\|^2$ "
                     "(the authors' logged scale)", "epoch", r"$\Sigma_k \|\nabla(\mathrm{batch\ sum})\|^2 / (N d)$")
    else:
        finish_axes(ax_epoch, r"(a) mini-batch $\|g_k\|^2$ averaged over each epoch",
                     "epoch", r"mean of $\|g_k\|^2$ over the epoch")
    any_full = any(d.full_avg is not None for d in datas)
    finish_axes(ax_iter, "(b) running averages" + (": mini-batch (solid), full-data (dotted)" if any_full else
                                                     " of the mini-batch " + RUNNING_AVERAGE),
                 "iteration n (mini-batch updates)", "running average over the iterations")
    labels = [d.group.label for d in datas]
    caption = band_phrase([d.avg.n if d.avg else len(d.group.runs) for d in datas]) + "\n" + REFERENCE
    caption += ("\nsolid: mini-batch, E‖g‖² = ‖∇L‖² + tr Cov(g), with a noise floor; " + (
        "dotted: the full-data estimate, the quantity the theorems bound (full_gradient, stratified; band ± 2 SE "
        "for one seed)" if any_full else
        "the theorems' full-data ‖∇L‖² needs the full_gradient diagnostic (schedule: stratified)"))
    if len(datas) <= MAX_INSET_LEGEND:
        for ax, key in ((ax_epoch, "c_epoch"), (ax_iter, "c_avg")):
            fitted = [(colour, getattr(d, key)) for d, colour in zip(datas, colours) if getattr(d, key) is not None]
            if fitted:
                constant_legend(ax, fitted)
    else:  # a legend of many constants would cover the curves: those of (b) go with the labels
        labels = [f"{label} (C = {number(d.c_avg)})" if d.c_avg is not None else label
                  for label, d in zip(labels, datas)]
        caption += " (C of panel b in brackets)"
    fig.suptitle(r"Squared gradient norms — " + describe(groups), fontsize=13)
    legend_below(fig, [Line2D([], [], color=colour, lw=2.2) for colour in colours], labels, caption)
    return save(fig, out, "grad_norm_sq")
