"""What the figures draw of a group of runs: the bands over seeds of its curves (running average,
per-epoch mean, full-data running average, test losses), the fitted constants C of C log n / √n,
and its final values (:func:`group_curves`). No drawing here.

Seeds of a group may have different lengths (a failed or still running seed): every curve of the
group uses the iterations (and evaluations) common to all its seeds, and ``say`` says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from bbvi_kit.errors import InputError
from bbvi_kit.results.bands import Band, aggregate
from bbvi_kit.results.groups import Group
from bbvi_kit.results.rates import fit_log_rate, log_slope
from bbvi_kit.results.run import Run

__all__ = ["Final", "GroupCurves", "group_curves", "last_evaluation"]


def _iterations_per_epoch(run: Run) -> int:
    """Updates per epoch, from the rows: the largest ⌈step / (epoch + 1)⌉ (exact as soon as the
    last update of some epoch is recorded, as epoch-end evaluations are)."""
    best = 1
    for table in ("metrics", "evals"):
        if not run.has_column(table, "step") or not run.has_column(table, "epoch"):
            continue
        steps, epochs = run.column(table, "step"), run.column(table, "epoch")
        ok = np.isfinite(steps) & np.isfinite(epochs)
        if ok.any():
            best = max(best, int(np.max(np.ceil(steps[ok] / (epochs[ok] + 1)))))
    return best


@dataclass
class Final:
    """The last evaluation of a group: at the latest evaluated iteration, over the seeds that
    reached it (so a cut seed never drags a final value back to an earlier point of training)."""

    step: float
    values: list[float]
    seeds: list[Any]
    left_out: list[Any]

    def stats(self) -> dict[str, Any]:
        v = np.array(self.values)
        return {"step": self.step, "mean": float(v.mean()), "min": float(v.min()), "max": float(v.max()),
                "seeds": len(v)}


def last_evaluation(runs: Sequence[Run], column: str) -> Final | None:
    last = []
    for r in runs:
        steps, values = r.column("evals", "step"), r.column("evals", column)
        ok = np.isfinite(steps) & np.isfinite(values)
        if ok.any():
            i = int(np.flatnonzero(ok)[np.argmax(steps[ok])])
            last.append((r, float(steps[i]), float(values[i])))
    if not last:
        return None
    step = max(s for _, s, _ in last)
    reached = [(r, v) for r, s, v in last if s == step]
    return Final(step=step, values=[v for _, v in reached], seeds=[r.seed for r, _ in reached],
                  left_out=[r.seed for r in runs if all(r is not rr for rr, _ in reached)])


@dataclass
class GroupCurves:
    """A group with what the figures draw of it: bands over seeds, fitted constants, final values."""

    group: Group
    ipe: int
    steps: np.ndarray
    avg: Band | None = None
    full_avg: Band | None = None
    per_epoch: Band | None = None
    evals: dict[str, Band] = field(default_factory=dict)
    eval_epochs: np.ndarray | None = None
    finals: dict[str, Final] = field(default_factory=dict)
    c_avg: float | None = None
    c_epoch: float | None = None
    slope_avg: float | None = None


def _paper_weights(run: Run, at: np.ndarray, epochs: np.ndarray, ipe: int) -> np.ndarray:
    """B_k² · ipe / (N d) for the steps ``at``: the factor that turns the mean of ‖g_k‖² over an
    epoch's recorded steps into the authors' (1/(N d)) Σ_k ‖B_k g_k‖² (module docstring). B_k is
    the training batch size, the last batch of an epoch holding what is left of the N examples."""
    n_train, n_params = run.info.get("num_train"), run.info.get("num_parameters")
    batch = (run.recipe.get("training") or {}).get("batch_size")
    if not (isinstance(n_train, int) and isinstance(n_params, int) and isinstance(batch, int)):
        raise InputError(f"{run.path}: the paper scale needs num_train and num_parameters in run.json and "
                         "training.batch_size in recipe.yaml")
    position = at - epochs * ipe  # 1..ipe within the epoch
    sizes = np.where(position < ipe, batch, n_train - (ipe - 1) * batch).astype(float)
    return sizes**2 * ipe / (n_train * n_params)


def _epoch_means(run: Run, steps: np.ndarray, ipe: int, paper: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``minibatch_grad_norm_sq`` over each epoch's recorded rows among ``steps`` (with
    ``paper``, of B_k² ipe ‖g_k‖² / (N d): the authors' per-epoch quantity), at x = epochs
    completed: e + 1, or (last iteration) / ``ipe`` for a last epoch cut short."""
    keep = np.isin(run.column("metrics", "step"), steps) & np.isfinite(run.column("metrics", "epoch"))
    epochs = run.column("metrics", "epoch")[keep].astype(int)
    values, at = run.column("metrics", "minibatch_grad_norm_sq")[keep], run.column("metrics", "step")[keep]
    if not len(epochs):
        return np.array([]), np.array([])
    if paper:
        values = values * _paper_weights(run, at, epochs, ipe)
    counts = np.bincount(epochs)
    done = np.flatnonzero(counts)
    means = np.bincount(epochs, weights=values)[done] / counts[done]
    x = done + 1.0
    last_step = at[epochs == done[-1]].max()
    if last_step < x[-1] * ipe:
        x[-1] = last_step / ipe
    return x, means


