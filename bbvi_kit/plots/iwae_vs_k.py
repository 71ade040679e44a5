"""The figure ``iwae_bound_vs_K``: for IWAE runs with at least two values of K, the final test
negative IWAE_K bound and test negative ELBO against K, one line per combination of the other
differing keys (see :mod:`bbvi_kit.plots`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from bbvi_kit.plots.common import PANEL_HEIGHT, describe, finish_axes, legend_below, palette, save, span
from bbvi_kit.results.curves import GroupCurves
from bbvi_kit.results.groups import Group, format_value, normalise

__all__ = ["Series", "draw_iwae_vs_k", "iwae_series"]

Series = list[tuple[str, list[tuple[float, GroupCurves]]]]


def iwae_series(datas: Sequence[GroupCurves]) -> Series:
    """IWAE groups split into series that differ in something other than K, each sorted by K;
    only series with at least two values of K."""
    iwae = [d for d in datas if str(d.group.setting("objective.name")) == "iwae" and "test_objective_loss" in d.finals]
    series: dict[str, list[tuple[float, GroupCurves]]] = {}
    labels: dict[str, str] = {}
    for d in iwae:
        rest = {k: v for k, v in d.group.key.items() if k != "objective.num_particles"}
        signature = json.dumps(normalise(rest), sort_keys=True)
        k = d.group.setting("objective.num_particles", 1)
        series.setdefault(signature, []).append((float(1 if k is None else k), d))
        labels[signature] = ", ".join(p for key, p in d.group.parts.items() if key != "objective.num_particles")
    found = []
    for signature, points in series.items():
        points.sort(key=lambda kd: kd[0])
        if len({k for k, _ in points}) >= 2:
            found.append((labels[signature] or "IWAE", points))
    return found


def draw_iwae_vs_k(series: Series, groups: Sequence[Group], out: Path, say: Callable[[str], None]) -> list[Path]:
    """``iwae_bound_vs_K.{png,pdf}`` in ``out``: one line per series of :func:`iwae_series`; what
    the figure works around goes to ``say``; returns the paths written."""
    fig = Figure(figsize=(12.5, PANEL_HEIGHT), layout="constrained")
    axes = fig.subplots(1, 2)
    colours = palette(len(series))
    all_k: set[float] = set()
    counts: list[int] = []
    for (label, points), colour in zip(series, colours):
        for ax, column in zip(axes, ("test_objective_loss", "test_loss")):
            ks, mean, below, above, steps = [], [], [], [], set()
            for k, d in points:
                final = d.finals.get(column)
                if final is None:
                    continue
                stats = final.stats()
                ks.append(k)
                mean.append(stats["mean"])
                below.append(stats["mean"] - stats["min"])
                above.append(stats["max"] - stats["mean"])
                counts.append(stats["seeds"])
                steps.add(final.step)
                if final.left_out and column == "test_objective_loss":
                    say(f"iwae_bound_vs_K: group '{d.group.label}': final values at n={int(final.step)} from "
                        f"{len(final.seeds)} of {len(d.group.runs)} seeds (seed {', '.join(map(str, final.left_out))} "
                        f"stops earlier)")
            if len(steps) > 1 and column == "test_objective_loss":
                say(f"iwae_bound_vs_K: {label}: the last evaluations are at different iterations "
                    f"({', '.join(str(int(s)) for s in sorted(steps))}); runs of different lengths are compared")
            all_k.update(ks)
            ax.errorbar(ks, mean, yerr=[below, above], color=colour, lw=2.2, marker="o", markersize=6, capsize=4,
                        elinewidth=1.4)
    ticks = sorted(all_k)
    for ax, title, ylabel in (
        (axes[0], r"(a) final test $-$IWAE$_K$ bound", r"test $-$IWAE$_K$ bound (nats per example)"),
        (axes[1], "(b) final test negative ELBO (one sample per example)", "test −ELBO (nats per example)"),
    ):
        ax.set_xscale("log")
        ax.set_xticks(ticks, [format_value(k) for k in ticks])
        ax.minorticks_off()
        finish_axes(ax, title, "number of samples K (log scale)", ylabel)
    fig.suptitle("IWAE: test loss at the end of training against K — " + describe(groups), fontsize=13)
    caption = (f"mean over seeds; error bars: min–max over {span(counts)} seeds"
               if counts and set(counts) != {1} else "one seed per point (no error bar)")
    legend_below(fig, [Line2D([], [], color=c, lw=2.2, marker="o") for c in colours], [s[0] for s in series],
                  caption + ", at each run's last evaluation")
    return save(fig, out, "iwae_bound_vs_K")
