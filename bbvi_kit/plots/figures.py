"""``draw_figures``: the paper's figures for every run under some folders, and ``figures.json``.

Runs are found recursively (:func:`bbvi_kit.results.find_runs`), grouped by everything but their
seed (:func:`bbvi_kit.results.group_runs`), and each group's curves are aggregated over seeds
(:func:`bbvi_kit.results.group_curves`); the figures are drawn by
:mod:`~bbvi_kit.plots.grad_norm`, :mod:`~bbvi_kit.plots.test_loss`,
:mod:`~bbvi_kit.plots.iwae_vs_k` and :mod:`~bbvi_kit.plots.snr_vs_k`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import matplotlib
import numpy as np

from bbvi_kit.errors import InputError
from bbvi_kit.plots.common import STYLE, palette
from bbvi_kit.plots.grad_norm import draw_grad_norm
from bbvi_kit.plots.iwae_vs_k import draw_iwae_vs_k, iwae_series
from bbvi_kit.diagnostics.noise import snr_series
from bbvi_kit.plots.snr_vs_k import DIAGNOSTIC, draw_snr_vs_k
from bbvi_kit.plots.test_loss import draw_test_loss
from bbvi_kit.results.bands import Band
from bbvi_kit.results.curves import GroupCurves, group_curves
from bbvi_kit.results.discover import find_runs, warner
from bbvi_kit.results.groups import group_runs
from bbvi_kit.results.rates import fit_window
from bbvi_kit.runs import atomic_write_text

__all__ = ["draw_figures"]


def _final(band: Band | None) -> dict[str, Any] | None:
    if band is None or not len(band):
        return None
    return {"x": float(band.x[-1]), "mean": float(band.mean[-1]), "min": float(band.lo[-1]),
            "max": float(band.hi[-1]), "seeds": band.n}


def _clean(value: Any) -> Any:
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _summary(d: GroupCurves) -> dict[str, Any]:
    g = d.group
    window = d.avg.x[fit_window(d.avg.x, d.avg.mean)] if d.avg is not None else np.array([])
    return {
        "label": g.label,
        "key": g.key,
        "point": g.point,
        "point_label": g.runs[0].point_label,
        "runs": [str(r.path) for r in g.runs],
        "seeds": g.seeds,
        "statuses": [r.status for r in g.runs],
        "iterations": int(d.steps[-1]) if len(d.steps) else 0,
        "iterations_per_epoch": d.ipe,
        "C": d.c_avg,
        "C_fit_iterations": [float(window[0]), float(window[-1])] if len(window) else None,
        "log_log_slope": d.slope_avg,
        "C_per_epoch": d.c_epoch,
        "final": {
            "minibatch_grad_norm_sq_avg": _final(d.avg),
            "minibatch_grad_norm_sq_epoch_mean": _final(d.per_epoch),
            "full_grad_norm_sq_avg": _final(d.full_avg),
            "test_loss": _final(d.evals.get("test_loss")),
            "test_objective_loss": _final(d.evals.get("test_objective_loss")),
        },
        "last_evaluation": {column: final.stats() for column, final in d.finals.items()},
    }


def draw_figures(paths: Sequence[str | Path], out: str | Path,
                 warn: Callable[[str], None] | None = None, scale: str = "plain") -> list[Path]:
    """Draw the paper's figures for every run under ``paths`` into the folder ``out``.

    Writes ``grad_norm_sq.{png,pdf}``, ``test_loss.{png,pdf}`` (when some group has evaluations),
    ``iwae_bound_vs_K.{png,pdf}`` (when IWAE runs cover at least two K), ``snr_vs_K.{png,pdf}``
    (when runs with the ``snr`` diagnostic cover at least two K) and ``figures.json``. For
    each group, ``figures.json`` holds its label, sweep point, runs, seeds and statuses; ``C``, the
    constant of C log n / √n fitted to the mean running average on n ≥ n_max/2 (the iterations in
    ``C_fit_iterations``), ``log_log_slope`` on the same window, and ``C_per_epoch`` for the
    per-epoch means; under ``final``, the mean, min and max over seeds at the last point of each
    drawn curve (x: the last iteration, epoch or evaluation step common to all seeds); under
    ``last_evaluation``, the same at the group's last evaluation over the seeds that reached it
    (what ``iwae_bound_vs_K`` draws). ``scale``: ``plain`` or ``paper`` (panel (a) of
    ``grad_norm_sq`` in the authors' per-epoch scale, module docstring). Every file is written to a
    temporary name and renamed.
    Problems that do not stop the figures (skipped or cut runs) go to ``warn(message)``, by default
    :func:`warnings.warn` with :class:`FiguresWarning`; they are also listed in ``figures.json``.

    Returns:
        The paths written, figures first (PNG then PDF), ``figures.json`` last.

    Raises:
        InputError: see :func:`find_runs`; an output folder that cannot be made.
    """
    if scale not in ("plain", "paper"):
        raise InputError(f"scale must be plain or paper, got {scale!r}")
    say = warner(warn)
    messages: list[str] = []

    def record(message: str) -> None:
        messages.append(message)
        say(message)

    runs = find_runs(paths, warn=record)
    groups = group_runs(runs)
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create output directory {out}: {exc.strerror or exc}") from exc
    datas = [group_curves(g, record, scale == "paper") for g in groups]
    colours = palette(len(groups))

    written: list[Path] = []
    with matplotlib.rc_context(STYLE):
        written += draw_grad_norm(datas, colours, groups, out, scale == "paper")
        if any("test_loss" in d.evals for d in datas):
            written += draw_test_loss(datas, colours, groups, out)
        series = iwae_series(datas)
        if series:
            written += draw_iwae_vs_k(series, groups, out, record)
        against_k = snr_series(DIAGNOSTIC, groups)
        if against_k:
            written += draw_snr_vs_k(against_k, groups, out)
    summary = {
        "paths": [str(p) for p in paths],
        "fit": "C log n / sqrt(n); log C = mean of [log ybar(n) - log(log n / sqrt n)] over n >= max(3, n_max/2), "
               "ybar = mean over seeds. C: running average minibatch_grad_norm_sq_avg (mini-batch, not the "
               "theorems' full-data quantity) against the iteration n; C_per_epoch: per-epoch mean of "
               "minibatch_grad_norm_sq (scale plain) or (1/(N d)) sum_k B_k^2 minibatch_grad_norm_sq (scale paper) "
               "at n = epochs completed x iterations_per_epoch",
        "scale": scale,
        "groups": [_summary(d) for d in datas],
        "files": [p.name for p in written],
        "warnings": messages,
    }
    summary_path = out / "figures.json"
    atomic_write_text(summary_path, json.dumps(_clean(summary), indent=2, ensure_ascii=False) + "\n")
    written.append(summary_path)
    return written
