"""The findings about one run: its status, values that are not finite, the convergence verdict,
the test loss, and each diagnostic's (the generic trend of its headline column, and the
sentences of the diagnostic plugin itself, :meth:`bbvi_kit.diagnostics.Diagnostic.findings`,
found through the registry by the name of its CSV file)."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from numpy.typing import ArrayLike

from bbvi_kit import registry
from bbvi_kit.errors import InputError
from bbvi_kit.findings import Finding
from bbvi_kit.report.rules import TEST_RISE
from bbvi_kit.results.panels import BOOKKEEPING, plan_panels
from bbvi_kit.results.run import Run
from bbvi_kit.results.table import Table, last_finite
from bbvi_kit.results.words import first_line, num, short

__all__ = ["convergence_findings", "diagnostic_class", "diagnostic_findings", "headline", "nonfinite_findings",
           "run_findings", "status_findings", "test_findings"]


def diagnostic_class(name: str) -> Any:
    """The diagnostic plugin registered as ``name`` (its findings hooks), or ``None`` for a name no
    plugin has, or one that fails to load."""
    if name not in registry.diagnostics:
        return None
    try:
        return registry.diagnostics.get(name)
    except InputError:
        return None


def headline(name: str, table: Table) -> str | None:
    """The column of diagnostic ``name`` whose trend the report states: the plugin's
    :meth:`~bbvi_kit.diagnostics.Diagnostic.headline`, else the first value column."""
    hook = getattr(diagnostic_class(name), "headline", None)
    preferred = hook(table) if hook is not None else None
    if preferred is not None:
        return preferred
    panels, _ = plan_panels([table])
    return next((p.column for p in panels if not p.members), None)


def status_findings(run: Run, label: str) -> list[Finding]:
    """A run that failed, was interrupted, has not finished, or completed with a warning."""
    status = run.status
    if status == "completed":
        warning = run.info.get("warning")
        return [Finding(f"run {label} completed with a warning: {first_line(warning)}", "warning", "status")] \
            if warning else []
    steps = run.info.get("steps_done")
    if steps is None and len(run.metrics):
        steps = float(np.nanmax(run.metrics.column("step")))
    numbers = {"step": float(steps)} if steps is not None else {}
    if status == "failed":
        return [Finding(f"run {label} failed after step {num(steps if steps is not None else 0)}: "
                        f"{first_line(run.info.get('error') or 'no error recorded')}", "problem", "status", numbers)]
    if status == "interrupted":
        return [Finding(f"run {label} was interrupted at step {num(steps if steps is not None else 0)}; its "
                        f"values are those of an unfinished run.", "warning", "status", numbers)]
    last = num(steps) if steps is not None else "none yet"
    return [Finding(f"run {label} has status '{status}' (last recorded step {last}): it has not finished, or "
                    f"it stopped without saying why, so its values are provisional.", "warning", "status", numbers)]


def nonfinite_findings(table: Table, what: str, label: str, topic: str, strict: bool = True) -> list[Finding]:
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
        if column in BOOKKEEPING:
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
                            f"{names}, first at step {num(first_step)}.", "problem", topic, {"step": first_step})]


def test_findings(evals: Table, label: str) -> list[Finding]:
    """The test negative ELBO from its first to its last evaluation, or its rise above its lowest."""
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
    numbers = {"first": float(values[first]), "last": float(values[last]), "lowest": float(values[best]),
               "first_step": float(steps[first]), "last_step": float(steps[last]), "lowest_step": float(steps[best])}
    if rise > TEST_RISE * abs(values[best]):
        return [Finding(
            f"{who}the test negative ELBO ended at {short(values[last])} nats per example, {short(rise)} above its "
            f"lowest value {short(values[best])} at n = {num(steps[best])}: check for overfitting or an unstable "
            f"step size.", "warning", "test", numbers)]
    return [Finding(
        f"{who}the test negative ELBO went from {short(values[first])} at n = {num(steps[first])} to "
        f"{short(values[last])} nats per example at n = {num(steps[last])}.", "info", "test", numbers)]


def _trend(table: Table, column: str, who: str, topic: str, name: str) -> Finding | None:
    """"diagnostic NAME: COLUMN went from A at n = .. to B at n = .. (÷k)"."""
    steps, values = table.column("step"), table.column(column)
    ok = np.flatnonzero(np.isfinite(values))
    if not len(ok):
        return None
    a, b = ok[0], ok[-1]
    numbers = {"first": float(values[a]), "last": float(values[b]), "first_step": float(steps[a]),
               "last_step": float(steps[b])}
    if a == b:
        text = f"{column} = {short(values[a])} at n = {num(steps[a])}"
    else:
        ratio = ""
        if values[a] > 0 and values[b] > 0 and max(values[a], values[b]) / min(values[a], values[b]) >= 2:
            factor = values[b] / values[a]
            ratio = f" (×{short(factor)})" if factor >= 1 else f" (÷{short(1 / factor)})"
        text = (f"{column} went from {short(values[a])} at n = {num(steps[a])} to {short(values[b])} at "
                f"n = {num(steps[b])}{ratio}")
    return Finding(f"{who}diagnostic {name}: {text}.", "info", topic, numbers)


def diagnostic_findings(run: Run, name: str, table: Table, label: str) -> list[Finding]:
    """Sentences about one run's diagnostic ``name``: values that are not finite, the trend of its
    headline column, then the plugin's own (under the topic ``diagnostic:<name>``)."""
    topic = f"diagnostic:{name}"
    who = f"{label}: " if label else ""
    if not len(table):
        return [Finding(f"{who}diagnostics/{name}.csv has no rows yet, or could not be read (see the notes).",
                        "info", topic)]
    found = nonfinite_findings(table, f"diagnostic {name}", label or "this run", topic, strict=False)
    column = headline(name, table)
    trend = _trend(table, column, who, topic, name) if column else None
    if trend is not None:
        found.append(trend)
    hook = getattr(diagnostic_class(name), "findings", None)
    if hook is not None:
        found += [f.with_topic(topic) for f in hook(table, run, label)]
    return found


