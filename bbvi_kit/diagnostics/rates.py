"""Rate fits (a function API): the log-log slope of a gradient-norm curve over the tail of
training with an autocorrelation-robust interval, and its comparison with O(log n / √n).

The statistics live in :mod:`bbvi_kit.results.rates` and :func:`rate_from_run` in
:mod:`bbvi_kit.results.run_rate` (the diagnostics read no run directory); this module keeps
the names the README documents.
"""

from bbvi_kit.results.rates import (
    MAX_AUTOCORRELATION,
    TREND_HALF_WIDTH,
    TREND_MIN_BLOCKS,
    RateFit,
    consistent_with_theory,
    describe,
    fit_log_rate_constant,
    fit_rate,
    fit_window,
    long_run_variance,
    student_t_quantile,
    theory_slope,
    verdict,
)
from bbvi_kit.results.run_rate import rate_from_run

__all__ = [
    "MAX_AUTOCORRELATION",
    "TREND_HALF_WIDTH",
    "TREND_MIN_BLOCKS",
    "RateFit",
    "consistent_with_theory",
    "describe",
    "fit_log_rate_constant",
    "fit_rate",
    "fit_window",
    "long_run_variance",
    "rate_from_run",
    "student_t_quantile",
    "theory_slope",
    "verdict",
]
