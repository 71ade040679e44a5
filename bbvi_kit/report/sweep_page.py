"""The report page of one sweep directory: its points with the mean ± sd over seeds of every
final value, the final diagnostic values per point, every run's row and plots, the paper's
figures and one figure per diagnostic, one colour per point."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import matplotlib.colors
import numpy as np

import bbvi_kit
from bbvi_kit.plots.common import palette
from bbvi_kit.report.figures import diagnostic_section, paper_figures, run_plots
from bbvi_kit.report.findings import run_findings
from bbvi_kit.report.html import CSS, Markup, macros
from bbvi_kit.report.run_page import now, page_sections
from bbvi_kit.report.sweep_findings import mean_sd, plus_minus, sweep_findings
from bbvi_kit.results.groups import Group, group_runs
from bbvi_kit.results.panels import plan_panels
from bbvi_kit.results.sweep import Sweep, SweepPoint, load_sweep
from bbvi_kit.results.table import finite, last_finite
from bbvi_kit.results.words import first_line, num, to_float

__all__ = ["sweep_page"]


def _group_of(groups: Sequence[Group], dirs: Iterable[str]) -> int | None:
    names = set(dirs)
    for i, g in enumerate(groups):
        if any(r.path.name in names for r in g.runs):
            return i
    return None


def _format_point_value(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(", ", ": "))
    return num(value) if isinstance(value, (int, float)) else str(value)


def _point_cell(point: SweepPoint, colour: str | None) -> Markup:
    m = macros()
    return m.cell(m.swatch(colour) + (point.label or "(all)"))


def _points_table(sweep: Sweep, colours: Mapping[int, str | None]) -> Markup:
    """One row per point: mean ± sd over seeds of every final value of ``summary.csv``."""
    m = macros()
    finals = [c for c in sweep.columns if c == "steps" or c.startswith("final_")]
    axes = list((sweep.info.get("axes") or {}).keys()) or sorted({k for p in sweep.points for k in p.point})
    rows = []
    for p in sweep.points:
        completed = sum(1 for r in p.rows if r.get("status") == "completed")
        cells = [_point_cell(p, colours[p.index])]
        cells += [m.cell(_format_point_value(p.point.get(a))) for a in axes]
        cells.append(m.cell(f"{completed} / {len(p.dirs) or len(p.rows)}", "num"))
        for c in finals:
            values = [to_float(r.get(c)) for r in p.rows]
            mean, sd, n = mean_sd(values)
            shown = plus_minus(mean, sd, n)
            if c == "steps" and n:  # a count: its range, not a mean
                lo, hi = np.min(finite(values)), np.max(finite(values))
                shown = num(lo) if lo == hi else f"{num(lo)}–{num(hi)}"
            cells.append(m.cell(shown, "num", {"data-column": c, "data-mean": repr(mean), "data-sd": repr(sd),
                                               "data-n": n}))
        rows.append(m.row(cells, p.index))
    return (m.paragraph(Markup("One row per sweep point: mean ± sd over its seeds (sd with ddof 1, over the runs "
                               "with a value) of the final values in <code>summary.csv</code>. Colours as in the "
                               "figures."))
            + m.table(["point", *axes, "runs completed", *finals], rows, "points summary"))


def _diagnostic_finals(sweep: Sweep, names: Sequence[str], colours: Mapping[int, str | None]) -> Markup:
    """The last finite value of each diagnostic column, mean ± sd over seeds, per point."""
    m = macros()
    runs = {run.name: run for run in sweep.runs}
    columns: list[tuple[str, str]] = []
    for name in names:
        panels, _ = plan_panels([run.diagnostics[name] for run in sweep.runs if name in run.diagnostics])
        columns += [(name, panel.column) for panel in panels if not panel.members]
    rows = []
    for p in sweep.points:
        cells = [_point_cell(p, colours[p.index])]
        for name, column in columns:
            values = []
            for d in p.dirs:
                run = runs.get(d)
                if run is not None and name in run.diagnostics:
                    last = last_finite(run.diagnostics[name], column)
                    if last is not None:
                        values.append(last[1])
            mean, sd, n = mean_sd(values)
            cells.append(m.cell(plus_minus(mean, sd, n), "num",
                                {"data-column": f"{name}.{column}", "data-mean": repr(mean), "data-n": n}))
        rows.append(m.row(cells, p.index))
    head = Markup("<th>point</th>") + Markup("").join(
        Markup("<th>{}<br>{}</th>").format(n, c) for n, c in columns)
    return (m.heading("Final diagnostic values per point")
            + m.paragraph("The last finite value of each diagnostic column, mean ± sd over seeds.")
            + m.table([], rows, "diagnostic-finals", head))


def _runs_table(sweep: Sweep) -> Markup:
    m = macros()
    text_columns = ("status", "run_dir", "error", "warning")

    def cell(row: Mapping[str, str], c: str) -> Markup:
        if c in text_columns:
            return m.cell(first_line(row.get(c) or "") if c == "error" else row.get(c, ""))
        return m.cell(num(row.get(c)), "num")

    rows = [m.row([cell(r, c) for c in sweep.columns]) for r in sweep.rows]
    return m.details("every run (summary.csv)", m.table(sweep.columns, rows, "runs"))


def sweep_page(path: Path, scratch: Path, notes: list[str]) -> str:
    """The HTML page of the sweep directory ``path`` (figures drawn in ``scratch``)."""
    m = macros()
    sweep = load_sweep(path, notes)
    groups = group_runs([run for run in sweep.runs if len(run.metrics)])
    group_colours = palette(len(groups))
    colours: dict[int, str | None] = {}  # a swatch per point: its group's colour
    for p in sweep.points:
        i = _group_of(groups, p.dirs)
        colours[p.index] = matplotlib.colors.to_hex(group_colours[i]) if i is not None else None

    summary = _points_table(sweep, colours)
    names = sorted({name for run in sweep.runs for name in run.diagnostics})
    if names:
        summary += _diagnostic_finals(sweep, names, colours)
    if sweep.rows:
        summary += _runs_table(sweep)
    summary += m.details("sweep.yaml (the sweep as given; bbvi-kit run re-runs it)", m.pre(sweep.text or "no sweep.yaml"))
    if sweep.runs and sweep.runs[0].recipe_text:
        summary += m.details(f"recipe.yaml of {sweep.runs[0].name} (the resolved recipe of one run)",
                             m.pre(sweep.runs[0].recipe_text))

    findings = sweep_findings(sweep, groups)
    paper, _ = paper_figures(path, scratch, notes) if groups else ([], {})
    figure_html = (m.heading(Markup("The paper's figures")) + Markup("").join(paper)) if paper else \
        m.paragraph("No run has metrics rows yet.")
    per_run = []
    for i, run in enumerate(sweep.runs):
        plots = run_plots(run, scratch, i, notes)
        point = next((p for p in sweep.points if run.name in p.dirs), None)
        colour = colours[point.index] if point is not None else None
        own = [f.with_topic(f"run:{f.topic}") for f in run_findings(run, "") if not f.topic.startswith("diagnostic:")]
        inner = m.findings(own) + (m.runs_grid(plots) if plots else m.paragraph("No metrics rows."))
        per_run.append(m.details(m.swatch(colour) + f"{run.name} · {run.status}", inner, cls="run"))
    if per_run:
        figure_html += (m.heading("Each run") + m.paragraph(Markup("Every run's own plots (click to open)."))
                        + Markup("").join(per_run))

    diag_html = []
    for name in names:
        series = []
        for g, colour in zip(groups, group_colours):
            tables = [r.diagnostics[name] for r in g.runs if name in r.diagnostics]
            if tables:
                series.append((g.label, colour, tables))
        mine = [f for f in findings if f.topic == f"diagnostic:{name}"]
        diag_html.append(diagnostic_section(name, series, mine, sweep=True))

    sections = page_sections(findings, summary, figure_html, diag_html, notes)
    total = len(sweep.info.get("runs") or []) or len(sweep.rows)
    seeds = sweep.info.get("seeds") or []
    meta = m.sweep_meta(path, len(sweep.points), len(seeds), ", ".join(map(str, seeds)), total,
                        sweep.info.get("status", "?"), now(), bbvi_kit.__version__)
    title = f"bbvi-kit sweep report: {sweep.info.get('name') or path.parent.name}"
    return str(m.page(title, meta, sections, CSS))