def _full_average(runs: Sequence[Run]) -> Band | None:
    """The stratified running average of the full-data ‖∇L‖² at the blocks' ends, over seeds:
    mean and min–max, or ± 2 SE for a single seed; ``None`` unless every run recorded it."""
    columns = ("block_end", "full_grad_norm_sq_avg", "full_grad_norm_sq_avg_se")
    if not runs or not all(r.has_column("full", c) for r in runs for c in columns):
        return None
    band = aggregate([(r.column("full", "block_end"), r.column("full", "full_grad_norm_sq_avg")) for r in runs])
    if len(runs) == 1:
        se = runs[0].column("full", "full_grad_norm_sq_avg_se")
        band = Band(band.x, band.mean, band.mean - 2 * se, band.mean + 2 * se, 1)
    return band


def group_curves(group: Group, say: Callable[[str], None], paper: bool = False) -> GroupCurves:
    """What the figures draw of ``group``: its bands over seeds, fitted constants and final values;
    ``say(message)`` for seeds cut short; ``paper``: the per-epoch curve in the authors' scale."""
    runs = group.runs
    step_sets = [r.column("metrics", "step") for r in runs]
    common = step_sets[0]
    for s in step_sets[1:]:
        common = np.intersect1d(common, s)
    longest = max(len(s) for s in step_sets)
    if len(runs) > 1 and len(common) < longest:
        short = ", ".join(f"seed {r.seed} stops at n={int(np.nanmax(s)) if len(s) else 0}, status {r.status}"
                          for r, s in zip(runs, step_sets) if len(s) < longest)
        say(f"group '{group.label}': curves use the {len(common)} recorded iterations common to its "
            f"{len(runs)} seeds ({short})")
    seeds = [r.seed for r in runs]
    if len(set(map(str, seeds))) < len(seeds):
        say(f"group '{group.label}': the same seed appears more than once ({', '.join(map(str, seeds))})")
    data = GroupCurves(group=group, ipe=max(_iterations_per_epoch(r) for r in runs), steps=common)

    if all(r.has_column("metrics", "minibatch_grad_norm_sq_avg") for r in runs):
        data.avg = aggregate([(r.column("metrics", "step"), r.column("metrics", "minibatch_grad_norm_sq_avg"))
                              for r in runs])
        data.c_avg = fit_log_rate(data.avg.x, data.avg.mean)
        data.slope_avg = log_slope(data.avg.x, data.avg.mean)
    data.full_avg = _full_average(runs)

    if all(r.has_column("metrics", "minibatch_grad_norm_sq") and r.has_column("metrics", "epoch") for r in runs):
        data.per_epoch = aggregate([_epoch_means(r, common, data.ipe, paper) for r in runs])
        data.c_epoch = fit_log_rate(data.per_epoch.x * data.ipe, data.per_epoch.mean)

    if all(r.evals for r in runs):
        for column in ("test_loss", "test_objective_loss"):
            if all(r.has_column("evals", column) for r in runs):
                data.evals[column] = aggregate([(r.column("evals", "step"), r.column("evals", column)) for r in runs])
                final = last_evaluation(runs, column)
                if final is not None:
                    data.finals[column] = final
        if data.evals:
            steps_eval = next(iter(data.evals.values())).x
            first = runs[0]
            pos = np.searchsorted(first.column("evals", "step"), steps_eval)
            if first.has_column("evals", "epoch"):
                # epochs completed; an evaluation inside an epoch (eval_every, or training.iterations
                # ending one early) sits at its fraction of the epoch
                data.eval_epochs = np.minimum(first.column("evals", "epoch")[pos] + 1, steps_eval / data.ipe)
            if len({len(r.evals) for r in runs}) > 1:
                say(f"group '{group.label}': test curves use the {len(steps_eval)} evaluations common to "
                    f"its {len(runs)} seeds")
    else:
        missing = [f"seed {r.seed} [{r.status}]" for r in runs if not r.evals]
        say(f"group '{group.label}': no test curve (no eval rows from {', '.join(missing)})")
    return data
