r"""The convergence verdict: what a run's gradient curves say about the quantity the theorems bound.

Surendran, Godichon-Baggioni & Le Corff (AISTATS 2025) bound

    E‖∇L(θ_R, φ_R)‖²,   R uniform on {1, …, n},   i.e.   A(n) = (1/n) Σ_{k≤n} ‖∇L(θ_k, φ_k)‖²

in expectation, by O(log n / √n): the running average of the squared norm of the *full-data,
exact* gradient along the trajectory. Two recorded curves bear on it:

- the **full-data estimate** U_j of ‖∇L(θ_n, φ_n)‖² at the steps n_j where the ``full_gradient``
  diagnostic ran (unbiased, with a standard error; under ``schedule: stratified`` also the running
  average Â(n) itself, unbiased); this is the theorems' quantity;
- the **mini-batch norm** ‖g_n‖² of every step (``minibatch_grad_norm_sq`` in ``metrics.csv``),
  whose expectation is ‖∇L‖² + tr Cov(g_n): an upper bound in expectation, which levels off at
  the noise floor tr Cov(g) set by B and K however close the run is to a stationary point.

Raw series, not running averages. A running average keeps a 1/n memory of its early transient:
the running average of any curve that settles decays like 1/n for a long while, so its log-log
slope says "converging" about a run that stopped improving long ago. Every fit here is of the
raw series (the per-step ‖g_n‖², the per-measurement U_j; these are the increments of the
running averages): if ‖∇L(θ_n)‖² ≈ C n^b with b > −1, A(n) ≈ C n^b / (1 + b) decays with the
same exponent, and the fit reads it without the transient's memory. The slope is
:func:`bbvi_kit.results.rates.fit_rate`'s (OLS in log-log over the last ``tail`` of the
iterations, an autocorrelation-robust standard error and a Student-t interval).

The rules (:func:`full_gradient_verdict`, :func:`minibatch_verdict`):

Full-data series (preferred whenever at least :data:`MIN_FULL_POINTS` measurements fall in the
window). ``stationary`` when at least half of them are zero within their interval
(U_j ≤ t_{M−1} SE_j, the interval of
:func:`bbvi_kit.diagnostics.full_gradient.interval_multiplier`): the run is at a stationary point
as far as the estimator resolves, and no rate can be read off a curve at zero. Otherwise the
slope of log U_j over the positive U_j is compared with the slope of log n / √n over the same
iterations: ``consistent``, ``faster`` (the bound holds with room to spare), ``slower``, or
``grows``; ``inconclusive`` when the interval holds both the theory's slope and 0 (no decay),
as a dozen noisy measurements often do.

Mini-batch series (what is left without ``full_gradient``, and the floor beside it). ``noise_floor``
when the slope's interval reaches into the flat band |b| ≤ :data:`FLAT_SLOPE` (0.1: less than a
7% change per doubling of n, against the −0.36 to −0.41 of log n / √n). The floor's start: going
back from the window on geometric bins [0.8 n_s, n_s) (:data:`FLOOR_SCAN_RATIO`), a bin is still
on the floor while its mean of log ‖g_n‖² is within max(:data:`FLOOR_TOLERANCE`, 2 SE) of the
window's (SE from the bin's long-run variance); "at the noise floor since step n_s" names the
first bin of the unbroken run. The floor's level is the mean of ‖g_n‖² there; its noise share is
tr Cov(g) / level from the ``gradient_noise`` diagnostic (rescaled to the training batch size;
both parts of the variance fall as 1/B) or 1 − U / level from ``full_gradient``. Otherwise
``grows`` (interval above the band) or a decay compared with log n / √n: ``faster`` and
``consistent`` carry over to ‖∇L‖² (E‖∇L‖² ≤ E‖g‖²: an upper bound that decays that fast bounds
it), ``slower`` does not (the bound includes the noise) and says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from bbvi_kit.diagnostics.full_gradient import interval_multiplier
from bbvi_kit.results.rates import RateFit, fit_rate, long_run_variance, verdict
from bbvi_kit.errors import InputError

__all__ = [
    "FLAT_SLOPE",
    "FLOOR_SCAN_RATIO",
    "FLOOR_TOLERANCE",
    "MIN_FULL_POINTS",
    "Verdict",
    "full_gradient_verdict",
    "minibatch_verdict",
]

FLAT_SLOPE = 0.1
"""A slope interval reaching into [−0.1, 0.1] is flat: the series sits at a floor."""
FLOOR_SCAN_RATIO = 0.8
"""The floor's start is searched on geometric bins of this ratio, back from the window."""
FLOOR_TOLERANCE = math.log(1.1)
"""A bin whose mean log ‖g‖² is within 10% of the floor's (or within 2 SE) is on the floor."""
MIN_FULL_POINTS = 4
"""Fewest full-gradient measurements in the window for a verdict on the full-data series."""

