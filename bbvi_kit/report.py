"""A self-contained HTML report of a run or a sweep directory (``bbvi-kit report DIR``).

``write_report(DIR)`` reads a run directory (``run.json``, ``recipe.yaml``, ``metrics.csv``,
``eval.csv``, ``diagnostics/<name>.csv``) or a sweep directory (``sweep.json``, ``summary.csv``,
``sweep.yaml`` and its run directories) and writes one HTML page, ``DIR/report.html`` by default.
Every figure is a PNG embedded as a ``data:image/png;base64`` URI and the style sheet is inline,
so the page has no external resource (no script, no web font, no link) and reads offline, mailed
or archived as one file. The page is written to a temporary file and renamed (``os.replace``):
it is never half-written. The run or sweep directory itself is only read: the figures are drawn
in a temporary folder.

The page holds:

* **Findings**: one plain-language sentence each, computed from the files (rules below and on
  the page): the rate at which the running average of the squared gradient norm decays, the
  test loss, failed or unfinished runs, non-finite values, and what each diagnostic shows
  (held-out IWAE bound, posterior collapse, SNR against K, gradient-noise split, ...).
* **Summary**: for a run, the recipe's essentials and the final values (last ``metrics.csv``
  row, last ``eval.csv`` row) with the resolved recipe in a collapsible block; for a sweep, one
  row per sweep point with the mean ± sd over seeds of every final value of ``summary.csv``, the
  final diagnostic values per point side by side, and every run's own row.
* **Figures**: the paper figures of :mod:`bbvi_kit.figures` (one colour per sweep point, dashed
  C log n / √n) and each run's own plots (:func:`bbvi_kit.plotting.plot_run`).
* **Diagnostics**: one generic figure per ``diagnostics/<name>.csv``, whatever the diagnostic:
  every numeric column against the iteration n (``step``), ``X ± 2 X_se`` shaded when the column
  ``X`` has a companion ``X_se``, log y when every value is positive and they span more than a
  decade, columns constant over the whole run named in the caption instead of drawn, numbered
  columns (``au_z_0``, ``au_z_1``, ...) as thin lines in one panel, at most :data:`MAX_PANELS`
  panels. A new diagnostic plugin therefore appears without any change here. In a sweep, one
  colour per point: bold the mean over seeds, shaded the min–max over seeds. The diagnostic's
  findings sit next to its figure.

Convergence rule (:mod:`bbvi_kit.diagnostics.convergence`). The theorems of Surendran,
Godichon-Baggioni & Le Corff (AISTATS 2025) bound the running average of the *full-data*
‖∇L‖², not of the mini-batch ‖g‖² (E‖g‖² = ‖∇L‖² + tr Cov g has a noise floor). When the
``full_gradient`` diagnostic ran, the report's verdict is about its estimates U_j (stationary
when most are zero within their interval, else the log-log slope of the raw U_j against that of
log n / √n); the mini-batch ‖g_n‖² gets its own sentence, fitted raw (not as a running average,
whose slope keeps the 1/n memory of the early transient): "at the noise floor since n" when its
slope's interval reaches into |b| ≤ 0.1, with the floor's noise share from ``gradient_noise`` or
``full_gradient``, else a rate that bounds ‖∇L‖² from above. In a sweep, the mini-batch series is
the mean over seeds and the full-data estimates of all seeds are fitted together. The page
states the rules.
"""

from __future__ import annotations

import base64
import csv
import datetime as _dt
import html
import io
import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import matplotlib
import numpy as np
import yaml

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

import bbvi_kit  # noqa: E402
from bbvi_kit.errors import InputError  # noqa: E402
from bbvi_kit.figures import (  # noqa: E402
    Group,
    RunRecord,
    Table,
    _palette,
    _read_mapping,
    _read_table,
    aggregate,
    draw_figures,
    group_runs,
)
from bbvi_kit.plotting import plot_run  # noqa: E402

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

COLLAPSE_FRACTION = 0.5
"""Posterior collapse is reported when fewer than this fraction of the latent units are active."""

SE_BAND = 2.0
"""Half-width of the shaded band around a column with a ``_se`` companion, in standard errors."""

TEST_RISE = 0.01
"""A final test loss more than this fraction above the lowest one is reported as a rise."""

_BOOKKEEPING = ("step", "epoch", "block_start", "block_end", "time")

# The column a diagnostic's one-line trend is about (others: its first value column).
_HEADLINE = {
    "heldout_iwae": "test_neg_iwae",
    "full_gradient": "full_grad_norm_sq",
    "gradient_noise": "grad_var_total",
    "snr": "snr_phi",
    "posterior_collapse": "active_units",
    "smoothness": "lipschitz",
}


# --------------------------------------------------------------------------------------------
# Small helpers


def _finite(values: Any) -> np.ndarray:
    a = np.asarray(values, dtype=float)
    return a[np.isfinite(a)]


def _num(value: Any, digits: int = 6) -> str:
    """``value`` with ``digits`` significant digits; integers plainly; missing or NaN as '—'."""
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(v):
        return "—"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return f"{v:.{digits}g}"


def _short(value: Any) -> str:
    """3 significant digits, for sentences."""
    return _num(value, 3)


