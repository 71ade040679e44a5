"""The report's figures as HTML: the paper's figures (:func:`bbvi_kit.plots.draw_figures`), each
run's own plots (:func:`bbvi_kit.plots.plot_run`) and one section per diagnostic
(:func:`bbvi_kit.plots.diagnostic_figure` with its caption and findings), all drawn into a
scratch folder, never into the directory reported on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Sequence

from bbvi_kit.errors import InputError
from bbvi_kit.findings import Finding
from bbvi_kit.plots import diagnostic_figure, draw_figures, plot_run
from bbvi_kit.report.html import Markup, figure, macros
from bbvi_kit.results.panels import MAX_PANELS, SE_BAND, plan_panels
from bbvi_kit.results.run import Run
from bbvi_kit.results.table import Table
from bbvi_kit.results.words import num, one_line

__all__ = ["diagnostic_section", "last_rows_table", "paper_figures", "run_plots"]

_PAPER_CAPTIONS = {
    "grad_norm_sq": "Squared gradient norms: (a) the mini-batch ‖g_k‖² averaged over each epoch; (b) its "
                    "running average (1/n) Σ ‖g_k‖² (solid), with the dashed reference C log n/√n fitted on "
                    "n ≥ n_max/2, and, when full_gradient ran with schedule: stratified, the running average "
                    "of the full-data ‖∇L‖² (dotted), the quantity the theorems bound by O(log n/√n). The "
                    "mini-batch curves are not: E‖g‖² = ‖∇L‖² + tr Cov(g) has a noise floor.",
    "test_loss": "Test negative ELBO (and the test negative training objective when it differs) per evaluation.",
    "iwae_bound_vs_K": "Final test −IWAE_K bound and test −ELBO against K.",
    "snr_vs_K": "Gradient SNR of the encoder (φ) and the decoder (θ) at each run's last snr measurement against "
                "K, one line per series of points that differ only in K (e.g. per estimator); dashed: the slopes "
                "−1/2 (φ) and +1/2 (θ) of the pathwise IWAE gradient (Rainforth et al. 2018). DReG's SNR(φ) should "
                "not fall (Tucker et al. 2019).",
}

_RUN_CAPTIONS = {
    "loss": "Training loss per mini-batch and test loss per evaluation (nats per example).",
    "grad_norm_sq": "Mini-batch squared gradient norm ‖g_n‖², its running average and its φ / θ parts "
                    "(log scale); with the full_gradient diagnostic, its estimates of the full-data ‖∇L‖² "
                    "(± t SE) and, under schedule: stratified, their running average: the quantity the "
                    "theorems bound. E‖g‖² = ‖∇L‖² + tr Cov(g): the mini-batch curves carry a noise floor.",
}


def paper_figures(path: Path, scratch: Path, notes: list[str]) -> tuple[list[Markup], dict[str, Any]]:
    """The figures of :func:`bbvi_kit.plots.draw_figures` for ``path`` drawn into ``scratch``, as
    HTML, and their figures.json."""
    out = scratch / "figures"
    try:
        written = draw_figures([path], out, warn=notes.append)
    except InputError as exc:
        notes.append(f"paper figures: {exc}")
        return [], {}
    parts = [figure(p.read_bytes(), p.stem, _PAPER_CAPTIONS.get(p.stem, p.stem), dpi=150)
             for p in written if p.suffix == ".png"]
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


def run_plots(run: Run, scratch: Path, index: int, notes: list[str]) -> list[Markup]:
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
        notes.append(f"{run.path}: cannot draw its plots ({one_line(exc, 200)})")
        return []
    return [figure(p.read_bytes(), f"{run.name} {p.stem}", _RUN_CAPTIONS.get(p.stem, ""), dpi=120) for p in paths]


def _caption(panels: Sequence[Any], every_panel: Sequence[Any], constants: dict[str, float], several: bool) -> str:
    caption = ["Every value column against the iteration n."]
    if several:
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
        caption.append("Constant: " + ", ".join(f"{k} = {num(v)}" for k, v in constants.items()) + ".")
    if len(every_panel) > len(panels):
        left = [p.column for p in every_panel[len(panels):]]
        caption.append(f"Not drawn (at most {MAX_PANELS} panels): {', '.join(left)}.")
    return " ".join(caption)


def diagnostic_section(name: str, series: Sequence[tuple[str, Any, Sequence[Table]]],
                       findings: Sequence[Finding], sweep: bool) -> Markup:
    """A diagnostic's heading, generic figure (with a caption saying how it is drawn) and findings."""
    m = macros()
    png, panels, constants = diagnostic_figure(name, series)
    every_panel, _ = plan_panels([t for _, _, ts in series for t in ts if len(t)])
    html = m.heading(name, f"diagnostic-{name}")
    if png is not None:
        html += figure(png, f"diagnostic {name}", _caption(panels, every_panel, constants, sweep and len(series) > 1))
    else:
        html += m.paragraph("No value to draw yet.")
    return html + m.findings(findings)


def last_rows_table(table: Table, limit: int = 5, max_columns: int = 24) -> Markup:
    """The last ``limit`` rows; at most ``max_columns`` columns (``time`` last), the rest named."""
    if not len(table):
        return Markup("")
    m = macros()
    columns = [c for c in table.columns if c != "time"]
    left = columns[max_columns - 1:] if len(columns) > max_columns - 1 else []
    columns = columns[: max_columns - 1] + (["time"] if "time" in table.columns else [])
    rows = [m.row([m.cell(num(table.columns[c][i]), "num") for c in columns])
            for i in range(max(0, len(table) - limit), len(table))]
    note = (m.paragraph(f"{len(left)} more columns in the file: {', '.join(left[:8])}"
                        f"{', ...' if len(left) > 8 else ''}.") if left else Markup(""))
    return m.table(columns, rows) + note