Kind = Literal["consistent", "faster", "slower", "grows", "stationary", "noise_floor", "inconclusive", "too_short"]
_LEVEL = {"consistent": "good", "faster": "good", "stationary": "good", "slower": "warning", "grows": "warning",
          "noise_floor": "info", "inconclusive": "info", "too_short": "info"}
_THEOREMS = "the running average the theorems bound"


@dataclass(frozen=True)
class Verdict:
    """What one series says: ``kind`` (module docstring), the ``series`` it is about
    (``full_gradient`` or ``minibatch``), a plain ``sentence``, a report ``level`` (good, info,
    warning), the slope ``fit`` when one was made, and for a floor its start ``floor_since``, its
    ``floor`` level and the ``noise_share`` of it that is gradient variance (when measured)."""

    kind: Kind
    series: Literal["full_gradient", "minibatch"]
    sentence: str
    level: str
    fit: RateFit | None = None
    floor_since: float | None = None
    floor: float | None = None
    noise_share: float | None = None


def _arrays(*columns: ArrayLike) -> list[np.ndarray]:
    arrays = [np.asarray(c, dtype=float).ravel() for c in columns]
    if len({a.size for a in arrays}) > 1:
        raise InputError(f"series differ in length ({', '.join(str(a.size) for a in arrays)})")
    keep = np.logical_and.reduce([np.isfinite(a) for a in arrays])
    order = np.argsort(arrays[0][keep], kind="stable")
    return [a[keep][order] for a in arrays]


def _slope_text(fit: RateFit) -> str:
    level = f"{100 * fit.level:g}%"
    return (f"n^{fit.slope:.2f} ({level} CI {fit.ci_low:.2f} to {fit.ci_high:.2f}) over n = "
            f"{fit.n_start:.0f}–{fit.n_end:.0f}")


def _theory_text(fit: RateFit) -> str:
    return f"log n/√n has slope {fit.theory_slope:.2f} there"


def _num(value: float) -> str:
    return f"{value:.3g}"


# ---------------------------------------------------------------------------------------------
# the full-data series


