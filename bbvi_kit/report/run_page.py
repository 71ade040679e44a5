"""The report page of one run directory, and the sections every page has."""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import bbvi_kit
from bbvi_kit.findings import Finding
from bbvi_kit.report.figures import diagnostic_section, last_rows_table, paper_figures, run_plots
from bbvi_kit.report.findings import run_findings
from bbvi_kit.report.html import CSS, Markup, macros
from bbvi_kit.report.rules import RULES
from bbvi_kit.results.run import Run, load_run
from bbvi_kit.results.words import num, one_line

__all__ = ["now", "page_sections", "run_page"]

_SEVERITY = {"problem": 0, "warning": 1}


def now() -> str:
    """The time the page is generated, with its time zone."""
    return _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %z")


def page_sections(findings: list[Finding], summary: Markup, figure_html: Markup, diag_html: list[Markup],
                  notes: list[str]) -> list[tuple[str, str, Markup]]:
    """The page's sections, the same for a run and a sweep: (anchor, title, HTML); the findings
    problems first, then warnings, else in order."""
    m = macros()
    ordered = sorted(findings, key=lambda f: _SEVERITY.get(f.level, 2))
    sections = [
        ("findings", "Findings", m.findings(ordered) + m.rules(RULES)),
        ("summary", "Summary", summary),
        ("figures", "Figures", figure_html),
        ("diagnostics", "Diagnostics",
         Markup("").join(diag_html) or Markup("<p>No diagnostics were recorded (the recipe's "
                                              "<code>diagnostics:</code> list is empty).</p>")),
    ]
    if notes:
        sections.append(("notes", "Notes", m.list_items(list(dict.fromkeys(notes)), "notes")))
    return sections


def _objective_text(run: Run) -> str:
    objective = run.recipe.get("objective") or {}
    name = str(objective.get("name", "?"))
    extra = ", ".join(f"{k}={num(v)}" for k, v in objective.items() if k not in ("name", "num_particles"))
    return f"{name} ({extra})" if extra else name


def _summary_rows(run: Run) -> list[tuple[str, Any, bool]]:
    last = run.metrics[-1] if len(run.metrics) else {}
    last_eval = run.evals[-1] if len(run.evals) else {}
    schedule = run.recipe.get("schedule") or {}
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
        ("steps", last.get("step", run.info.get("steps_done")), True),
        ("final loss", last.get("loss"), True),
        ("final minibatch_grad_norm_sq_avg", last.get("minibatch_grad_norm_sq_avg"), True),
        ("final test loss", last_eval.get("test_loss"), True),
    ]
    if "test_objective_loss" in last_eval:
        rows.append(("final test objective loss", last_eval.get("test_objective_loss"), True))
    rows.append(("status", run.status, False))
    for key in ("error", "warning"):
        if run.info.get(key):
            rows.append((key, one_line(run.info[key], 500), False))
    if run.info.get("num_parameters") is not None:
        rows.append(("parameters", run.info["num_parameters"], True))
    if run.info.get("device"):
        rows.append(("device", run.info["device"], False))
    return rows


def _kv(rows: Sequence[tuple[str, Any, bool]]) -> Markup:
    shown = []
    for key, value, numeric in rows:
        raw = "" if value is None else (repr(float(value)) if isinstance(value, float) else value)
        shown.append({"key": key, "numeric": numeric, "raw": raw, "shown": num(value) if numeric else value})
    return macros().kv_table(shown)


def run_page(path: Path, scratch: Path, notes: list[str]) -> str:
    """The HTML page of the run directory ``path`` (figures drawn in ``scratch``)."""
    m = macros()
    run = load_run(path, notes)
    findings = run_findings(run)
    summary = _kv(_summary_rows(run))
    summary += m.details("recipe.yaml (the resolved recipe; bbvi-kit run accepts it as it is)",
                         m.pre(run.recipe_text or "no recipe.yaml"))
    if run.info:
        summary += m.details("run.json", m.pre(json.dumps(run.info, indent=2, default=str)))

    figures = run_plots(run, scratch, 0, notes)
    paper, _ = paper_figures(path, scratch, notes) if len(run.metrics) else ([], {})
    figure_html = Markup("")
    if figures:
        figure_html += m.heading("This run") + Markup("").join(figures)
    if paper:
        figure_html += m.heading(Markup("The paper's figures")) + Markup("").join(paper)
    if not figure_html:
        figure_html = m.paragraph("No metrics rows: nothing to draw.")

    diag_html = []
    for name, table in run.diagnostics.items():
        mine = [f for f in findings if f.topic == f"diagnostic:{name}"]
        diag_html.append(diagnostic_section(name, [(run.name, "tab:blue", [table])], mine, sweep=False)
                         + m.details(f"last rows of diagnostics/{name}.csv", last_rows_table(table)))
    sections = page_sections(findings, summary, figure_html, diag_html, notes)
    title = f"bbvi-kit report: {run.recipe.get('name', path.name)}"
    return str(m.page(title, m.run_meta(path, run.status, now(), bbvi_kit.__version__), sections, CSS))
