r"""Rate fits: the log-log slope of a gradient-norm curve over the tail of training, with a
confidence interval that survives the autocorrelation of the curve, and its comparison with the
O(log n / √n) rate of Surendran, Godichon-Baggioni & Le Corff, *Theoretical Convergence Guarantees
for Variational Autoencoders* (AISTATS 2025) [1].

The fit. Over the window W = {n ≥ max(3, (1 − tail) · n_max), y(n) finite and > 0} (the last
``tail`` fraction of the iterations; with the default tail = 0.5 the window of
:func:`fit_log_rate`, the figures' fit), ordinary least squares of

    log y(n) = a + b log n,        b̂ = Σ_{j∈W} w_j log y_j,   w_j = (log n_j − mean log n) / S_xx.

The standard error. Consecutive values of these curves are strongly dependent, so the textbook
OLS standard error √(σ̂² / S_xx) (``naive_se``) is far too small: for a running average it is 8 to
80 times smaller than the spread of b̂ across repetitions, and its "95%" interval covers the slope
in 1-20% of them (simulations below). Two cases (both Newey & West 1987 long-run variances, computed by
:func:`long_run_variance`):

``running_average=False`` (a curve with autocorrelated multiplicative noise, e.g. the
    per-iteration ‖g_n‖²): Var(b̂) = Σ_j w_j² · LRV(r), r the OLS residuals in log space: the
    heteroskedasticity-and-autocorrelation-consistent (HAC) variance of the slope under stationary
    residuals, and never less than the OLS variance σ̂² / S_xx: on a dozen points (a diagnostic
    measured along the run) the prewhitened long-run variance is biased low, and the HAC interval
    alone covered a slope in 88% of 400 simulated runs of 10 points, 96% with the floor.
``running_average=True`` (ȳ(n) = (1/n) Σ_{k≤n} g_k, e.g. the column ``minibatch_grad_norm_sq_avg``,
    a running average of the mini-batch norm; the convergence verdict fits raw series instead, see
    :mod:`bbvi_kit.diagnostics.convergence`): every ȳ(n) in the window shares the noise of all earlier g_k, including those
    before the window, so the residuals in the window are not the noise at all. Instead, with the
    block sums s_i = n_i ȳ_i − n_{i−1} ȳ_{i−1} between recorded steps (n_0 = 0; one iteration each
    when every step is recorded) and S_j = n_j ȳ_j, the delta method gives

        b̂ − b ≈ Σ_i c_i δs_i,     c_i = Σ_{j∈W, j≥i} w_j / S_j,

    a linear combination of the noise of every block since the first iteration. The noise is
    taken multiplicative and stationary: δs_i = Δ_i μ_i η_i, with μ_i a smooth trend of the block
    means (a local linear fit of log mean against log n over ±``TREND_HALF_WIDTH`` in log n, at
    least ``TREND_MIN_BLOCKS`` blocks either side) and η_i the relative residuals (scaled by
    1/√(1 − leverage) for what the local fit absorbs). Then

        Var(b̂) ≈ Σ_i (c_i Δ_i μ_i)² · LRV(η).

    The early, large values of g enter through c_i for i before the window, as they should: the
    running average never forgets them.

LRV(·) is the long-run variance Σ_l γ(l): AR(1) prewhitening with the lag-1 autocorrelation ρ
(bias-corrected by (1 + 3ρ)/T, Kendall 1954, and clipped to [0, 0.97]), a Bartlett-kernel Newey-West
estimate on the prewhitened series with the bandwidth of Andrews' (1991) AR(1) plug-in rule
1.1447 (α T)^{1/3}, α = 4ρ'²/((1 − ρ')²(1 + ρ')²), recoloured by 1/(1 − ρ)² (Andrews & Monahan 1992).
The interval is b̂ ± t_{(1+level)/2, T−2} · se, Student's t quantile with T − 2 degrees of freedom
for T fitted points (the normal quantile for long curves; wider, as it should be, for the dozen
points of a diagnostic measured along the run).

Checked by simulation: power laws 3 n^{-1/2} times lognormal AR(1) noise (ρ ∈ {0, 0.5, 0.9}), 400
to 4000 iterations, 300 repetitions per case. Fitted directly, the 95% interval covers the true
slope in 91-97% of repetitions (the naive one in 33% at ρ = 0.9). Fitted through the running
average, recorded every iteration or every 10th, it covers the slope of the noise-free running
average in 82-97% (below 90% only for 500-iteration runs with ρ = 0.9 or with 50 recorded rows),
with se / sd(b̂) between 0.8 and 1.2; the naive interval covers in 1-20%.
``tests/unit/diagnostics/test_collapse.py`` repeats this with 100 repetitions per case.

The theory's slope. Over a finite window log n / √n is not a power law: its local slope is
d log(log n / √n) / d log n = 1/log n − 1/2 (−0.36 at n = 1000, −0.41 at n = 10^5). The slope to
compare b̂ with (``theory_slope``) is the OLS slope of log(log n / √n) over the same points (the
least-squares weighted average of 1/log n − 1/2 over the window, which b̂ would equal on a
noise-free C log n / √n curve). A fit is *consistent* with the theory when its interval contains
that slope, *faster* when the whole interval lies below it (the O(log n / √n) bound holds with
room to spare), *slower* when it lies above.

References:
    [1] S. Surendran, A. Godichon-Baggioni, S. Le Corff. Theoretical Convergence Guarantees for
        Variational Autoencoders. AISTATS 2025, PMLR 258:3547-3555. arXiv:2410.16750.
    W. K. Newey, K. D. West. A simple, positive semi-definite, heteroskedasticity and
        autocorrelation consistent covariance matrix. Econometrica 55(3), 1987.
    D. W. K. Andrews. Heteroskedasticity and autocorrelation consistent covariance matrix
        estimation. Econometrica 59(3), 1991.
    D. W. K. Andrews, J. C. Monahan. An improved heteroskedasticity and autocorrelation consistent
        covariance matrix estimator. Econometrica 60(4), 1992.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from bbvi_kit.errors import InputError

__all__ = [
    "RateFit",
    "consistent_with_theory",
    "describe",
    "fit_log_rate_constant",
    "fit_rate",
    "fit_window",
    "fit_log_rate",
    "log_slope",
    "long_run_variance",
    "reference_curve",
    "student_t_quantile",
    "theory_slope",
    "verdict",
]

TREND_HALF_WIDTH = 0.15
"""Half-width, in log n, of the local linear trend of the block means (running averages)."""
TREND_MIN_BLOCKS = 5
"""The local trend spans at least this many blocks either side (where the series allows)."""
MAX_AUTOCORRELATION = 0.97
"""Prewhitening clips the lag-1 autocorrelation here, so 1/(1 − ρ)² stays finite."""


@dataclass(frozen=True)
class RateFit:
    """A fitted log y = intercept + slope · log n over the tail window, with its uncertainty.

    Attributes:
        slope: b̂, the log-log slope (the exponent of n).
        intercept: â (log y at n = 1 on the fitted line).
        se: standard error of b̂ (HAC; see the module docstring).
        ci_low, ci_high: the ``level`` confidence interval b̂ ∓ z · se.
        level: confidence level of the interval.
        naive_se: the OLS standard error that ignores autocorrelation, for comparison only.
        autocorrelation: lag-1 autocorrelation ρ of the noise series the standard error rests on
            (log residuals, or relative block residuals for a running average), bias-corrected.
        bandwidth: the Newey-West lag truncation used after prewhitening.
        tail: the fraction of the iterations fitted.
        n_start, n_end: first and last iteration in the window.
        num_points: recorded points in the window.
        running_average: whether y was treated as a running average ȳ(n) = (1/n) Σ_{k≤n} g_k.
        theory_slope: OLS slope of log(log n / √n) over the same points.
        reference_constant: C of the reference C log n / √n fitted over the window
            (:func:`fit_log_rate_constant`).
        quantity: what y is, in words, for :func:`describe`.
    """

    slope: float
    intercept: float
    se: float
    ci_low: float
    ci_high: float
    level: float
    naive_se: float
    autocorrelation: float
    bandwidth: int
    tail: float
    n_start: float
    n_end: float
    num_points: int
    running_average: bool
    theory_slope: float
    reference_constant: float
    quantity: str

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (plus ``consistent`` and ``verdict``)."""
        return {**asdict(self), "consistent": consistent_with_theory(self), "verdict": verdict(self)}