def full_gradient_verdict(
    steps: ArrayLike,
    values: ArrayLike,
    se: ArrayLike,
    num_estimates: int,
    *,
    tail: float = 0.5,
    average: tuple[float, float, float] | None = None,
) -> Verdict:
    """The verdict on the full-data estimates ``values`` (U_j) ± ``se`` at ``steps`` from
    ``num_estimates`` (M) passes each (module docstring). ``average``: the last running average
    (step, Â, SE) of a stratified schedule, quoted in the sentence."""
    n, u, s = _arrays(steps, values, se)
    if not 0.0 < tail <= 1.0:
        raise InputError(f"tail must lie in (0, 1], got {tail}")
    quoted = ""
    if average is not None and all(math.isfinite(v) for v in average):
        quoted = (f"; {_THEOREMS}, (1/n) Σ ‖∇L(θ_k)‖², is {_num(average[1])} ± {_num(average[2])} "
                  f"at n = {average[0]:.0f}")
    if not n.size:
        return Verdict("too_short", "full_gradient", "no finite full-data gradient estimate was recorded.", "info")
    window = n >= max(3.0, (1.0 - tail) * float(n.max()))
    t = interval_multiplier(num_estimates)
    last = f"last {_num(u[-1])} ± {_num(t * s[-1])} at n = {n[-1]:.0f}"
    count = int(window.sum())
    if count < MIN_FULL_POINTS:
        return Verdict("too_short", "full_gradient",
                       f"the full-data ‖∇L‖² was measured {count} times over the last {tail:.0%} of the run "
                       f"({last}{quoted}): too few to fit a rate (at least {MIN_FULL_POINTS}).", "info")
    zero = window & (u <= t * s)
    if 2 * int(zero.sum()) >= count:
        sentence = (f"the full-data ‖∇L‖² is zero within its 95% interval at {int(zero.sum())} of {count} "
                    f"measurements over n = {n[window][0]:.0f}–{n[-1]:.0f} ({last}{quoted}): the run is at a "
                    "stationary point as far as the estimate resolves, and no rate can be read off a curve at zero.")
        return Verdict("stationary", "full_gradient", sentence, _LEVEL["stationary"])
    positive = u > 0
    start = float(n[window][0])
    n_fit, u_fit = n[positive], u[positive]
    fit_tail = 1.0 - start / float(n_fit.max()) + 1e-12 if start < n_fit.max() else tail
    try:
        fit = fit_rate(n_fit, u_fit, min(1.0, fit_tail), quantity="the full-data ‖∇L‖²")
    except InputError:
        return Verdict("too_short", "full_gradient",
                       f"too few positive full-data estimates to fit a rate ({last}{quoted}).", "info")
    kind: Kind = "grows" if fit.ci_low > 0 else verdict(fit)
    if kind == "consistent" and fit.ci_high >= 0:
        kind = "inconclusive"
    head = f"the full-data ‖∇L‖² (full_gradient, {fit.num_points} measurements) "
    if kind == "inconclusive":
        body = (f"changes as {_slope_text(fit)}: the interval holds both no decay at all and the theorems' "
                f"O(log n/√n) ({_theory_text(fit)}), so the rate is not determined; more measurements (a smaller "
                "`every`) narrow it")
    elif kind == "grows":
        body = f"grows as {_slope_text(fit)}: the run is moving away from a stationary point"
    elif kind == "consistent":
        body = f"decays as {_slope_text(fit)}, consistent with the theorems' O(log n/√n) ({_theory_text(fit)})"
    elif kind == "faster":
        body = (f"decays as {_slope_text(fit)}, faster than log n/√n ({_theory_text(fit)}): the theorems' "
                "O(log n/√n) bound holds with room to spare")
    elif fit.ci_high >= 0:
        body = (f"shows no detectable decay ({_slope_text(fit)}), slower than the theorems' O(log n/√n) "
                f"({_theory_text(fit)}): it has levelled off above zero, e.g. where a step size that does not "
                "decrease keeps the iterates from a stationary point")
    else:
        body = f"decays as {_slope_text(fit)}, slower than the theorems' O(log n/√n) ({_theory_text(fit)})"
    return Verdict(kind, "full_gradient", f"{head}{body}{quoted}.", _LEVEL[kind], fit)


# ---------------------------------------------------------------------------------------------
# the mini-batch series


def _flat(fit: RateFit) -> bool:
    return fit.ci_low <= FLAT_SLOPE and fit.ci_high >= -FLAT_SLOPE


def _fit_from(n: np.ndarray, y: np.ndarray, start: float) -> RateFit | None:
    top = float(n.max())
    try:
        return fit_rate(n, y, min(1.0, 1.0 - start / top + 1e-12), quantity="the mini-batch ‖g‖²")
    except InputError:
        return None


