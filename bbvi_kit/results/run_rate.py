"""The rate fit of a column of a run directory's ``metrics.csv`` (:func:`rate_from_run`); the
statistics are those of :mod:`bbvi_kit.results.rates`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bbvi_kit.errors import InputError
from bbvi_kit.results.rates import RateFit, fit_rate
from bbvi_kit.runs import read_csv

__all__ = ["rate_from_run"]


def rate_from_run(
    run_dir: str | Path,
    *,
    column: str = "minibatch_grad_norm_sq",
    tail: float = 0.5,
    level: float = 0.95,
) -> RateFit:
    """The rate fit of one column of a run directory's ``metrics.csv``.

    ``column`` ``minibatch_grad_norm_sq`` (default: the per-iteration mini-batch norm) and any
    other column but a running average are fitted directly; ``minibatch_grad_norm_sq_avg`` is
    fitted as a running average (with ``minibatch_grad_norm_sq`` as its exact block means when
    every step was recorded), whose slope keeps the 1/n memory of the early transient. Neither is
    the full-data quantity the theorems bound: for the verdict on that, see
    :mod:`bbvi_kit.diagnostics.convergence`.
    """
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        raise InputError(f"no metrics.csv in {run_dir}")
    rows = read_csv(path)
    if not rows or column not in rows[0] or "step" not in rows[0]:
        raise InputError(f"{path} has no rows with columns step and {column}")
    steps = np.array([r["step"] for r in rows], dtype=float)
    values = np.array([r[column] for r in rows], dtype=float)
    if column == "minibatch_grad_norm_sq_avg":
        block_means = None
        every_step = steps.size > 0 and np.array_equal(steps, np.arange(1, steps.size + 1, dtype=float))
        if every_step and "minibatch_grad_norm_sq" in rows[0]:
            block_means = np.array([r["minibatch_grad_norm_sq"] for r in rows], dtype=float)
        return fit_rate(steps, values, tail, running_average=True, block_means=block_means, level=level,
                        quantity="the running average of the mini-batch ‖g‖²")
    quantity = "the mini-batch ‖g‖²" if column == "minibatch_grad_norm_sq" else column
    return fit_rate(steps, values, tail, level=level, quantity=quantity)
