"""The rules behind the findings, as the page states them ("How the findings are computed")."""

from __future__ import annotations

from bbvi_kit.diagnostics.collapse import COLLAPSE_FRACTION

__all__ = ["COLLAPSE_FRACTION", "RULES", "TEST_RISE"]

TEST_RISE = 0.01
"""A final test loss more than this fraction above the lowest one is reported as a rise."""

RULES = [
    "Convergence (bbvi_kit.diagnostics.convergence): the theorems bound the running average of the full-data "
    "‖∇L‖², not of the mini-batch ‖g‖², whose expectation ‖∇L‖² + tr Cov(g) levels off at a noise floor. With the "
    "full_gradient diagnostic, the verdict is about its unbiased estimates U of ‖∇L‖² over the last half of the "
    "iterations: stationary when at least half of them are zero within their 95% interval (U ≤ t SE, Student's "
    "t with M − 1 degrees of freedom), else b, the least-squares slope of log U on log n with a 95% interval "
    "(autocorrelation-robust, never narrower than the plain one, Student's t quantile), is compared with the slope "
    "of log n/√n over the same iterations: consistent when the interval contains it (inconclusive when it also "
    "contains 0, no decay), faster or slower when it lies below or above. Raw series are fitted, never running "
    "averages: a running average keeps a 1/n memory of the early transient.",
    "Mini-batch ‖g_n‖² (every run; the mean over seeds in a sweep): the same fit of the raw per-step values; at the "
    "noise floor when the slope's interval reaches into |b| ≤ 0.1, since the first of the geometric bins (ratio "
    "0.8) going back whose mean log value stays within 10% (or 2 SE) of the floor's; its noise share from the "
    "gradient_noise diagnostic (tr Cov g, rescaled to the training batch size) or from full_gradient (1 − U / "
    "floor). A decay consistent with or faster than log n/√n bounds ‖∇L‖² from above; a slower one says nothing "
    "about it.",
    "Test loss: a final test negative ELBO more than "
    f"{TEST_RISE:.0%} above its lowest value is reported as a rise.",
    "Posterior collapse (diagnostic posterior_collapse): reported when the fraction of active latent "
    "units at the last measurement is below the diagnostic's warn_below option (default "
    f"{COLLAPSE_FRACTION:.0%}).",
    "SNR against K (diagnostic snr in a sweep with several K): the least-squares slope of log "
    "SNR at the last measurement (mean over seeds) on log K; Rainforth et al. (2018) predict "
    "SNR(θ) ∝ √(BK) (slope +1/2) and SNR(φ) ∝ √(B/K) (slope −1/2).",
    "Sweep comparisons: mean ± sd over the seeds with a finite value (sd with ddof 1); two points "
    "are said to differ beyond the spread over seeds when their means differ by more than the "
    "larger sd.",
    "Diagnostics: one sentence on the first value of the diagnostic's main column to the last. An "
    "infinite value is always reported; a NaN once the column has had a finite value (a first NaN "
    "can be by design, e.g. smoothness has no previous point at its first measurement); a column "
    "with no finite value at all is reported as undefined or broken.",
]