# ---------------------------------------------------------------------------------------------
# the window and the reference curve


def fit_window(n: ArrayLike, y: ArrayLike, tail: float = 0.5) -> np.ndarray:
    """Boolean mask of the fitted points: n ≥ max(3, (1 − tail) · n_max), y finite and > 0.

    ``tail`` is the fraction of the iterations fitted (0 < tail ≤ 1); at 0.5 this is the window of
    :func:`fit_log_rate` (its second half).
    """
    if not 0.0 < tail <= 1.0:
        raise InputError(f"tail must lie in (0, 1], got {tail}")
    n = np.asarray(n, dtype=float)
    y = np.asarray(y, dtype=float)
    if n.size == 0:
        return np.zeros(0, dtype=bool)
    finite_n = n[np.isfinite(n)]
    if finite_n.size == 0:
        return np.zeros(n.shape, dtype=bool)
    start = max(3.0, (1.0 - tail) * float(finite_n.max()))
    with np.errstate(invalid="ignore"):
        return np.isfinite(n) & (n >= start) & np.isfinite(y) & (y > 0)


def reference_curve(n: np.ndarray) -> np.ndarray:
    """log n / √n, the rate of the theorems (the reference curve up to its constant C)."""
    return np.log(n) / np.sqrt(n)


def fit_log_rate_constant(n: ArrayLike, y: ArrayLike, tail: float = 0.5) -> float | None:
    """C of the reference curve C log n / √n, by least squares in log space over the window:

        log C = mean_{n∈W} [log y(n) − log(log n / √n)],

    which minimises Σ_W (log y − log C − log(log n / √n))²: the one rate-constant fit of
    bbvi-kit (the figures' :func:`fit_log_rate` is it at tail = 0.5). ``None`` when the window
    is empty.
    """
    n = np.asarray(n, dtype=float)
    y = np.asarray(y, dtype=float)
    window = fit_window(n, y, tail)
    if not window.any():
        return None
    return float(np.exp(np.mean(np.log(y[window]) - np.log(reference_curve(n[window])))))