def _one_line(text: Any, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _first_line(text: Any, limit: int = 300) -> str:
    """The first non-empty line of an error message (Pyro appends trace shapes below it)."""
    lines = [line for line in str(text).splitlines() if line.strip()]
    return _one_line(lines[0] if lines else "", limit)


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _png(fig: Figure, dpi: int = 110) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _last_finite(table: Table, column: str) -> tuple[float, float] | None:
    """(step, value) of the last row where ``column`` is finite."""
    if column not in table.columns or not len(table):
        return None
    values, steps = table.column(column), table.column("step")
    ok = np.flatnonzero(np.isfinite(values))
    if not len(ok):
        return None
    return float(steps[ok[-1]]), float(values[ok[-1]])


def _mean_sd(values: Iterable[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (ddof 1; NaN for one value) and count of the finite values."""
    v = _finite(list(values))
    if not len(v):
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else math.nan, len(v)


def _pm(mean: float, sd: float, n: int, digits: int = 6) -> str:
    """'mean ± sd' (the mean alone for one value, '—' for none)."""
    if n == 0:
        return "—"
    if n == 1 or not math.isfinite(sd):
        return _num(mean, digits)
    return f"{_num(mean, digits)} ± {_num(sd, 3)}"


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


# --------------------------------------------------------------------------------------------
# Findings and the rate fit


@dataclass
class Finding:
    """One sentence of the report. ``level``: ``good``, ``info``, ``warning`` or ``problem``;
    ``topic``: ``status``, ``rate``, ``test``, ``sweep`` or ``diagnostic:<name>``."""

    text: str
    level: str = "info"
    topic: str = "info"


RULES = [
    "Convergence (bbvi_kit.diagnostics.convergence): the theorems bound the running average of the full-data "
    "‖∇L‖², not of the mini-batch ‖g‖², whose expectation ‖∇L‖² + tr Cov(g) levels off at a noise floor. With the "
    "full_gradient diagnostic, the verdict is about its unbiased estimates U of ‖∇L‖² over the last half of the "
    "iterations: stationary when at least half of them are zero within their 95% interval (U ≤ t SE, Student's "
    "t with M − 1 degrees of freedom), else b, the least-squares slope of log U on log n with a 95% interval "
    "(autocorrelation-robust, never narrower than the plain one, Student's t quantile), is compared with the slope "
    "of log n/√n over the same iterations: consistent when the interval contains it (inconclusive when it also "
    "contains 0, no decay), faster or slower when it lies below or above. Raw series are fitted, never running "
    "averages: a running average keeps a 1/n memory of the early transient.",
    "Mini-batch ‖g_n‖² (every run; the mean over seeds in a sweep): the same fit of the raw per-step values; at the "
    "noise floor when the slope's interval reaches into |b| ≤ 0.1, since the first of the geometric bins (ratio "
    "0.8) going back whose mean log value stays within 10% (or 2 SE) of the floor's; its noise share from the "
    "gradient_noise diagnostic (tr Cov g, rescaled to the training batch size) or from full_gradient (1 − U / "
    "floor). A decay consistent with or faster than log n/√n bounds ‖∇L‖² from above; a slower one says nothing "
    "about it.",
    "Test loss: a final test negative ELBO more than "
    f"{TEST_RISE:.0%} above its lowest value is reported as a rise.",
    "Posterior collapse (diagnostic posterior_collapse): reported when the fraction of active latent "
    "units at the last measurement is below the diagnostic's warn_below option (default "
    f"{COLLAPSE_FRACTION:.0%}).",
    "SNR against K (diagnostic snr in a sweep with several K): the least-squares slope of log "
    "SNR at the last measurement (mean over seeds) on log K; Rainforth et al. (2018) predict "
    "SNR(θ) ∝ √(BK) (slope +1/2) and SNR(φ) ∝ √(B/K) (slope −1/2).",
    "Sweep comparisons: mean ± sd over the seeds with a finite value (sd with ddof 1); two points "
    "are said to differ beyond the spread over seeds when their means differ by more than the "
    "larger sd.",
    "Diagnostics: one sentence on the first value of the diagnostic's main column to the last. An "
    "infinite value is always reported; a NaN once the column has had a finite value (a first NaN "
    "can be by design, e.g. smoothness has no previous point at its first measurement); a column "
    "with no finite value at all is reported as undefined or broken.",
]


# --------------------------------------------------------------------------------------------
# Reading directories


@dataclass
class _Run:
    """A run directory as the report reads it."""

    path: Path
    recipe: dict[str, Any]
    info: dict[str, Any]
    metrics: Table
    evals: Table
    diagnostics: dict[str, Table]
    recipe_text: str = ""

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def status(self) -> str:
        return str(self.info.get("status", "unknown"))

    @property
    def seed(self) -> Any:
        seed = self.info.get("seed")
        return seed if seed is not None else (self.recipe.get("training") or {}).get("seed")

    def setting(self, section: str, option: str, default: Any = None) -> Any:
        body = self.recipe.get(section)
        return body.get(option, default) if isinstance(body, Mapping) else default

    @property
    def num_particles(self) -> Any:
        return self.setting("objective", "num_particles", 1)


def _load_run(path: Path, notes: list[str]) -> _Run:
    def mapping(name: str, loader: Callable[[str], Any]) -> dict[str, Any]:
        try:
            return _read_mapping(path / name, loader)
        except InputError as exc:
            notes.append(str(exc))
            return {}

    def table(file: Path) -> Table:
        try:
            return _read_table(file)
        except InputError as exc:
            notes.append(str(exc))
            return Table()

    diagnostics: dict[str, Table] = {}
    folder = path / "diagnostics"
    if folder.is_dir():
        for file in sorted(folder.glob("*.csv")):
            if not file.name.startswith("."):
                diagnostics[file.stem] = table(file)
    recipe_file = path / "recipe.yaml"
    return _Run(
        path=path,
        recipe=mapping("recipe.yaml", yaml.safe_load),
        info=mapping("run.json", json.loads),
        metrics=table(path / "metrics.csv"),
        evals=table(path / "eval.csv"),
        diagnostics=diagnostics,
        recipe_text=recipe_file.read_text(encoding="utf-8") if recipe_file.is_file() else "",
    )


def _is_run(path: Path) -> bool:
    return (path / "run.json").is_file() or (path / "metrics.csv").is_file()


def _is_sweep(path: Path) -> bool:
    return (path / "sweep.json").is_file() or (path / "summary.csv").is_file()


def _record(run: _Run) -> RunRecord:
    return RunRecord(path=run.path, recipe=run.recipe, info=run.info, metrics=run.metrics, evals=run.evals)


@dataclass
class _Point:
    """A sweep point: its label, values, runs (by directory name) and summary rows."""

    index: int
    label: str
    point: dict[str, Any]
    dirs: list[str] = field(default_factory=list)
    rows: list[dict[str, str]] = field(default_factory=list)
    colour: Any = None


@dataclass
class _Sweep:
    path: Path
    info: dict[str, Any]
    text: str
    columns: list[str]
    rows: list[dict[str, str]]
    points: list[_Point]
    runs: list[_Run]


def _load_sweep(path: Path, notes: list[str]) -> _Sweep:
    try:
        info = _read_mapping(path / "sweep.json", json.loads)
    except InputError as exc:
        notes.append(str(exc))
        info = {}
    columns: list[str] = []
    rows: list[dict[str, str]] = []
    summary = path / "summary.csv"
    if summary.is_file():
        with open(summary, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            columns = list(reader.fieldnames or [])
            rows = [dict(r) for r in reader]
    text = (path / "sweep.yaml").read_text(encoding="utf-8") if (path / "sweep.yaml").is_file() else ""

    points: list[_Point] = []
    for i, p in enumerate(info.get("points") or []):
        if isinstance(p, Mapping):
            points.append(_Point(int(p.get("index", i)), str(p.get("label") or ""), dict(p.get("point") or {})))
    by_index = {p.index: p for p in points}
    for r in info.get("runs") or []:
        if isinstance(r, Mapping) and r.get("point_index") in by_index:
            by_index[r["point_index"]].dirs.append(str(r.get("dir")))
    if not points and rows:  # no sweep.json: the point is the columns before 'seed'
        axis_columns = columns[: columns.index("seed")] if "seed" in columns else []
        seen: dict[str, _Point] = {}
        for row in rows:
            key = json.dumps([row.get(c) for c in axis_columns])
            if key not in seen:
                label = ", ".join(f"{c}={row.get(c)}" for c in axis_columns)
                seen[key] = _Point(len(seen), label, {c: row.get(c) for c in axis_columns})
            seen[key].dirs.append(str(row.get("run_dir")))
        points = list(seen.values())
    where = {d: p for p in points for d in p.dirs}
    for row in rows:
        point = where.get(str(row.get("run_dir")))
        if point is not None:
            point.rows.append(row)

    dirs = [d for p in points for d in p.dirs]
    for row in rows:  # runs summary.csv knows and sweep.json does not
        if row.get("run_dir") and row["run_dir"] not in dirs:
            dirs.append(row["run_dir"])
    if not dirs:
        dirs = sorted(d.name for d in path.iterdir() if d.is_dir() and _is_run(d))
    runs = [_load_run(path / d, notes) for d in dirs if _is_run(path / d)]
    return _Sweep(path, info, text, columns, rows, points, runs)


# --------------------------------------------------------------------------------------------
# The generic diagnostic figure


@dataclass
class Panel:
    """One panel of a diagnostic figure: a value column (or a family of numbered columns), its
    ``_se`` companion if any, and whether its y axis is logarithmic.

    ``members`` lists the columns of a family ``prefix_0, prefix_1, ...`` drawn together as thin
    lines (``column`` is then ``prefix_<j>``); it is empty for a single column."""

    column: str
    se: str | None
    log: bool
    members: list[str] = field(default_factory=list)


MAX_PANELS = 12
"""A diagnostic figure draws at most this many panels; the caption names the columns left out."""

FAMILY_MIN = 3
"""Columns ``prefix_0``, ``prefix_1``, ... (at least this many) share one panel."""

_FAMILY = re.compile(r"(.+)_(\d+)")
# the same value measured at several K (snr with num_particles: [...]): X_K1, X_K4, ...
_K_FAMILY = re.compile(r"(.+)_K(\d+)")


def _family_index(column: str) -> int:
    """The number ending a family column: j of ``prefix_<j>``, k of ``X_K<k>``."""
    return int(re.sub(r"^.*\D", "", column))


def plan_panels(tables: Sequence[Table]) -> tuple[list[Panel], dict[str, float]]:
    """The panels a diagnostic figure draws for these CSVs (one per run), and its constants.

    Every column except ``step``, ``epoch``, ``time`` and the ``X_se`` companions of a column
    ``X`` gets a panel, in file order, unless it has no finite value or holds one value in every
    row of every table (at least two rows in all): then it is a constant, named in the caption.
    Numbered columns ``prefix_0, prefix_1, ...`` (at least :data:`FAMILY_MIN`, e.g. the per-unit
    ``au_z_<j>`` of posterior_collapse) share one panel, ``prefix_<j>``; so do the columns
    ``X_K<k>`` of one value measured at several K (at least two; ``snr`` with ``num_particles``),
    as ``X_K<k>``. A panel is logarithmic
    when all its finite values are positive and max / min > 10.
    """
    columns: list[str] = []
    for t in tables:
        columns.extend(c for c in t.columns if c not in columns)
    total_rows = sum(len(t) for t in tables)

    def values_of(cs: Sequence[str]) -> np.ndarray:
        arrays = [t.column(c) for t in tables for c in cs if c in t.columns]
        return _finite(np.concatenate(arrays)) if arrays else np.array([])

    def log_scale(values: np.ndarray) -> bool:
        return bool(np.all(values > 0) and values.max() / values.min() > 10)

    families: dict[str, list[str]] = {}
    for c in columns:
        match = _K_FAMILY.fullmatch(c) or _FAMILY.fullmatch(c)
        if match and c not in _BOOKKEEPING:
            prefix = f"{match.group(1)}_K" if match.re is _K_FAMILY else match.group(1)
            families.setdefault(prefix, []).append(c)
    families = {p: sorted(m, key=_family_index) for p, m in families.items()
                if len(m) >= (2 if p.endswith("_K") and _K_FAMILY.fullmatch(m[0]) else FAMILY_MIN)}
    in_family = {c: p for p, m in families.items() for c in m}

    panels: list[Panel] = []
    constants: dict[str, float] = {}
    done: set[str] = set()
    for c in columns:
        if c in _BOOKKEEPING or (c.endswith("_se") and c[:-3] in columns):
            continue
        if c in in_family:
            prefix = in_family[c]
            if prefix not in done:
                done.add(prefix)
                values = values_of(families[prefix])
                if len(values):
                    name = f"{prefix}<k>" if _K_FAMILY.fullmatch(families[prefix][0]) else f"{prefix}_<j>"
                    panels.append(Panel(name, None, log_scale(values), families[prefix]))
            continue
        values = values_of([c])
        if not len(values):
            continue
        if total_rows >= 2 and np.all(values == values[0]) and all(
                np.all(np.isfinite(t.column(c))) for t in tables if c in t.columns):
            constants[c] = float(values[0])
            continue
        se = f"{c}_se" if f"{c}_se" in columns else None
        panels.append(Panel(c, se, log_scale(values)))
    return panels, constants


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
                    positive = _finite(y)[_finite(y) > 0]
                    floor = float(positive.min()) / 3 if len(positive) else 1e-12
                    lo = np.where(np.isfinite(lo), np.maximum(lo, floor), lo)
                ax.fill_between(x, lo, hi, color=colour, alpha=0.22, lw=0)
        if panel.log:
            ax.set_yscale("log")
        if panel.members and panel.column.endswith("<k>"):
            ks = ", ".join(str(_family_index(m)) for m in panel.members)
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
    return _png(fig), panels, constants


# --------------------------------------------------------------------------------------------
# Findings from a run


def _status_findings(run: _Run, label: str) -> list[Finding]:
    status = run.status
    if status == "completed":
        warning = run.info.get("warning")
        return [Finding(f"run {label} completed with a warning: {_first_line(warning)}", "warning", "status")] \
            if warning else []
    steps = run.info.get("steps_done")
    if steps is None and len(run.metrics):
        steps = float(np.nanmax(run.metrics.column("step")))
    if status == "failed":
        return [Finding(f"run {label} failed after step {_num(steps if steps is not None else 0)}: "
                        f"{_first_line(run.info.get('error') or 'no error recorded')}", "problem", "status")]
    if status == "interrupted":
        return [Finding(f"run {label} was interrupted at step {_num(steps if steps is not None else 0)}; its "
                        f"values are those of an unfinished run.", "warning", "status")]
    last = _num(steps) if steps is not None else "none yet"
    return [Finding(f"run {label} has status '{status}' (last recorded step {last}): it has not finished, or "
                    f"it stopped without saying why, so its values are provisional.", "warning", "status")]


def _nonfinite_findings(table: Table, what: str, label: str, topic: str, strict: bool = True) -> list[Finding]:
    """One sentence naming the columns of ``table`` with values that are not finite.

    ``strict``: every NaN or infinity counts (``metrics.csv``). Otherwise (a diagnostic) a NaN
    counts only once the column has had a finite value: a diagnostic may leave a value undefined
    by design (no previous point for a difference, a parameter group the model lacks).
    """
    steps = table.column("step")
    bad_columns: list[str] = []
    never: list[str] = []  # a diagnostic's columns without any finite value
    first_step = math.inf
    for column, values in table.columns.items():
        if column in _BOOKKEEPING:
            continue
        bad = np.isinf(values)
        finite = np.flatnonzero(np.isfinite(values))
        if strict:
            bad = ~np.isfinite(values)
        elif len(finite):
            bad = bad | (np.isnan(values) & (np.arange(len(values)) > finite[0]))
        elif len(values):
            never.append(column)
        if bad.any():
            bad_columns.append(column)
            first_step = min(first_step, float(steps[np.flatnonzero(bad)[0]]))
    found: list[Finding] = []
    if never:
        listed = ", ".join(never[:5]) + (f" and {len(never) - 5} more" if len(never) > 5 else "")
        found.append(Finding(f"{label}: {what} has no finite value in column{'s' if len(never) > 1 else ''} "
                             f"{listed}: undefined for this model, or broken from the start.", "warning", topic))
    if not bad_columns:
        return found
    names = ", ".join(bad_columns[:5]) + (f" and {len(bad_columns) - 5} more" if len(bad_columns) > 5 else "")
    plural = "s" if len(bad_columns) > 1 else ""
    return found + [Finding(f"{label}: {what} has values that are not finite (NaN or infinite) in column{plural} "
                            f"{names}, first at step {_num(first_step)}.", "problem", topic)]


def _test_findings(evals: Table, label: str) -> list[Finding]:
    if "test_loss" not in evals.columns:
        return []
    steps, values = evals.column("step"), evals.column("test_loss")
    ok = np.flatnonzero(np.isfinite(values))
    if len(ok) < 2:
        return []
    first, last = ok[0], ok[-1]
    best = ok[int(np.argmin(values[ok]))]
    who = f"{label}: " if label else ""
    rise = values[last] - values[best]
    if rise > TEST_RISE * abs(values[best]):
        return [Finding(
            f"{who}the test negative ELBO ended at {_short(values[last])} nats per example, {_short(rise)} above its "
            f"lowest value {_short(values[best])} at n = {_num(steps[best])}: check for overfitting or an unstable "
            f"step size.", "warning", "test")]
    return [Finding(
        f"{who}the test negative ELBO went from {_short(values[first])} at n = {_num(steps[first])} to "
        f"{_short(values[last])} nats per example at n = {_num(steps[last])}.", "info", "test")]


def _trend(table: Table, column: str) -> str | None:
    steps, values = table.column("step"), table.column(column)
    ok = np.flatnonzero(np.isfinite(values))
    if not len(ok):
        return None
    a, b = ok[0], ok[-1]
    if a == b:
        return f"{column} = {_short(values[a])} at n = {_num(steps[a])}"
    ratio = ""
    if values[a] > 0 and values[b] > 0 and max(values[a], values[b]) / min(values[a], values[b]) >= 2:
        factor = values[b] / values[a]
        ratio = f" (×{_short(factor)})" if factor >= 1 else f" (÷{_short(1 / factor)})"
    return (f"{column} went from {_short(values[a])} at n = {_num(steps[a])} to {_short(values[b])} at "
            f"n = {_num(steps[b])}{ratio}")


def _headline(name: str, table: Table) -> str | None:
    preferred = _HEADLINE.get(name)
    if preferred in table.columns:
        return preferred
    panels, _ = plan_panels([table])
    return next((p.column for p in panels if not p.members), None)


def _option(run: _Run | None, name: str, option: str, default: Any) -> Any:
    """Option ``option`` of diagnostic ``name`` in the run's resolved recipe."""
    for entry in (run.recipe.get("diagnostics") or []) if run is not None else []:
        if isinstance(entry, Mapping) and entry.get("name") == name and entry.get(option) is not None:
            return entry[option]
    return default


def _collapse_sentence(table: Table, who: str = "", below: float = COLLAPSE_FRACTION) -> Finding | None:
    last = _last_finite(table, "active_units")
    units = _last_finite(table, "num_units")
    if last is None:
        return None
    step, active = last
    total = units[1] if units is not None else math.nan
    fraction = _last_finite(table, "active_fraction")
    share = fraction[1] if fraction is not None else (active / total if total > 0 else math.nan)
    prefix = f"{who}: " if who else ""
    count = f"{_num(active)} of {_num(total)}" if math.isfinite(total) else f"{_num(active)}"
    if math.isfinite(share) and share < below:
        return Finding(f"{prefix}{count} latent units active at n = {_num(step)}: posterior collapse.", "warning",
                       "diagnostic:posterior_collapse")
    if math.isfinite(share) and share < 1:
        return Finding(f"{prefix}{count} latent units active at n = {_num(step)}: some are unused, but the active "
                       f"fraction {share:.0%} is not below the {below:.0%} at which the report calls it posterior "
                       f"collapse.", "info", "diagnostic:posterior_collapse")
    return Finding(f"{prefix}{count} latent units active at n = {_num(step)}: no posterior collapse.", "good",
                   "diagnostic:posterior_collapse")


def _diagnostic_findings(run: _Run, name: str, table: Table, label: str) -> list[Finding]:
    """Sentences about one run's diagnostic ``name``."""
    topic = f"diagnostic:{name}"
    who = f"{label}: " if label else ""
    found: list[Finding] = []
    if not len(table):
        return [Finding(f"{who}diagnostics/{name}.csv has no rows yet, or could not be read (see the notes).",
                        "info", topic)]
    found += _nonfinite_findings(table, f"diagnostic {name}", label or "this run", topic, strict=False)
    headline = _headline(name, table)
    trend = _trend(table, headline) if headline else None
    if trend:
        found.append(Finding(f"{who}diagnostic {name}: {trend}.", "info", topic))

    if name == "heldout_iwae" and "test_neg_iwae" in table.columns:
        iwae, elbo = _last_finite(table, "test_neg_iwae"), _last_finite(table, "test_neg_elbo")
        if iwae is not None:
            se = _last_finite(table, "test_neg_iwae_se")
            k = _last_finite(table, "num_samples")
            k_text = f" with K = {_num(k[1])} samples" if k is not None else ""
            iw = f"{_short(iwae[1])}" + (f" ± {_short(SE_BAND * se[1])}" if se is not None else "")
            text = f"{who}at n = {_num(iwae[0])} the test −IWAE bound{k_text} is {iw} nats per example"
            if se is not None:
                text += f" (± {SE_BAND:g} SE)"
            if elbo is not None and elbo[0] == iwae[0]:
                ese = _last_finite(table, "test_neg_elbo_se")
                el = f"{_short(elbo[1])}" + (f" ± {_short(SE_BAND * ese[1])}" if ese is not None else "")
                text += f" against a test −ELBO of {el}: the IWAE bound is {_short(elbo[1] - iwae[1])} nats tighter"
            found.append(Finding(text + ".", "info", topic))
    elif name == "posterior_collapse":
        collapse = _collapse_sentence(table, label, float(_option(run, name, "warn_below", COLLAPSE_FRACTION)))
        if collapse is not None:
            found.append(collapse)
    elif name == "snr":
        phi, theta = _last_finite(table, "snr_phi"), _last_finite(table, "snr_theta")
        if phi is not None:
            text = f"{who}at n = {_num(phi[0])}, SNR(φ) = {_short(phi[1])}"
            if theta is not None:
                text += f" and SNR(θ) = {_short(theta[1])}"
            if phi[1] < 1:
                found.append(Finding(text + ": the encoder's gradient is mostly noise (SNR(φ) below 1).", "warning",
                                     topic))
            else:
                found.append(Finding(text + ".", "info", topic))
    elif name == "gradient_noise":
        batch, latent = _last_finite(table, "grad_var_batch"), _last_finite(table, "grad_var_latent")
        if batch is not None and latent is not None and batch[1] + latent[1] > 0:
            share = batch[1] / (batch[1] + latent[1])
            more = ("a larger batch B reduces it more than a larger K" if share > 0.5 else
                    "more latent samples K (or a larger B) reduce most of it")
            found.append(Finding(
                f"{who}at n = {_num(batch[0])}, mini-batching makes {share:.0%} of the gradient variance and latent "
                f"sampling {1 - share:.0%}: {more}.", "info", topic))
    elif name == "full_gradient":
        full = _last_finite(table, "full_grad_norm_sq")
        if full is not None and "minibatch_grad_norm_sq" in run.metrics.columns:
            steps = table.column("step")
            earlier = steps[np.isfinite(steps) & (steps < full[0])]
            start = float(earlier.max()) if len(earlier) else 0.0
            m_steps, m_values = run.metrics.column("step"), run.metrics.column("minibatch_grad_norm_sq")
            window = (m_steps > start) & (m_steps <= full[0]) & np.isfinite(m_values)
            if window.any() and np.mean(m_values[window]) > 0:
                mini = float(np.mean(m_values[window]))
                found.append(Finding(
                    f"{who}at n = {_num(full[0])} the full-data squared gradient norm {_short(full[1])} is "
                    f"{full[1] / mini:.0%} of the mini-batch ‖g_k‖² averaged over "
                    f"n = {_num(start + 1)}–{_num(full[0])} "
                    f"({_short(mini)}): the rest is the variance of the mini-batch gradient.", "info", topic))
    elif name == "smoothness" and "lipschitz" in table.columns:
        values = _finite(table.column("lipschitz"))
        if len(values):
            found.append(Finding(
                f"{who}the local Lipschitz estimate L ranges from {_short(values.min())} to {_short(values.max())} "
                f"(median {_short(np.median(values))}) along the trajectory; the L of the theorems is at least the "
                f"largest, {_short(values.max())}.",
                "info", topic))
    return found


def convergence_findings(
    steps: Sequence[float],
    minibatch: Sequence[float],
    full: Sequence[Table] = (),
    noise: Sequence[Table] = (),
    batch_size: float | None = None,
    subject: str = "",
) -> list[Finding]:
    """The findings on convergence (:mod:`bbvi_kit.diagnostics.convergence`): about the full-data
    ‖∇L‖² of the ``full`` tables (``full_gradient`` rows of one or more seeds, fitted together)
    when there are any, then about the mini-batch ‖g_n‖² ``minibatch`` at ``steps`` (with its
    floor's noise share from the ``noise`` tables, ``gradient_noise`` rows, whose variance is
    rescaled from their batch size to the training ``batch_size``)."""
    from bbvi_kit.diagnostics import convergence

    who = f"{subject}: " if subject else ""
    found = []
    full_pair = None
    needed = {"step", "full_grad_norm_sq", "full_grad_norm_sq_se", "num_estimates"}
    full = [t for t in full if needed <= set(t.columns) and len(t)]
    if full:
        n, u, se = (np.concatenate([t.column(c) for t in full])
                    for c in ("step", "full_grad_norm_sq", "full_grad_norm_sq_se"))
        estimates = int(np.nanmax(np.concatenate([t.column("num_estimates") for t in full])))
        average = None
        if len(full) == 1 and "full_grad_norm_sq_avg" in full[0].columns:
            last = _last_finite(full[0], "full_grad_norm_sq_avg")
            if last is not None:
                row = int(np.flatnonzero(full[0].column("step") == last[0])[-1])
                average = (float(full[0].column("block_end")[row]), last[1],
                           float(full[0].column("full_grad_norm_sq_avg_se")[row]))
        verdict = convergence.full_gradient_verdict(n, u, se, estimates, average=average)
        found.append(Finding(who + verdict.sentence, verdict.level, "rate"))
        full_pair = (n, u)
    noise_pair = None
    noise = [t for t in noise if {"step", "grad_var_total"} <= set(t.columns) and len(t)]
    if noise:
        n = np.concatenate([t.column("step") for t in noise])
        variance = np.concatenate([t.column("grad_var_total") for t in noise])
        if batch_size and all("batch_size" in t.columns for t in noise):  # both parts of the variance are ∝ 1/B
            variance = variance * np.concatenate([t.column("batch_size") for t in noise]) / float(batch_size)
        noise_pair = (n, variance)
    verdict = convergence.minibatch_verdict(steps, minibatch, noise_variance=noise_pair, full=full_pair)
    found.append(Finding(who + verdict.sentence, verdict.level, "rate"))
    return found


def _run_findings(run: _Run, label: str = "") -> list[Finding]:
    found = _status_findings(run, label or run.name)
    found += _nonfinite_findings(run.metrics, "metrics.csv", label or "this run", "status")
    if "minibatch_grad_norm_sq" in run.metrics.columns and len(run.metrics):
        found += convergence_findings(
            run.metrics.column("step"), run.metrics.column("minibatch_grad_norm_sq"),
            [run.diagnostics["full_gradient"]] if "full_gradient" in run.diagnostics else [],
            [run.diagnostics["gradient_noise"]] if "gradient_noise" in run.diagnostics else [],
            run.setting("training", "batch_size"), label)
    found += _test_findings(run.evals, label)
    for name, table in run.diagnostics.items():
        found += _diagnostic_findings(run, name, table, label)
    return [Finding(f.text[0].upper() + f.text[1:], f.level, f.topic) for f in found]


# --------------------------------------------------------------------------------------------
# Findings across the points of a sweep


def _group_of(groups: Sequence[Group], dirs: Iterable[str]) -> int | None:
    names = set(dirs)
    for i, g in enumerate(groups):
        if any(r.path.name in names for r in g.runs):
            return i
    return None


def _snr_findings(groups: Sequence[Group], runs: Mapping[str, _Run]) -> list[Finding]:
    """SNR(φ) and SNR(θ) against K, per series of points that differ only in K."""
    series: dict[str, list[tuple[float, Group]]] = {}
    for g in groups:
        if not any("snr" in runs[r.path.name].diagnostics for r in g.runs if r.path.name in runs):
            continue
        k = g.setting("objective.num_particles", 1)
        rest = {key: v for key, v in g.key.items() if key != "objective.num_particles"}
        series.setdefault(json.dumps(rest, sort_keys=True, default=str), []).append((float(1 if k is None else k), g))
    found: list[Finding] = []
    for points in series.values():
        if len({k for k, _ in points}) < 2:
            continue
        points.sort(key=lambda kg: kg[0])
        others = ", ".join(p for key, p in points[0][1].parts.items() if key != "objective.num_particles")
        where = f" ({others})" if others else ""
        for column, symbol, predicted in (("snr_phi", "φ", -0.5), ("snr_theta", "θ", 0.5)):
            ks, means = [], []
            for k, g in points:
                finals = [_last_finite(runs[r.path.name].diagnostics["snr"], column)
                          for r in g.runs if r.path.name in runs and "snr" in runs[r.path.name].diagnostics]
                values = [f[1] for f in finals if f is not None]
                if values:
                    ks.append(k)
                    means.append(float(np.mean(values)))
            if len(set(ks)) < 2 or min(means) <= 0:
                continue
            slope = float(np.polyfit(np.log(ks), np.log(means), 1)[0])
            span = f"from {_short(means[0])} at K = {_num(ks[0])} to {_short(means[-1])} at K = {_num(ks[-1])}"
            fit = f"log-log slope {slope:+.2f}; predicted {predicted:+.1f}"
            if column == "snr_phi" and slope < 0:
                found.append(Finding(
                    f"SNR(φ) falls with K{where}, {span} ({fit}): raising K alone starves the encoder gradient; "
                    f"consider a larger batch B, which raises the SNR of both groups as √B, training φ on an "
                    f"objective of its own (the ELBO or MIWAE for φ and IWAE for θ, as in PIWAE, Rainforth et al. "
                    f"2018), or the doubly reparameterised gradient for φ (DReG, Tucker et al. 2019), whose SNR "
                    f"does not fall with K.",
                    "warning", "diagnostic:snr"))
            elif column == "snr_phi":
                found.append(Finding(f"SNR(φ) does not fall with K{where}, {span} ({fit}).", "info",
                                     "diagnostic:snr"))
            else:
                verb = "rises" if slope > 0 else "does not rise"
                found.append(Finding(f"SNR(θ) {verb} with K{where}, {span} ({fit}).", "info", "diagnostic:snr"))
    return found


def _sweep_findings(sweep: _Sweep, groups: Sequence[Group], runs: Mapping[str, _Run],
                    notes: list[str]) -> list[Finding]:
    found: list[Finding] = []
    status = str(sweep.info.get("status", ""))
    total = len(sweep.info.get("runs") or []) or len(sweep.rows)
    if status in ("running", "interrupted"):
        found.append(Finding(f"The sweep is {status}: {len(sweep.rows)} of {total} runs finished, so every value "
                             f"here is provisional.", "warning", "status"))
    failed = [r for r in sweep.rows if r.get("status") != "completed"]
    if not failed and sweep.rows:
        found.append(Finding(f"All {len(sweep.rows)} runs completed.", "good", "status"))
    # failed, interrupted and unfinished runs, in sweep order
    for run in sweep.runs:
        found += _status_findings(run, run.name)
        found += _nonfinite_findings(run.metrics, "metrics.csv", f"run {run.name}", "status")
    for row in failed:
        if not any(run.name == row.get("run_dir") for run in sweep.runs):
            found.append(Finding(f"run {row.get('run_dir')} {row.get('status')} after step {row.get('steps') or 0}: "
                                 f"{_first_line(row.get('error') or 'no error recorded')}", "problem", "status"))

    # convergence per point: the mean mini-batch series over seeds, the full-data estimates of all seeds
    for g in groups:
        runs_with = [r for r in g.runs if r.has_column("metrics", "minibatch_grad_norm_sq")]
        if not runs_with:
            continue
        band = aggregate([(r.column("metrics", "step"), r.column("metrics", "minibatch_grad_norm_sq"))
                          for r in runs_with])
        seeds = f"mean over {band.n} seeds" if band.n > 1 else "one seed"
        read = [runs[r.path.name] for r in runs_with if r.path.name in runs]
        full = [r.diagnostics["full_gradient"] for r in read if "full_gradient" in r.diagnostics]
        noise = [r.diagnostics["gradient_noise"] for r in read if "gradient_noise" in r.diagnostics]
        found += convergence_findings(band.x, band.mean, full, noise, g.setting("training.batch_size"),
                                      f"point {g.label} ({seeds})")

    # the best point by final test loss
    scored = []
    for p in sweep.points:
        mean, sd, n = _mean_sd(_float(r.get("final_test_loss")) for r in p.rows)
        if n:
            scored.append((mean, sd, n, p))
    if len(scored) >= 2:
        scored.sort(key=lambda s: s[0])
        (m0, s0, n0, p0), (m1, s1, n1, p1) = scored[0], scored[1]
        spread = max((s for s in (s0, s1) if math.isfinite(s)), default=math.nan)
        if math.isfinite(spread):
            verdict = "beyond" if m1 - m0 > spread else "within"
            tail = f"{verdict} the spread over seeds (larger sd {_short(spread)})"
        else:
            tail = "one seed per point, so no spread over seeds to compare with"
        found.append(Finding(
            f"Lowest mean final test loss: {p0.label or 'point ' + str(p0.index)} with {_pm(m0, s0, n0, 4)} over "
            f"{n0} seed{'s' if n0 > 1 else ''}; the next, {p1.label or 'point ' + str(p1.index)}, is "
            f"{_short(m1 - m0)} higher, {tail}.", "info", "sweep"))

    # diagnostics across points
    names = sorted({name for run in sweep.runs for name in run.diagnostics})
    for name in names:
        topic = f"diagnostic:{name}"
        for run in sweep.runs:
            if name in run.diagnostics:
                found += _nonfinite_findings(run.diagnostics[name], f"diagnostic {name}", f"run {run.name}", topic,
                                             strict=False)
        if name == "posterior_collapse":
            collapsed = []
            for g in groups:
                for r in g.runs:
                    run = runs.get(r.path.name)
                    table = run.diagnostics.get(name) if run is not None else None
                    below = float(_option(run, name, "warn_below", COLLAPSE_FRACTION))
                    finding = (_collapse_sentence(table, f"point {g.label}, seed {r.seed}", below)
                               if table is not None else None)
                    if finding is not None and finding.level == "warning":
                        collapsed.append(finding)
            found += collapsed
            if not collapsed:
                found.append(Finding("No posterior collapse in any run: the fraction of active latent units "
                                     "at the end of each is at least its posterior_collapse warn_below (default "
                                     f"{COLLAPSE_FRACTION:.0%}).", "good", topic))
        parts = []
        for g in groups:
            tables = [runs[r.path.name].diagnostics[name] for r in g.runs
                      if r.path.name in runs and name in runs[r.path.name].diagnostics]
            column = next((_headline(name, t) for t in tables if _headline(name, t)), None)
            if column is None:
                continue
            finals = [_last_finite(t, column) for t in tables]
            mean, sd, n = _mean_sd(f[1] for f in finals if f is not None)
            if n:
                parts.append((column, f"{g.label} {_pm(mean, sd, n, 3)}"))
        if parts:
            column = parts[0][0]
            found.append(Finding(f"diagnostic {name}: final {column} (mean ± sd over seeds) per point: "
                                 f"{'; '.join(p for _, p in parts)}.", "info", topic))
    found += _snr_findings(groups, runs)
    return [Finding(f.text[0].upper() + f.text[1:], f.level, f.topic) for f in found]


# --------------------------------------------------------------------------------------------
# HTML

_CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", "DejaVu Sans", "Liberation Sans", Arial, sans-serif;
       margin: 0 auto; max-width: 1320px; padding: 1.2em 2em 3em; color: #1d1d1f; background: #fff;
       line-height: 1.45; font-size: 15px; }
h1 { font-size: 1.6em; margin: 0.2em 0 0.1em; }
h2 { font-size: 1.3em; border-bottom: 2px solid #e3e3e8; padding-bottom: 0.2em; margin-top: 1.8em; }
h3 { font-size: 1.1em; margin-top: 1.4em; }
.meta { color: #555; margin: 0 0 0.8em; }
code, pre { font-family: "DejaVu Sans Mono", "Liberation Mono", Menlo, Consolas, monospace; font-size: 0.9em; }
pre { background: #f6f6f8; padding: 0.8em 1em; overflow-x: auto; border-radius: 4px; }
nav { background: #f6f6f8; padding: 0.5em 1em; border-radius: 4px; }
nav a { margin-right: 1.2em; color: #0b5cad; text-decoration: none; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.93em; }
th, td { border: 1px solid #d8d8de; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f0f0f4; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.kv th { width: 14em; }
.scroll { overflow-x: auto; }
ul.findings { list-style: none; padding-left: 0; }
ul.findings li { margin: 0.35em 0; padding: 0.35em 0.7em; border-left: 5px solid #8a8a96; background: #fafafb; }
ul.findings li.good { border-left-color: #2e8b57; }
ul.findings li.info { border-left-color: #4a7fb5; }
ul.findings li.warning { border-left-color: #d98c00; background: #fff8ec; }
ul.findings li.problem { border-left-color: #c0392b; background: #fdf0ee; }
figure { margin: 1em 0 1.4em; }
figure img { max-width: 100%; height: auto; border: 1px solid #ececf0; display: block; }
figcaption { color: #444; font-size: 0.92em; margin-top: 0.3em; max-width: 70em; }
details { margin: 0.6em 0; }
summary { cursor: pointer; color: #0b5cad; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; border-radius: 2px; margin-right: 0.4em;
          vertical-align: -0.1em; }
.notes li { color: #555; }
.runs-grid { display: flex; flex-wrap: wrap; gap: 1em; }
.runs-grid figure { flex: 1 1 560px; margin: 0.4em 0; }
"""


_SEVERITY = {"problem": 0, "warning": 1}


def _findings_html(findings: Sequence[Finding], by_severity: bool = False) -> str:
    """The findings as a list; ``by_severity``: problems first, then warnings, else in order."""
    if by_severity:
        findings = sorted(findings, key=lambda f: _SEVERITY.get(f.level, 2))
    if not findings:
        return "<p>Nothing to report.</p>"
    items = "".join(f'<li class="finding {_esc(f.level)}" data-topic="{_esc(f.topic)}">{_esc(f.text)}</li>'
                    for f in findings)
    return f'<ul class="findings">{items}</ul>'


def _png_size(png: bytes) -> tuple[int, int]:
    """Width and height of a PNG, from its IHDR chunk."""
    if png[:8] != b"\x89PNG\r\n\x1a\n" or len(png) < 24:
        return 0, 0
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def _figure_html(png: bytes, alt: str, caption: str = "", dpi: float = 110) -> str:
    """A figure with the PNG embedded; shown at about 100 CSS pixels per inch of the figure
    (``dpi``: the resolution it was drawn at), never wider than the page."""
    cap = f"<figcaption>{_esc(caption)}</figcaption>" if caption else ""
    width, height = _png_size(png)
    size = ""
    if width and height:
        scale = min(1.0, 100.0 / dpi)
        size = f' width="{round(width * scale)}" height="{round(height * scale)}"'
    return f'<figure><img src="{_data_uri(png)}" alt="{_esc(alt)}"{size}>{cap}</figure>'


def _kv_table(rows: Sequence[tuple[str, Any, bool]], cls: str = "kv summary") -> str:
    body = []
    for key, value, numeric in rows:
        if numeric:
            raw = "" if value is None else _esc(repr(float(value)) if isinstance(value, float) else value)
            body.append(f'<tr data-key="{_esc(key)}"><th>{_esc(key)}</th>'
                        f'<td class="num" data-value="{raw}">{_esc(_num(value))}</td></tr>')
        else:
            body.append(f'<tr data-key="{_esc(key)}"><th>{_esc(key)}</th><td>{_esc(value)}</td></tr>')
    return f'<table class="{cls}">{"".join(body)}</table>'


def _swatch(colour: Any) -> str:
    if colour is None:
        return ""
    return f'<span class="swatch" style="background:{matplotlib.colors.to_hex(colour)}"></span>'


def _details(summary: str, inner: str, open_: bool = False) -> str:
    return f"<details{' open' if open_ else ''}><summary>{_esc(summary)}</summary>{inner}</details>"


def _page(title: str, meta: str, sections: Sequence[tuple[str, str, str]]) -> str:
    nav = "".join(f'<a href="#{sid}">{_esc(head)}</a>' for sid, head, _ in sections)
    body = "".join(f'<section id="{sid}"><h2>{_esc(head)}</h2>{inner}</section>' for sid, head, inner in sections)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>"
            f"<header><h1>{_esc(title)}</h1><p class=\"meta\">{meta}</p></header><nav>{nav}</nav>{body}"
            "</body></html>\n")


def _rules_html() -> str:
    return _details("How the findings are computed",
                    "<ul>" + "".join(f"<li>{_esc(r)}</li>" for r in RULES) + "</ul>")


def _notes_html(notes: Sequence[str]) -> str:
    unique = list(dict.fromkeys(notes))
    return '<ul class="notes">' + "".join(f"<li>{_esc(n)}</li>" for n in unique) + "</ul>"


def _paper_figures(path: Path, scratch: Path, notes: list[str]) -> tuple[list[str], dict[str, Any]]:
    """The figures of :mod:`bbvi_kit.figures` for ``path`` drawn into ``scratch``, as HTML, and
    their figures.json."""
    out = scratch / "figures"
    try:
        written = draw_figures([path], out, warn=notes.append)
    except InputError as exc:
        notes.append(f"paper figures: {exc}")
        return [], {}
    captions = {
        "grad_norm_sq": "Squared gradient norms: (a) the mini-batch ‖g_k‖² averaged over each epoch; (b) its "
                        "running average (1/n) Σ ‖g_k‖² (solid), with the dashed reference C log n/√n fitted on "
                        "n ≥ n_max/2, and, when full_gradient ran with schedule: stratified, the running average "
                        "of the full-data ‖∇L‖² (dotted), the quantity the theorems bound by O(log n/√n). The "
                        "mini-batch curves are not: E‖g‖² = ‖∇L‖² + tr Cov(g) has a noise floor.",
        "test_loss": "Test negative ELBO (and the test negative training objective when it differs) per evaluation.",
        "iwae_bound_vs_K": "Final test −IWAE_K bound and test −ELBO against K.",
    }
    parts = []
    for p in written:
        if p.suffix == ".png":
            parts.append(_figure_html(p.read_bytes(), p.stem, captions.get(p.stem, p.stem), dpi=150))
    summary: dict[str, Any] = {}
    try:
        summary = json.loads((out / "figures.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    return parts, summary


def _copy_complete_lines(src: Path, dst: Path) -> None:
    """Copy a CSV without a last line still being written."""
    text = src.read_text(encoding="utf-8")
    if text and not text.endswith(("\n", "\r")):
        text = text[: max(text.rfind("\n"), text.rfind("\r")) + 1]
    dst.write_text(text, encoding="utf-8")


def _run_plots(run: _Run, scratch: Path, index: int, notes: list[str]) -> list[str]:
    """The run's own plots (loss, squared gradient norm), redrawn from a copy of its files."""
    if not len(run.metrics):
        return []
    where = scratch / "runs" / str(index) / run.path.parent.name / run.path.name
    where.mkdir(parents=True)
    (where / "diagnostics").mkdir()
    for name in ("metrics.csv", "eval.csv", "diagnostics/full_gradient.csv"):
        if (run.path / name).is_file():
            _copy_complete_lines(run.path / name, where / name)
    if (run.path / "recipe.yaml").is_file():
        shutil.copyfile(run.path / "recipe.yaml", where / "recipe.yaml")
    try:
        paths = plot_run(where)
    except (InputError, ValueError, KeyError, TypeError) as exc:
        notes.append(f"{run.path}: cannot draw its plots ({_one_line(exc, 200)})")
        return []
    captions = {
        "loss": "Training loss per mini-batch and test loss per evaluation (nats per example).",
        "grad_norm_sq": "Mini-batch squared gradient norm ‖g_n‖², its running average and its φ / θ parts "
                        "(log scale); with the full_gradient diagnostic, its estimates of the full-data ‖∇L‖² "
                        "(± t SE) and, under schedule: stratified, their running average: the quantity the "
                        "theorems bound. E‖g‖² = ‖∇L‖² + tr Cov(g): the mini-batch curves carry a noise floor.",
    }
    return [_figure_html(p.read_bytes(), f"{run.name} {p.stem}", captions.get(p.stem, ""), dpi=120) for p in paths]


def _diagnostic_section(name: str, series: Sequence[tuple[str, Any, Sequence[Table]]],
                        findings: Sequence[Finding], sweep: bool) -> str:
    png, panels, constants = diagnostic_figure(name, series)
    every_panel, _ = plan_panels([t for _, _, ts in series for t in ts if len(t)])
    parts = [f'<h3 id="diagnostic-{_esc(name)}">{_esc(name)}</h3>']
    if png is not None:
        caption = ["Every value column against the iteration n."]
        if sweep and len(series) > 1:
            caption.append("One colour per sweep point: bold the mean over seeds, shaded the min–max over seeds "
                           f"(a point with one seed: ± {SE_BAND:g} standard errors where the column has one).")
        elif any(p.se for p in panels):
            caption.append(f"Shaded: ± {SE_BAND:g} standard errors (the column's _se companion).")
        logs = [p.column for p in panels if p.log]
        if logs:
            caption.append(f"Log scale for {', '.join(logs)} (positive values spanning more than a decade).")
        families = [p.column for p in panels if p.members]
        if families:
            caption.append(f"Numbered columns share a panel, one thin line each: {', '.join(families)}.")
        if constants:
            caption.append("Constant: " + ", ".join(f"{k} = {_num(v)}" for k, v in constants.items()) + ".")
        if len(every_panel) > len(panels):
            left = [p.column for p in every_panel[len(panels):]]
            caption.append(f"Not drawn (at most {MAX_PANELS} panels): {', '.join(left)}.")
        parts.append(_figure_html(png, f"diagnostic {name}", " ".join(caption)))
    else:
        parts.append("<p>No value to draw yet.</p>")
    parts.append(_findings_html(findings))
    return "".join(parts)


def _last_rows_table(table: Table, limit: int = 5, max_columns: int = 24) -> str:
    """The last ``limit`` rows; at most ``max_columns`` columns (``time`` last), the rest named."""
    if not len(table):
        return ""
    columns = [c for c in table.columns if c != "time"]
    left = columns[max_columns - 1:] if len(columns) > max_columns - 1 else []
    columns = columns[: max_columns - 1] + (["time"] if "time" in table.columns else [])
    note = (f"<p>{len(left)} more columns in the file: {_esc(', '.join(left[:8]))}"
            f"{', ...' if len(left) > 8 else ''}.</p>" if left else "")
    head = "".join(f"<th>{_esc(c)}</th>" for c in columns)
    rows = []
    for i in range(max(0, len(table) - limit), len(table)):
        rows.append("<tr>" + "".join(f'<td class="num">{_esc(_num(table.columns[c][i]))}</td>' for c in columns)
                    + "</tr>")
    return f'<div class="scroll"><table><tr>{head}</tr>{"".join(rows)}</table></div>{note}'


# --------------------------------------------------------------------------------------------
# The two kinds of report


def _objective_text(run: _Run) -> str:
    objective = run.recipe.get("objective") or {}
    name = str(objective.get("name", "?"))
    extra = ", ".join(f"{k}={_num(v)}" for k, v in objective.items() if k not in ("name", "num_particles"))
    return f"{name} ({extra})" if extra else name


def _run_report(path: Path, scratch: Path, notes: list[str]) -> str:
    run = _load_run(path, notes)
    last = run.metrics[-1] if len(run.metrics) else {}
    last_eval = run.evals[-1] if len(run.evals) else {}
    schedule = run.recipe.get("schedule") or {}
    steps = last.get("step", run.info.get("steps_done"))
    rows: list[tuple[str, Any, bool]] = [
        ("recipe", run.recipe.get("name", "?"), False),
        ("model", (run.recipe.get("model") or {}).get("name", "?"), False),
        ("data", (run.recipe.get("data") or {}).get("name", "?"), False),
        ("objective", _objective_text(run), False),
        ("K (objective.num_particles)", run.num_particles, True),
        ("B (training.batch_size)", run.setting("training", "batch_size"), True),
        ("optimizer", run.setting("optimizer", "name", "?"), False),
        ("lr (optimizer.lr)", run.setting("optimizer", "lr"), True),
        ("schedule", schedule.get("name", "?") if isinstance(schedule, Mapping) else schedule, False),
        ("seed", run.seed, True),
        ("steps", steps, True),
        ("final loss", last.get("loss"), True),
        ("final minibatch_grad_norm_sq_avg", last.get("minibatch_grad_norm_sq_avg"), True),
        ("final test loss", last_eval.get("test_loss"), True),
    ]
    if "test_objective_loss" in last_eval:
        rows.append(("final test objective loss", last_eval.get("test_objective_loss"), True))
    rows.append(("status", run.status, False))
    for key in ("error", "warning"):
        if run.info.get(key):
            rows.append((key, _one_line(run.info[key], 500), False))
    if run.info.get("num_parameters") is not None:
        rows.append(("parameters", run.info["num_parameters"], True))
    if run.info.get("device"):
        rows.append(("device", run.info["device"], False))

    findings = _run_findings(run)
    summary = _kv_table(rows)
    summary += _details("recipe.yaml (the resolved recipe; bbvi-kit run accepts it as it is)",
                        f"<pre>{_esc(run.recipe_text or 'no recipe.yaml')}</pre>")
    if run.info:
        summary += _details("run.json", f"<pre>{_esc(json.dumps(run.info, indent=2, default=str))}</pre>")

    figures = _run_plots(run, scratch, 0, notes)
    paper, _ = _paper_figures(path, scratch, notes) if len(run.metrics) else ([], {})
    figure_html = ""
    if figures:
        figure_html += "<h3>This run</h3>" + "".join(figures)
    if paper:
        figure_html += "<h3>The paper's figures</h3>" + "".join(paper)
    if not figure_html:
        figure_html = "<p>No metrics rows: nothing to draw.</p>"

    diag_html = []
    for name, table in run.diagnostics.items():
        mine = [f for f in findings if f.topic == f"diagnostic:{name}"]
        diag_html.append(_diagnostic_section(name, [(run.name, "tab:blue", [table])], mine, sweep=False)
                         + _details(f"last rows of diagnostics/{name}.csv", _last_rows_table(table)))
    sections = _page_sections(findings, summary, figure_html, diag_html, notes)
    title = f"bbvi-kit report: {run.recipe.get('name', path.name)}"
    meta = (f"run directory <code>{_esc(path)}</code> · status <b>{_esc(run.status)}</b> · "
            f"generated {_esc(_now())} by bbvi-kit {_esc(bbvi_kit.__version__)}")
    return _page(title, meta, sections)



def _page_sections(findings: list[Finding], summary: str, figure_html: str, diag_html: list[str],
                   notes: list[str]) -> list[tuple[str, str, str]]:
    """The page's sections, the same for a run and a sweep: (anchor, title, HTML)."""
    sections = [
        ("findings", "Findings", _findings_html(findings, by_severity=True) + _rules_html()),
        ("summary", "Summary", summary),
        ("figures", "Figures", figure_html),
        ("diagnostics", "Diagnostics",
         "".join(diag_html) or "<p>No diagnostics were recorded (the recipe's <code>diagnostics:</code> list is "
                               "empty).</p>"),
    ]
    if notes:
        sections.append(("notes", "Notes", _notes_html(notes)))
    return sections

def _now() -> str:
    return _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %z")


def _sweep_report(path: Path, scratch: Path, notes: list[str]) -> str:
    sweep = _load_sweep(path, notes)
    runs = {run.name: run for run in sweep.runs}
    records = [_record(run) for run in sweep.runs if len(run.metrics)]
    groups = group_runs(records)
    colours = _palette(len(groups))
    for p in sweep.points:
        i = _group_of(groups, p.dirs)
        p.colour = colours[i] if i is not None else None
    group_colour = {id(g): c for g, c in zip(groups, colours)}

    # one row per point: mean ± sd over seeds of every final value
    finals = [c for c in sweep.columns if c == "steps" or c.startswith("final_")]
    axes = list((sweep.info.get("axes") or {}).keys()) or sorted({k for p in sweep.points for k in p.point})
    head = ["point"] + axes + ["runs completed"] + finals
    body = []
    for p in sweep.points:
        completed = sum(1 for r in p.rows if r.get("status") == "completed")
        cells = [f"<td>{_swatch(p.colour)}{_esc(p.label or '(all)')}</td>"]
        cells += [f"<td>{_esc(_format_point_value(p.point.get(a)))}</td>" for a in axes]
        cells.append(f'<td class="num">{completed} / {len(p.dirs) or len(p.rows)}</td>')
        for c in finals:
            values = [_float(r.get(c)) for r in p.rows]
            mean, sd, n = _mean_sd(values)
            shown = _pm(mean, sd, n)
            if c == "steps" and n:  # a count: its range, not a mean
                lo, hi = np.min(_finite(values)), np.max(_finite(values))
                shown = _num(lo) if lo == hi else f"{_num(lo)}–{_num(hi)}"
            cells.append(f'<td class="num" data-column="{_esc(c)}" data-mean="{_esc(repr(mean))}" '
                         f'data-sd="{_esc(repr(sd))}" data-n="{n}">{_esc(shown)}</td>')
        body.append(f'<tr data-point="{p.index}">{"".join(cells)}</tr>')
    table = (f'<div class="scroll"><table class="points summary"><tr>{"".join(f"<th>{_esc(h)}</th>" for h in head)}'
             f'</tr>{"".join(body)}</table></div>')
    summary = ("<p>One row per sweep point: mean ± sd over its seeds (sd with ddof 1, over the runs with a "
               "value) of the final values in <code>summary.csv</code>. Colours as in the figures.</p>" + table)

    # final diagnostic values per point, side by side
    names = sorted({name for run in sweep.runs for name in run.diagnostics})
    if names:
        columns: list[tuple[str, str]] = []
        for name in names:
            tables = [run.diagnostics[name] for run in sweep.runs if name in run.diagnostics]
            panels, _ = plan_panels(tables)
            columns += [(name, panel.column) for panel in panels if not panel.members]
        head = "".join(f"<th>{_esc(n)}<br>{_esc(c)}</th>" for n, c in columns)
        rows = []
        for p in sweep.points:
            cells = [f"<td>{_swatch(p.colour)}{_esc(p.label or '(all)')}</td>"]
            for name, column in columns:
                values = []
                for d in p.dirs:
                    run = runs.get(d)
                    if run is not None and name in run.diagnostics:
                        last = _last_finite(run.diagnostics[name], column)
                        if last is not None:
                            values.append(last[1])
                mean, sd, n = _mean_sd(values)
                cells.append(f'<td class="num" data-column="{_esc(name)}.{_esc(column)}" '
                             f'data-mean="{_esc(repr(mean))}" data-n="{n}">{_esc(_pm(mean, sd, n))}</td>')
            rows.append(f'<tr data-point="{p.index}">{"".join(cells)}</tr>')
        summary += ("<h3>Final diagnostic values per point</h3><p>The last finite value of each diagnostic column, "
                    "mean ± sd over seeds.</p>"
                    f'<div class="scroll"><table class="diagnostic-finals"><tr><th>point</th>{head}</tr>'
                    f'{"".join(rows)}</table></div>')

    if sweep.rows:
        cols = sweep.columns
        text_columns = ("status", "run_dir", "error", "warning")

        def cell(row: Mapping[str, str], c: str) -> str:
            if c in text_columns:
                return f"<td>{_esc(_first_line(row.get(c) or '') if c == 'error' else row.get(c, ''))}</td>"
            return f'<td class="num">{_esc(_num(row.get(c)))}</td>'

        raw = "".join("<tr>" + "".join(cell(r, c) for c in cols) + "</tr>" for r in sweep.rows)
        head = "".join(f"<th>{_esc(c)}</th>" for c in cols)
        summary += _details("every run (summary.csv)",
                            f'<div class="scroll"><table class="runs"><tr>{head}</tr>{raw}</table></div>')
    summary += _details("sweep.yaml (the sweep as given; bbvi-kit run re-runs it)",
                        f"<pre>{_esc(sweep.text or 'no sweep.yaml')}</pre>")
    if sweep.runs and sweep.runs[0].recipe_text:
        summary += _details(f"recipe.yaml of {sweep.runs[0].name} (the resolved recipe of one run)",
                            f"<pre>{_esc(sweep.runs[0].recipe_text)}</pre>")

    findings = _sweep_findings(sweep, groups, runs, notes)

    paper, _ = _paper_figures(path, scratch, notes) if records else ([], {})
    figure_html = ("<h3>The paper's figures</h3>" + "".join(paper)) if paper else "<p>No run has metrics rows yet.</p>"
    per_run = []
    for i, run in enumerate(sweep.runs):
        plots = _run_plots(run, scratch, i, notes)
        point = next((p for p in sweep.points if run.name in p.dirs), None)
        colour = point.colour if point is not None else None
        own = [Finding(f.text, f.level, f"run:{f.topic}") for f in _run_findings(run, "")
               if not f.topic.startswith("diagnostic:")]
        inner = _findings_html(own)
        inner += f'<div class="runs-grid">{"".join(plots)}</div>' if plots else "<p>No metrics rows.</p>"
        per_run.append(f'<details class="run"><summary>{_swatch(colour)}{_esc(run.name)} · {_esc(run.status)}'
                       f"</summary>{inner}</details>")
    if per_run:
        figure_html += "<h3>Each run</h3><p>Every run's own plots (click to open).</p>" + "".join(per_run)

    diag_html = []
    for name in names:
        series = []
        for g in groups:
            tables = [runs[r.path.name].diagnostics[name] for r in g.runs
                      if r.path.name in runs and name in runs[r.path.name].diagnostics]
            if tables:
                series.append((g.label, group_colour[id(g)], tables))
        mine = [f for f in findings if f.topic == f"diagnostic:{name}"]
        diag_html.append(_diagnostic_section(name, series, mine, sweep=True))

    sections = _page_sections(findings, summary, figure_html, diag_html, notes)
    name = sweep.info.get("name") or path.parent.name
    total = len(sweep.info.get("runs") or []) or len(sweep.rows)
    seeds = sweep.info.get("seeds") or []
    meta = (f"sweep directory <code>{_esc(path)}</code> · {len(sweep.points)} points × {len(seeds)} seeds "
            f"({_esc(', '.join(map(str, seeds)))}) = {total} runs · status "
            f"<b>{_esc(sweep.info.get('status', '?'))}</b> · generated {_esc(_now())} by bbvi-kit "
            f"{_esc(bbvi_kit.__version__)}")
    return _page(f"bbvi-kit sweep report: {name}", meta, sections)


def _format_point_value(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(", ", ": "))
    return _num(value) if isinstance(value, (int, float)) else str(value)


# --------------------------------------------------------------------------------------------
# Entry points


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
    sweep = _is_sweep(path)
    if not sweep and not _is_run(path):
        raise InputError(f"{path}: not a run directory (run.json, metrics.csv) or a sweep directory "
                         f"(sweep.json, summary.csv)")
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bbvi-kit-report-") as tmp:
        page = _sweep_report(path, Path(tmp), notes) if sweep else _run_report(path, Path(tmp), notes)
    if warn is not None:
        for note in dict.fromkeys(notes):
            warn(note)
    return page


def _atomic_write(path: Path, text: str) -> None:
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
        _atomic_write(target, page)
    except OSError as exc:
        raise InputError(f"cannot write {target}: {exc.strerror or exc}") from exc
    return target
