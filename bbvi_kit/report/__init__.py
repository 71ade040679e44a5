"""A self-contained HTML report of a run or a sweep directory (``bbvi-kit report DIR``).

``write_report(DIR)`` reads a run directory (``run.json``, ``recipe.yaml``, ``metrics.csv``,
``eval.csv``, ``diagnostics/<name>.csv``) or a sweep directory (``sweep.json``, ``summary.csv``,
``sweep.yaml`` and its run directories) with :mod:`bbvi_kit.results` and writes one HTML page,
``DIR/report.html`` by default. Every figure is a PNG embedded as a ``data:image/png;base64``
URI and the style sheet is inline, so the page has no external resource (no script, no web font,
no link) and reads offline, mailed or archived as one file. The page is written to a temporary
file and renamed: it is never half-written. The run or sweep directory itself is only read: the
figures are drawn in a temporary folder.

The page (a Jinja2 template with autoescaping, :mod:`~bbvi_kit.report.html`) holds:

* **Findings** (:class:`~bbvi_kit.findings.Finding`, one plain-language sentence each, with its
  level, topic and numbers; :mod:`~bbvi_kit.report.findings` for a run,
  :mod:`~bbvi_kit.report.sweep_findings` for a sweep): the convergence verdict
  (:mod:`bbvi_kit.diagnostics.convergence`), the test loss, failed or unfinished runs,
  non-finite values, and what each diagnostic shows: the generic trend of its headline column,
  and the sentences of the diagnostic plugin itself (:meth:`bbvi_kit.diagnostics.Diagnostic.findings`
  and its sweep hooks), found through the registry by the name of its CSV file, so a new
  diagnostic plugin brings its own findings. The rules are on the page
  (:mod:`~bbvi_kit.report.rules`).
* **Summary**: for a run, the recipe's essentials and the final values with the resolved recipe
  folded (:mod:`~bbvi_kit.report.run_page`); for a sweep, one row per point with the mean ± sd over
  seeds of every final value of ``summary.csv``, the final diagnostic values per point side by
  side, and every run's own row (:mod:`~bbvi_kit.report.sweep_page`).
* **Figures**: the paper figures of :func:`bbvi_kit.plots.draw_figures` (one colour per sweep
  point) and each run's own plots (:func:`bbvi_kit.plots.plot_run`).
* **Diagnostics**: one generic figure per ``diagnostics/<name>.csv``, whatever the diagnostic
  (:func:`bbvi_kit.plots.diagnostic_figure`, planned by :func:`bbvi_kit.results.plan_panels`),
  with its findings beside it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

from bbvi_kit.errors import InputError
from bbvi_kit.findings import Finding
from bbvi_kit.plots.diagnostic import diagnostic_figure
from bbvi_kit.report.findings import convergence_findings
from bbvi_kit.report.rules import COLLAPSE_FRACTION
from bbvi_kit.report.run_page import run_page
from bbvi_kit.report.sweep_page import sweep_page
from bbvi_kit.results.panels import MAX_PANELS, Panel, plan_panels
from bbvi_kit.results.run import looks_like_run
from bbvi_kit.results.sweep import looks_like_sweep
from bbvi_kit.runs import atomic_write_text

__all__ = [
    "COLLAPSE_FRACTION",
    "Finding",
    "MAX_PANELS",
    "Panel",
    "REPORT_NAME",
    "build_report",
    "diagnostic_figure",
    "plan_panels",
    "convergence_findings",
    "write_report",
]

REPORT_NAME = "report.html"
"""File name of the report inside the directory when no ``--out`` is given."""


def build_report(directory: str | Path, warn: Callable[[str], None] | None = None) -> str:
    """The HTML page for the run or sweep directory ``directory`` (see the module docstring).

    Problems that do not stop the report (an unreadable file, a figure that cannot be drawn, the
    figures' warnings) are listed in its Notes section and passed to ``warn(message)``.

    Raises:
        InputError: ``directory`` does not exist, or is neither a run directory (``run.json`` or
            ``metrics.csv``) nor a sweep directory (``sweep.json`` or ``summary.csv``).
    """
    path = Path(directory)
    if not path.exists():
        raise InputError(f"{path}: no such directory")
    if not path.is_dir():
        raise InputError(f"{path}: not a directory (give a run or sweep directory)")
    sweep = looks_like_sweep(path)
    if not sweep and not looks_like_run(path):
        raise InputError(f"{path}: not a run directory (run.json, metrics.csv) or a sweep directory "
                         f"(sweep.json, summary.csv)")
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bbvi-kit-report-") as tmp:
        page = sweep_page(path, Path(tmp), notes) if sweep else run_page(path, Path(tmp), notes)
    if warn is not None:
        for note in dict.fromkeys(notes):
            warn(note)
    return page


def write_report(directory: str | Path, out: str | Path | None = None,
                 warn: Callable[[str], None] | None = None) -> Path:
    """Write the report of ``directory`` to ``out`` (default ``directory/report.html``) through a
    temporary file and ``os.replace``; returns the path written.

    Raises:
        InputError: see :func:`build_report`; ``out`` is a directory or cannot be written.
    """
    target = Path(out) if out is not None else Path(directory) / REPORT_NAME
    if target.is_dir():
        raise InputError(f"{target}: is a directory (give the report's file name)")
    page = build_report(directory, warn=warn)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(target, page)
    except OSError as exc:
        raise InputError(f"cannot write {target}: {exc.strerror or exc}") from exc
    return target