def fit_log_rate(n: ArrayLike, y: ArrayLike) -> float | None:
    """C of the reference C log n / √n, by least squares in log space over the second half:

        log C = mean over {n ≥ max(3, n_max/2), y(n) > 0} of [log y(n) − log(log n / √n)]

    (:func:`fit_log_rate_constant` at tail = 0.5; the constant the figures draw and
    ``figures.json`` holds). ``None`` when the window is empty.
    """
    return fit_log_rate_constant(n, y, 0.5)


def log_slope(n: ArrayLike, y: ArrayLike) -> float | None:
    """Least-squares slope of log y against log n over the window of :func:`fit_log_rate`
    (the figures' ``log_log_slope``, without an interval); ``None`` for fewer than two points."""
    n = np.asarray(n, dtype=float)
    y = np.asarray(y, dtype=float)
    window = fit_window(n, y, 0.5)
    if window.sum() < 2 or np.ptp(np.log(n[window])) == 0:
        return None
    return float(np.polyfit(np.log(n[window]), np.log(y[window]), 1)[0])


def theory_slope(n: ArrayLike) -> float:
    """OLS slope of log(log n / √n) against log n over the points ``n`` (all ≥ 3): the
    least-squares average of the local slope 1/log n − 1/2, which a fit of b̂ over these points
    returns on a noise-free C log n / √n."""
    n = np.asarray(n, dtype=float)
    if n.size < 2 or np.ptp(np.log(n)) == 0:
        return float(np.mean(1.0 / np.log(n) - 0.5)) if n.size else float("nan")
    x = np.log(n)
    xc = x - x.mean()
    return float(np.dot(xc, np.log(reference_curve(n))) / np.dot(xc, xc))


