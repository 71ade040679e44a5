"""The figure ``test_loss``: the test negative ELBO against epochs completed (or iterations), and
a second panel with the test negative training objective (e.g. −IWAE_K) when some group does not
train the one-sample ELBO (see :mod:`bbvi_kit.plots`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence, cast

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from bbvi_kit.plots.common import PANEL_HEIGHT, band_phrase, describe, draw_band, finish_axes, legend_below, save
from bbvi_kit.results.bands import Band
from bbvi_kit.results.curves import GroupCurves
from bbvi_kit.results.groups import Group

__all__ = ["draw_test_loss"]


def _objective_title(groups: Sequence[Group]) -> str:
    names = {str(g.setting("objective.name", "elbo")) for g in groups}
    if names == {"iwae"}:
        return r"test $-$IWAE$_K$ bound"
    if names == {"beta"}:
        return r"test $-\beta$-ELBO"
    if names == {"elbo"}:
        return "test −ELBO with K samples"
    return "test negative training objective"


def _is_plain_elbo(group: Group) -> bool:
    k = group.setting("objective.num_particles", 1)
    return str(group.setting("objective.name", "elbo")) == "elbo" and float(1 if k is None else k) <= 1


def draw_test_loss(datas: Sequence[GroupCurves], colours: Sequence[Any], groups: Sequence[Group],
                   out: Path) -> list[Path]:
    """``test_loss.{png,pdf}`` in ``out`` for the groups with evaluations, one colour per group
    (``colours``); returns the paths written."""
    colour_of = {id(d): colour for d, colour in zip(datas, colours)}
    with_evals = [d for d in datas if "test_loss" in d.evals]
    by_epoch = all(
        d.eval_epochs is not None and len(np.unique(d.eval_epochs)) == len(d.eval_epochs) for d in with_evals
    )
    other = [d for d in with_evals if not _is_plain_elbo(d.group) and "test_objective_loss" in d.evals]
    fig = Figure(figsize=(12.5 if other else 7.5, PANEL_HEIGHT), layout="constrained")
    axes = list(fig.subplots(1, 2 if other else 1, squeeze=False)[0])

    def at(d: GroupCurves, band: Band) -> Band:
        return Band(cast(np.ndarray, d.eval_epochs), band.mean, band.lo, band.hi, band.n) if by_epoch else band

    xlabel = "epochs completed" if by_epoch else "iteration n (mini-batch updates)"
    for d in with_evals:
        draw_band(axes[0], at(d, d.evals["test_loss"]), colour_of[id(d)], markers=True)
    finish_axes(axes[0], ("(a) " if other else "") + "test negative ELBO (one sample per example)",
                 xlabel, "test −ELBO (nats per example)")
    if other:
        title = _objective_title([d.group for d in other])
        for d in other:
            draw_band(axes[1], at(d, d.evals["test_objective_loss"]), colour_of[id(d)], markers=True)
        finish_axes(axes[1], f"(b) {title}", xlabel, f"{title} (nats per example)")
    if by_epoch:
        for ax in axes:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle("Test loss — " + describe(groups), fontsize=13)
    counts = [d.evals["test_loss"].n for d in with_evals]
    legend_below(fig, [Line2D([], [], color=colour_of[id(d)], lw=2.2) for d in with_evals],
                  [d.group.label for d in with_evals], band_phrase(counts))
    return save(fig, out, "test_loss")