def minibatch_verdict(
    steps: ArrayLike,
    values: ArrayLike,
    *,
    tail: float = 0.5,
    noise_variance: tuple[ArrayLike, ArrayLike] | None = None,
    full: tuple[ArrayLike, ArrayLike] | None = None,
) -> Verdict:
    """The verdict on the per-step mini-batch ‖g_n‖² ``values`` at ``steps`` (module docstring).

    ``noise_variance``: (steps, tr Cov(g) at the training batch size), e.g. the
    ``gradient_noise`` diagnostic's ``grad_var_total`` rescaled by B_measured / B_train;
    ``full``: (steps, U) of the ``full_gradient`` diagnostic. Either gives the floor's noise share.
    """
    n, y = _arrays(steps, values)
    if not 0.0 < tail <= 1.0:
        raise InputError(f"tail must lie in (0, 1], got {tail}")
    what = "the mini-batch ‖g‖²"
    upper = "E‖g‖² = ‖∇L‖² + tr Cov(g)"
    measure = ("the full_gradient estimates measure it" if full is not None else
               "the full_gradient diagnostic (schedule: stratified) measures it")
    if n.size == 0:
        return Verdict("too_short", "minibatch", f"{what}: no finite value recorded.", "info")
    start = max(3.0, (1.0 - tail) * float(n.max()))
    fit = _fit_from(n, y, start)
    if fit is None:
        return Verdict("too_short", "minibatch",
                       f"too few recorded iterations (n_max = {n.max():.0f}) to fit the rate of {what}.", "info")
    if _flat(fit):
        in_floor = n >= _floor_start(n, y, start)
        floor = float(np.mean(y[in_floor]))
        share, source = _noise_share(n[in_floor], floor, noise_variance, full)
        first = float(n[in_floor][0])
        explained = (f"; {source} puts {share:.0%} of it in the gradient's variance tr Cov(g)" if share is not None
                     else "")
        sentence = (f"{what} has been flat since about n = {first:.0f} (slope {fit.slope:.2f}, "
                    f"95% CI {fit.ci_low:.2f} to {fit.ci_high:.2f} over n = {fit.n_start:.0f}–{fit.n_end:.0f}): "
                    f"at its noise floor {_num(floor)}{explained}. As {upper}, a floor says nothing about the rate "
                    f"of the theorems' ‖∇L‖²: {measure}.")
        return Verdict("noise_floor", "minibatch", sentence, _LEVEL["noise_floor"], fit,
                       floor_since=first, floor=floor, noise_share=share)
    if fit.ci_low > FLAT_SLOPE:
        in_window = n >= start
        share, source = _noise_share(n[in_window], float(np.mean(y[in_window])), noise_variance, full)
        which = (f"{source} puts {share:.0%} of it over n = {start:.0f}–{n.max():.0f} in the gradient's variance "
                 "tr Cov(g)" if share is not None else "the full_gradient and gradient_noise diagnostics tell which")
        sentence = f"{what} grows as {_slope_text(fit)}; as {upper}, the gradient, its noise or both grow: {which}."
        return Verdict("grows", "minibatch", sentence, _LEVEL["grows"], fit, noise_share=share)
    kind = verdict(fit)
    if kind == "slower":
        sentence = (f"{what} decays as {_slope_text(fit)}, slower than log n/√n ({_theory_text(fit)}); it is an "
                    f"upper bound in expectation ({upper}), so this does not show that ‖∇L‖² is slower: {measure}.")
        return Verdict("slower", "minibatch", sentence, "info", fit)
    relation = "consistent with" if kind == "consistent" else "faster than"
    sentence = (f"{what} decays as {_slope_text(fit)}, {relation} log n/√n ({_theory_text(fit)}); as "
                f"{upper} ≥ ‖∇L‖², the theorems' ‖∇L‖² is bounded by a curve that decays this fast.")
    return Verdict(kind, "minibatch", sentence, _LEVEL[kind], fit)


def _floor_start(n: np.ndarray, y: np.ndarray, start: float) -> float:
    """The first iteration of the unbroken run of geometric bins, back from ``start``, whose mean
    log value is within max(FLOOR_TOLERANCE, 2 SE) of the mean over n ≥ start (module docstring)."""
    log_y = np.log(np.maximum(y, np.finfo(float).tiny))
    reference = float(np.mean(log_y[n >= start]))
    edge = start
    while edge * FLOOR_SCAN_RATIO >= 1.0:
        low = edge * FLOOR_SCAN_RATIO
        inside = (n >= low) & (n < edge)
        if inside.any():
            values = log_y[inside]
            lrv, _, _ = long_run_variance(values) if values.size > 1 else (math.inf, 0.0, 0)
            se = math.sqrt(lrv / values.size)
            if abs(float(values.mean()) - reference) > max(FLOOR_TOLERANCE, 2.0 * se):
                break
        edge = low
    return edge


def _noise_share(
    floor_steps: np.ndarray,
    floor: float,
    noise_variance: tuple[ArrayLike, ArrayLike] | None,
    full: tuple[ArrayLike, ArrayLike] | None,
) -> tuple[float | None, str]:
    """tr Cov(g) / floor from measurements within the floor's iterations (the gradient_noise
    diagnostic first, else 1 − U / floor from full_gradient); (None, "") without either."""
    lo = float(floor_steps.min())
    for pair, source in ((noise_variance, "the gradient_noise diagnostic"), (full, "the full_gradient diagnostic")):
        if pair is None or floor <= 0:
            continue
        at, value = _arrays(*pair)
        inside = at >= lo
        if not inside.any():
            continue
        mean = float(np.mean(value[inside]))
        share = mean / floor if source.startswith("the gradient_noise") else 1.0 - mean / floor
        return min(max(share, 0.0), 1.0), source
    return None, ""