def student_t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile (0 < p < 1) of Student's t with ``df`` > 0 degrees of freedom; the
    normal quantile for df ≥ 1000. Bisection on the distribution function, computed by
    Simpson's rule on the density Γ((ν+1)/2) / (√(νπ) Γ(ν/2)) (1 + x²/ν)^(−(ν+1)/2) (to about 1e-6 for
    p ≤ 0.995; not for the far tails of df < 3, which the wide grid of Simpson's rule misses)."""
    if not 0.0 < p < 1.0 or not df > 0:
        raise InputError(f"need 0 < p < 1 and df > 0, got p={p}, df={df}")
    if df >= 1000:
        return NormalDist().inv_cdf(p)
    if p < 0.5:
        return -student_t_quantile(1.0 - p, df)
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def cdf(x: float) -> float:
        grid = np.linspace(0.0, x, 2001)
        density = np.exp(log_norm - (df + 1) / 2 * np.log1p(grid * grid / df))
        step = x / 2000
        return 0.5 + step / 3 * (density[0] + density[-1] + 4 * density[1:-1:2].sum() + 2 * density[2:-1:2].sum())

    low, high = 0.0, 1.0
    while cdf(high) < p:
        low, high = high, 2 * high
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if cdf(middle) < p else (low, middle)
    return (low + high) / 2


# ---------------------------------------------------------------------------------------------
# long-run variance


def long_run_variance(series: ArrayLike) -> tuple[float, float, int]:
    """Long-run variance Σ_l γ(l) of a stationary series, by AR(1)-prewhitened Newey-West.

    ρ = lag-1 autocorrelation of the centred series + (1 + 3ρ)/T (Kendall's bias correction),
    clipped to [0, 0.97]; e_t = u_t − ρ u_{t−1}; Bartlett weights 1 − l/(L + 1) for lags
    l ≤ L, L = ⌈1.1447 (α T)^{1/3}⌉ − 1 with α = 4ρ'²/((1 − ρ')²(1 + ρ')²), ρ' the lag-1
    autocorrelation of e (Andrews 1991); recoloured: LRV = LRV(e) / (1 − ρ)² (Andrews & Monahan
    1992). Returns ``(lrv, rho, L)``.
    """
    u = np.asarray(series, dtype=float)
    u = u - u.mean()
    t = u.size
    if t < 3:
        return float(np.dot(u, u) / max(t, 1)), 0.0, 0
    denominator = float(np.dot(u[:-1], u[:-1]))
    rho = float(np.dot(u[1:], u[:-1]) / denominator) if denominator > 0 else 0.0
    rho = min(max(rho + (1.0 + 3.0 * rho) / t, 0.0), MAX_AUTOCORRELATION)
    e = u[1:] - rho * u[:-1]
    bandwidth = _andrews_bandwidth(e)
    lrv = float(np.dot(e, e))
    for lag in range(1, bandwidth + 1):
        lrv += 2.0 * (1.0 - lag / (bandwidth + 1)) * float(np.dot(e[lag:], e[:-lag]))
    lrv = max(lrv, 0.0) / e.size / (1.0 - rho) ** 2
    return lrv, rho, bandwidth


def _andrews_bandwidth(e: np.ndarray) -> int:
    t = e.size
    denominator = float(np.dot(e[:-1], e[:-1])) if t > 1 else 0.0
    if t < 3 or denominator <= 0:
        return 0
    rho = min(max(float(np.dot(e[1:], e[:-1])) / denominator, -MAX_AUTOCORRELATION), MAX_AUTOCORRELATION)
    alpha = 4.0 * rho**2 / ((1.0 - rho) ** 2 * (1.0 + rho) ** 2)
    return int(min(t - 1, max(0, math.ceil(1.1447 * (alpha * t) ** (1.0 / 3.0)) - 1)))


# ---------------------------------------------------------------------------------------------
# the fit


