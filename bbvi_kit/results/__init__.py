"""The results layer: run and sweep directories as read from disk, and the statistics drawn from
them, shared by the figures (:mod:`bbvi_kit.plots`) and the report (:mod:`bbvi_kit.report`).

Nothing here draws or writes HTML (no matplotlib): :mod:`~bbvi_kit.results.run` and
:mod:`~bbvi_kit.results.sweep` read one run or sweep directory, :mod:`~bbvi_kit.results.discover`
finds the runs under folders, :mod:`~bbvi_kit.results.groups` groups runs that differ only in
their seed, :mod:`~bbvi_kit.results.bands` aggregates curves over seeds,
:mod:`~bbvi_kit.results.curves` computes what the figures draw of a group,
:mod:`~bbvi_kit.results.rates` holds the rate fits (the one fit of C in C log n / √n among them),
:mod:`~bbvi_kit.results.panels` plans a diagnostic's figure, and :mod:`~bbvi_kit.results.names`
holds the short names of labels.
"""

from bbvi_kit.results.bands import MAX_POINTS, Band, aggregate
from bbvi_kit.results.curves import Final, GroupCurves, group_curves, last_evaluation
from bbvi_kit.results.discover import FiguresWarning, find_runs, is_run_dir
from bbvi_kit.results.groups import Group, group_runs
from bbvi_kit.results.panels import MAX_PANELS, SE_BAND, Panel, plan_panels
from bbvi_kit.results.rates import RateFit, fit_log_rate, fit_log_rate_constant, fit_rate
from bbvi_kit.results.run import Run, load_run, looks_like_run
from bbvi_kit.results.run_rate import rate_from_run
from bbvi_kit.results.sweep import Sweep, SweepPoint, load_sweep, looks_like_sweep
from bbvi_kit.results.table import Table, last_finite, read_mapping, read_table

__all__ = [
    "MAX_PANELS",
    "MAX_POINTS",
    "SE_BAND",
    "Band",
    "FiguresWarning",
    "Final",
    "Group",
    "GroupCurves",
    "Panel",
    "RateFit",
    "Run",
    "Sweep",
    "SweepPoint",
    "Table",
    "aggregate",
    "find_runs",
    "fit_log_rate",
    "fit_log_rate_constant",
    "fit_rate",
    "group_curves",
    "group_runs",
    "is_run_dir",
    "last_evaluation",
    "last_finite",
    "load_run",
    "load_sweep",
    "looks_like_run",
    "looks_like_sweep",
    "plan_panels",
    "rate_from_run",
    "read_mapping",
    "read_table",
]