def convergence_findings(
    steps: ArrayLike,
    minibatch: ArrayLike,
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
            last = last_finite(full[0], "full_grad_norm_sq_avg")
            if last is not None:
                row = int(np.flatnonzero(full[0].column("step") == last[0])[-1])
                average = (float(full[0].column("block_end")[row]), last[1],
                           float(full[0].column("full_grad_norm_sq_avg_se")[row]))
        verdict = convergence.full_gradient_verdict(n, u, se, estimates, average=average)
        found.append(Finding(who + verdict.sentence, verdict.level, "rate", _fit_numbers(verdict)))
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
    found.append(Finding(who + verdict.sentence, verdict.level, "rate", _fit_numbers(verdict)))
    return found


def _fit_numbers(verdict: Any) -> dict[str, float]:
    """The numbers of a convergence verdict: its rate fit's slope and interval, when it has one."""
    fit = getattr(verdict, "fit", None)
    if fit is None:
        return {}
    return {"slope": fit.slope, "ci_low": fit.ci_low, "ci_high": fit.ci_high, "n_start": fit.n_start,
            "n_end": fit.n_end, "theory_slope": fit.theory_slope}


def run_findings(run: Run, label: str = "") -> list[Finding]:
    """Every finding about ``run`` (``label`` starts each sentence; empty for a run's own report),
    each a sentence of its own (first letter in upper case)."""
    found = status_findings(run, label or run.name)
    found += nonfinite_findings(run.metrics, "metrics.csv", label or "this run", "status")
    if "minibatch_grad_norm_sq" in run.metrics.columns and len(run.metrics):
        found += convergence_findings(
            run.metrics.column("step"), run.metrics.column("minibatch_grad_norm_sq"),
            [run.diagnostics["full_gradient"]] if "full_gradient" in run.diagnostics else [],
            [run.diagnostics["gradient_noise"]] if "gradient_noise" in run.diagnostics else [],
            run.setting("training", "batch_size"), label)
    found += test_findings(run.evals, label)
    for name, table in run.diagnostics.items():
        found += diagnostic_findings(run, name, table, label)
    return [f.capitalised() for f in found]