def fit_rate(
    n: ArrayLike,
    y: ArrayLike,
    tail: float = 0.5,
    *,
    running_average: bool = False,
    block_means: ArrayLike | None = None,
    level: float = 0.95,
    quantity: str | None = None,
) -> RateFit:
    """Fit log y = a + b log n over the last ``tail`` fraction of the iterations, with a HAC
    standard error and a ``level`` confidence interval for b (see the module docstring).

    Args:
        n: iterations (increasing).
        y: the curve at those iterations.
        tail: fraction of the iterations fitted: n ≥ max(3, (1 − tail) · n_max).
        running_average: ``y`` is ȳ(n) = (1/n) Σ_{k≤n} g_k recorded at the (integer, strictly
            increasing) steps ``n``, every row since the first (the engine's
            ``minibatch_grad_norm_sq_avg``); the standard error then accounts for all the noise ȳ carries.
        block_means: with ``running_average``, the mean of g over each block (n_{i−1}, n_i] when
            known exactly (every step recorded: the ``minibatch_grad_norm_sq`` column); by default recovered
            as (n_i ȳ_i − n_{i−1} ȳ_{i−1}) / (n_i − n_{i−1}), which loses precision at very
            large n from the float32 rounding of ȳ.
        level: confidence level of the interval.
        quantity: what y is, in words (for :func:`describe`).
    """
    n = np.asarray(n, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if n.shape != y.shape:
        raise InputError(f"n and y differ in length ({n.size} and {y.size})")
    if not 0.0 < level < 1.0:
        raise InputError(f"level must lie in (0, 1), got {level}")
    window = fit_window(n, y, tail)
    if int(window.sum()) < 3 or np.ptp(np.log(n[window])) == 0:
        raise InputError(
            f"too few points to fit a rate: {int(window.sum())} in the window n >= "
            f"max(3, (1 - {tail}) * n_max) with y > 0 (need at least 3 distinct iterations)"
        )
    x = np.log(n[window])
    log_y = np.log(y[window])
    xc = x - x.mean()
    sxx = float(np.dot(xc, xc))
    weights = xc / sxx
    slope = float(np.dot(weights, log_y))
    intercept = float(log_y.mean() - slope * x.mean())
    residuals = log_y - intercept - slope * x
    naive_se = math.sqrt(float(np.dot(residuals, residuals)) / (x.size - 2) / sxx) if x.size > 2 else float("nan")

    if running_average:
        variance, rho, bandwidth = _running_average_variance(n, y, window, weights, block_means)
    else:
        if block_means is not None:
            raise InputError("block_means applies to running averages only (running_average=True)")
        lrv, rho, bandwidth = long_run_variance(residuals)
        variance = max(float(np.dot(weights, weights)) * lrv, naive_se**2 if math.isfinite(naive_se) else 0.0)
    se = math.sqrt(max(variance, 0.0))
    z = student_t_quantile(0.5 + level / 2.0, window.sum() - 2)
    constant = fit_log_rate_constant(n, y, tail)
    return RateFit(
        slope=slope,
        intercept=intercept,
        se=se,
        ci_low=slope - z * se,
        ci_high=slope + z * se,
        level=level,
        naive_se=naive_se,
        autocorrelation=rho,
        bandwidth=bandwidth,
        tail=tail,
        n_start=float(n[window][0]),
        n_end=float(n[window][-1]),
        num_points=int(window.sum()),
        running_average=running_average,
        theory_slope=theory_slope(n[window]),
        reference_constant=float("nan") if constant is None else constant,
        quantity=quantity or ("the running average of ‖g‖²" if running_average else "‖g‖²"),
    )


def _running_average_variance(
    n: np.ndarray, y: np.ndarray, window: np.ndarray, weights: np.ndarray, block_means: ArrayLike | None
) -> tuple[float, float, int]:
    """Var(b̂) of a running average by the delta method over the block sums (module docstring)."""
    if not (np.all(np.isfinite(n)) and np.all(np.isfinite(y))):
        raise InputError("a running average needs every recorded row finite (it is differenced)")
    if n[0] < 1 or np.any(np.diff(n) <= 0) or np.any(n != np.round(n)):
        raise InputError("a running average needs strictly increasing integer steps from 1 on")
    sums = n * y  # S_j = n_j ȳ_j
    widths = np.diff(n, prepend=0.0)
    if block_means is None:
        means = np.diff(sums, prepend=0.0) / widths
    else:
        means = np.asarray(block_means, dtype=float).ravel()
        if means.shape != n.shape or not np.all(np.isfinite(means)):
            raise InputError(f"block_means must be {n.size} finite values, one per recorded step")
    coefficient = np.zeros_like(n)
    coefficient[window] = weights / sums[window]
    c = np.cumsum(coefficient[::-1])[::-1]  # c_i = Σ_{j∈W, j≥i} w_j / S_j
    centres = n - (widths - 1.0) / 2.0
    trend, leverage = _local_loglinear_trend(centres, means)
    trend = trend * float(np.mean(means / trend))  # the log-space fit tracks the median; centre η
    eta = (means / trend - 1.0) / np.sqrt(1.0 - np.minimum(leverage, 0.9))
    lrv, rho, bandwidth = long_run_variance(eta)
    scale = c * widths * trend
    return float(np.dot(scale, scale)) * lrv, rho, bandwidth


def _local_loglinear_trend(x_n: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """exp of a local linear fit of log values against log n at every point, over
    |log n' − log n| ≤ TREND_HALF_WIDTH and at least TREND_MIN_BLOCKS points either side,
    and the leverage of each point in its own fit."""
    floor = 1e-12 * max(float(np.max(np.abs(values))), 1e-300)
    x = np.log(x_n)
    v = np.log(np.maximum(values, floor))
    size = x.size

    def cumulative(a: np.ndarray) -> np.ndarray:
        return np.concatenate([[0.0], np.cumsum(a)])

    c1, cx, cv, cxx, cxv = (cumulative(a) for a in (np.ones(size), x, v, x * x, x * v))
    index = np.arange(size)
    lo = np.minimum(np.searchsorted(x, x - TREND_HALF_WIDTH, "left"), np.maximum(index - TREND_MIN_BLOCKS, 0))
    hi = np.maximum(np.searchsorted(x, x + TREND_HALF_WIDTH, "right"), np.minimum(index + TREND_MIN_BLOCKS + 1, size))
    count = c1[hi] - c1[lo]
    x_mean = (cx[hi] - cx[lo]) / count
    v_mean = (cv[hi] - cv[lo]) / count
    x_var = (cxx[hi] - cxx[lo]) / count - x_mean**2
    xv_cov = (cxv[hi] - cxv[lo]) / count - x_mean * v_mean
    ok = x_var > 1e-12 * np.maximum(x_mean**2, 1.0)
    safe_var = np.where(ok, x_var, 1.0)
    slope = np.where(ok, xv_cov / safe_var, 0.0)
    leverage = 1.0 / count + np.where(ok, (x - x_mean) ** 2 / (count * safe_var), 0.0)
    return np.exp(v_mean + slope * (x - x_mean)), leverage


# ---------------------------------------------------------------------------------------------
# comparison with the theory and words


def verdict(fit: RateFit) -> Literal["consistent", "faster", "slower"]:
    """``consistent``: the interval contains ``theory_slope``; ``faster``: it lies wholly below
    (decays faster than log n / √n); ``slower``: wholly above."""
    if fit.ci_high < fit.theory_slope:
        return "faster"
    if fit.ci_low > fit.theory_slope:
        return "slower"
    return "consistent"


def consistent_with_theory(fit: RateFit) -> bool:
    """Whether the confidence interval of the slope contains the slope of log n / √n over the
    same window (:func:`theory_slope`, not −1/2: the log factor flattens it at finite n)."""
    return verdict(fit) == "consistent"


def describe(fit: RateFit) -> str:
    """One plain-language sentence, e.g. "the running average of ‖g‖² decays as n^-0.48 (95% CI
    -0.53 to -0.43) over iterations 500-1000, consistent with O(log n / √n) (slope -0.36 over
    these iterations; fitted 2.1 log n / √n)"."""
    level = f"{100 * fit.level:g}%"
    head = (
        f"{fit.quantity} decays as n^{fit.slope:.2f} ({level} CI {fit.ci_low:.2f} to {fit.ci_high:.2f}) "
        f"over iterations {fit.n_start:.0f}-{fit.n_end:.0f}"
    )
    if fit.slope > 0:
        head = head.replace(" decays as ", " grows as ", 1)
    reference = f"slope {fit.theory_slope:.2f} over these iterations; fitted {fit.reference_constant:.3g} log n / √n"
    kind = verdict(fit)
    if kind == "consistent":
        return f"{head}, consistent with O(log n / √n) ({reference})"
    if kind == "faster":
        return f"{head}, faster than log n / √n ({reference}): the O(log n / √n) bound holds with room to spare"
    return f"{head}, slower than the O(log n / √n) rate of the theory ({reference})"
