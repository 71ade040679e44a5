"""The findings about a sweep: its status and failed runs, the convergence verdict per point
(the mean mini-batch series over seeds, the full-data estimates of all seeds fitted together),
the point with the lowest final test loss, and each diagnostic's, across its points (the
plugins' :meth:`~bbvi_kit.diagnostics.Diagnostic.sweep_findings` and
:meth:`~bbvi_kit.diagnostics.Diagnostic.comparison_findings`)."""

from __future__ import annotations

import math
from typing import Iterable, Sequence


from bbvi_kit.findings import Finding
from bbvi_kit.report.findings import convergence_findings, diagnostic_class, headline, nonfinite_findings, \
    status_findings
from bbvi_kit.results.bands import aggregate
from bbvi_kit.results.groups import Group
from bbvi_kit.results.sweep import Sweep
from bbvi_kit.results.table import finite, last_finite
from bbvi_kit.results.words import first_line, num, short, to_float

__all__ = ["mean_sd", "plus_minus", "sweep_findings"]


def mean_sd(values: Iterable[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (ddof 1; NaN for one value) and count of the finite values."""
    v = finite(list(values))
    if not len(v):
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else math.nan, len(v)


def plus_minus(mean: float, sd: float, n: int, digits: int = 6) -> str:
    """'mean ± sd' (the mean alone for one value, '—' for none)."""
    if n == 0:
        return "—"
    if n == 1 or not math.isfinite(sd):
        return num(mean, digits)
    return f"{num(mean, digits)} ± {num(sd, 3)}"


def _status(sweep: Sweep) -> list[Finding]:
    found: list[Finding] = []
    status = str(sweep.info.get("status", ""))
    total = len(sweep.info.get("runs") or []) or len(sweep.rows)
    if status in ("running", "interrupted"):
        found.append(Finding(f"The sweep is {status}: {len(sweep.rows)} of {total} runs finished, so every value "
                             f"here is provisional.", "warning", "status", {"finished": len(sweep.rows), "runs": total}))
    failed = [r for r in sweep.rows if r.get("status") != "completed"]
    if not failed and sweep.rows:
        found.append(Finding(f"All {len(sweep.rows)} runs completed.", "good", "status", {"runs": len(sweep.rows)}))
    # failed, interrupted and unfinished runs, in sweep order
    for run in sweep.runs:
        found += status_findings(run, run.name)
        found += nonfinite_findings(run.metrics, "metrics.csv", f"run {run.name}", "status")
    for row in failed:
        if not any(run.name == row.get("run_dir") for run in sweep.runs):
            found.append(Finding(f"run {row.get('run_dir')} {row.get('status')} after step {row.get('steps') or 0}: "
                                 f"{first_line(row.get('error') or 'no error recorded')}", "problem", "status"))
    return found


def _convergence(groups: Sequence[Group]) -> list[Finding]:
    found: list[Finding] = []
    for g in groups:
        runs_with = [r for r in g.runs if r.has_column("metrics", "minibatch_grad_norm_sq")]
        if not runs_with:
            continue
        band = aggregate([(r.column("metrics", "step"), r.column("metrics", "minibatch_grad_norm_sq"))
                          for r in runs_with])
        seeds = f"mean over {band.n} seeds" if band.n > 1 else "one seed"
        full = [r.diagnostics["full_gradient"] for r in runs_with if "full_gradient" in r.diagnostics]
        noise = [r.diagnostics["gradient_noise"] for r in runs_with if "gradient_noise" in r.diagnostics]
        found += convergence_findings(band.x, band.mean, full, noise, g.setting("training.batch_size"),
                                      f"point {g.label} ({seeds})")
    return found


def _best_point(sweep: Sweep) -> list[Finding]:
    scored = []
    for p in sweep.points:
        mean, sd, n = mean_sd(to_float(r.get("final_test_loss")) for r in p.rows)
        if n:
            scored.append((mean, sd, n, p))
    if len(scored) < 2:
        return []
    scored.sort(key=lambda s: s[0])
    (m0, s0, n0, p0), (m1, s1, _, p1) = scored[0], scored[1]
    spread = max((s for s in (s0, s1) if math.isfinite(s)), default=math.nan)
    if math.isfinite(spread):
        verdict = "beyond" if m1 - m0 > spread else "within"
        tail = f"{verdict} the spread over seeds (larger sd {short(spread)})"
    else:
        tail = "one seed per point, so no spread over seeds to compare with"
    return [Finding(
        f"Lowest mean final test loss: {p0.label or 'point ' + str(p0.index)} with {plus_minus(m0, s0, n0, 4)} over "
        f"{n0} seed{'s' if n0 > 1 else ''}; the next, {p1.label or 'point ' + str(p1.index)}, is "
        f"{short(m1 - m0)} higher, {tail}.", "info", "sweep",
        {"best": m0, "best_sd": s0, "next": m1, "next_sd": s1, "difference": m1 - m0, "spread": spread})]


def _finals_per_point(name: str, groups: Sequence[Group]) -> list[Finding]:
    parts = []
    for g in groups:
        tables = [r.diagnostics[name] for r in g.runs if name in r.diagnostics]
        column = next((headline(name, t) for t in tables if headline(name, t)), None)
        if column is None:
            continue
        finals = [last_finite(t, column) for t in tables]
        mean, sd, n = mean_sd(f[1] for f in finals if f is not None)
        if n:
            parts.append((column, f"{g.label} {plus_minus(mean, sd, n, 3)}"))
    if not parts:
        return []
    return [Finding(f"diagnostic {name}: final {parts[0][0]} (mean ± sd over seeds) per point: "
                    f"{'; '.join(p for _, p in parts)}.", "info", f"diagnostic:{name}")]


def sweep_findings(sweep: Sweep, groups: Sequence[Group]) -> list[Finding]:
    """Every finding about ``sweep`` whose runs with metrics rows form ``groups``, each a
    sentence of its own (first letter in upper case)."""
    found = _status(sweep) + _convergence(groups) + _best_point(sweep)
    names = sorted({name for run in sweep.runs for name in run.diagnostics})
    for name in names:
        topic = f"diagnostic:{name}"
        for run in sweep.runs:
            if name in run.diagnostics:
                found += nonfinite_findings(run.diagnostics[name], f"diagnostic {name}", f"run {run.name}", topic,
                                            strict=False)
        hook = getattr(diagnostic_class(name), "sweep_findings", None)
        if hook is not None:
            found += [f.with_topic(topic) for f in hook(name, groups)]
        found += _finals_per_point(name, groups)
    for name in names:
        hook = getattr(diagnostic_class(name), "comparison_findings", None)
        if hook is not None:
            found += [f.with_topic(f"diagnostic:{name}") for f in hook(name, groups)]
    return [f.capitalised() for f in found]
