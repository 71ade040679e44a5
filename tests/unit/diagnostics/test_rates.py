"""Rate fits (log-log slope with a confidence interval that survives autocorrelation) against
closed forms and simulations of known truth, and on a real training run."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyro
import pytest
import torch
from torch.utils.data import TensorDataset

from bbvi_kit import ELBO, SGD, DataInfo, Pathwise, Trainer, TrainingOptions
from bbvi_kit.diagnostics.rates import (
    RateFit,
    consistent_with_theory,
    describe,
    fit_log_rate_constant,
    fit_rate,
    fit_window,
    long_run_variance,
    rate_from_run,
    theory_slope,
    verdict,
)
from bbvi_kit.errors import InputError
from bbvi_kit.runs import RunDirectory, read_csv
from bbvi_kit_plugins.gaussian_vae import GaussianVAE

pytestmark = pytest.mark.usefixtures("one_torch_thread")

INFO = DataInfo(name="toy", shape=(6,), num_train=48, num_test=20)


# =============================================================================================
# rate fits
# =============================================================================================
def ar1(reps: int, length: int, rho: float, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """``reps`` stationary Gaussian AR(1) series with lag-1 correlation rho and sd sigma."""
    out = np.empty((reps, length))
    out[:, 0] = rng.standard_normal(reps) * sigma
    innovations = rng.standard_normal((reps, length)) * sigma * math.sqrt(1 - rho**2)
    for t in range(1, length):
        out[:, t] = rho * out[:, t - 1] + innovations[:, t]
    return out


def ols_slope(n: np.ndarray, y: np.ndarray, tail: float = 0.5) -> float:
    w = fit_window(n, y, tail)
    return float(np.polyfit(np.log(n[w]), np.log(y[w]), 1)[0])


def test_an_exact_power_law_is_recovered_exactly() -> None:
    n = np.arange(1, 1001, dtype=float)
    fit = fit_rate(n, 2.5 * n**-0.7)
    assert fit.slope == pytest.approx(-0.7, abs=1e-12) and fit.intercept == pytest.approx(math.log(2.5), abs=1e-10)
    assert fit.se < 1e-10 and fit.ci_low <= fit.slope <= fit.ci_high
    assert (fit.n_start, fit.n_end, fit.num_points) == (500, 1000, 501)
    assert fit_rate(n, n**-0.7, tail=0.2).n_start == 800


def test_a_noise_free_running_average_has_the_power_law_slope() -> None:
    """ybar(n) = (1/n) sum_k C k^-1/2 = 2C n^-1/2 + zeta(1/2) C / n + ...: slope -1/2 + O(n^-1/2)."""
    n = np.arange(1, 50_001, dtype=float)
    g = 3.0 * n**-0.5
    fit = fit_rate(n, np.cumsum(g) / n, running_average=True)
    # Euler-Maclaurin: d log ybar / d log n = -1/2 - zeta(1/2)/(2 sqrt n) / (1 + ...) ~ -1/2 + 0.73/(2 sqrt n)
    assert -0.5 < fit.slope < -0.5 + 0.73 / math.sqrt(25_000)
    assert fit.se < 1e-3  # only the smoothing error of the trend remains


def test_the_theory_slope_and_the_reference_constant() -> None:
    n = np.arange(1, 20_001, dtype=float)
    reference = 1.7 * np.log(n) / np.sqrt(n)
    fit = fit_rate(n, reference)
    assert fit.slope == pytest.approx(fit.theory_slope, abs=1e-12)  # the estimator's own view of the curve
    w = fit_window(n, reference)
    assert fit.theory_slope == pytest.approx(np.mean(1 / np.log(n[w]) - 0.5), abs=2e-3)
    assert -0.5 < fit.theory_slope < -0.38  # not -1/2 at finite n
    assert fit.reference_constant == pytest.approx(1.7, rel=1e-12)
    assert consistent_with_theory(fit) and verdict(fit) == "consistent"
    assert verdict(fit_rate(n, n**-1.0)) == "faster" and verdict(fit_rate(n, n**-0.2)) == "slower"
    assert theory_slope(np.array([1000.0, 1000.0])) == pytest.approx(1 / math.log(1000) - 0.5)


def test_the_reference_constant_is_the_figures_fit() -> None:
    from bbvi_kit.results import fit_log_rate

    rng = np.random.default_rng(0)
    n = np.arange(1, 3001, dtype=float)
    y = 4.0 * np.log(n) / np.sqrt(n) * np.exp(rng.normal(0, 0.3, n.size))
    assert fit_log_rate_constant(n, y) == pytest.approx(fit_log_rate(n, y), rel=1e-12)
    assert fit_log_rate_constant(n, 4.0 * np.log(n) / np.sqrt(n), tail=0.1) == pytest.approx(4.0, rel=1e-12)
    assert fit_log_rate_constant(n[:2], y[:2]) is None


def test_long_run_variance_of_an_ar1_series() -> None:
    """LRV of AR(1) = sigma^2 (1 + rho) / (1 - rho): 19 sigma^2 at rho = 0.9."""
    rng = np.random.default_rng(3)
    series = ar1(40, 5000, 0.9, 1.0, rng)
    estimates = np.array([long_run_variance(s)[0] for s in series])
    assert np.mean(estimates) == pytest.approx(19.0, rel=0.08)  # standard error of the mean ~2%
    assert long_run_variance(rng.standard_normal(20_000))[0] == pytest.approx(1.0, rel=0.05)  # se ~1%


def coverage(slopes: np.ndarray, ses: np.ndarray, truth: float) -> float:
    return float(np.mean(np.abs(slopes - truth) <= 1.959964 * ses))


def test_confidence_interval_coverage_with_autocorrelated_noise() -> None:
    """y_n = 3 n^-1/2 exp(eps_n), eps AR(1) with rho = 0.9: over 100 repetitions the 95% interval
    contains -1/2 in >= 85% of them, and the standard error matches the spread of the slopes,
    where the naive OLS interval covers far less."""
    rng = np.random.default_rng(0)
    n = np.arange(1, 2001, dtype=float)
    noise = ar1(100, n.size, 0.9, 0.5, rng)
    fits = [fit_rate(n, 3.0 * n**-0.5 * np.exp(e)) for e in noise]
    slopes, ses = np.array([f.slope for f in fits]), np.array([f.se for f in fits])
    assert coverage(slopes, ses, -0.5) >= 0.85
    assert 0.7 < ses.mean() / slopes.std() < 1.4
    assert coverage(slopes, np.array([f.naive_se for f in fits]), -0.5) < 0.6
    assert np.mean([f.autocorrelation for f in fits]) == pytest.approx(0.9, abs=0.05)


@pytest.mark.parametrize("record_every", [1, 10])
def test_running_average_coverage(record_every: int) -> None:
    """g_k = 3 k^-1/2 xi_k, xi lognormal AR(1) noise of mean 1 (rho = 0.5, sd of log 0.7);
    ybar(n) = (1/n) sum_{k<=n} g_k recorded every `record_every` steps. The truth is the slope of
    the noise-free running average over the window. The naive interval covers almost never."""
    rng = np.random.default_rng(1)
    length, sigma = 2000, 0.7
    k = np.arange(1, length + 1, dtype=float)
    mean_g = 3.0 * k**-0.5
    n = np.arange(record_every, length + 1, record_every, dtype=float)
    rows = n.astype(int) - 1
    truth = ols_slope(n, (np.cumsum(mean_g) / k)[rows])
    xi = np.exp(ar1(100, length, 0.5, sigma, rng) - sigma**2 / 2)
    fits = []
    for g in mean_g * xi:
        ybar = (np.cumsum(g) / k)[rows]
        block_means = g if record_every == 1 else None  # exact block means, or by differencing
        fits.append(fit_rate(n, ybar, running_average=True, block_means=block_means))
    slopes, ses = np.array([f.slope for f in fits]), np.array([f.se for f in fits])
    assert coverage(slopes, ses, truth) >= 0.85
    assert 0.7 < ses.mean() / slopes.std() < 1.4
    assert coverage(slopes, np.array([f.naive_se for f in fits]), truth) < 0.3


def test_differencing_recovers_the_block_means() -> None:
    rng = np.random.default_rng(2)
    g = rng.gamma(2.0, size=600) * np.arange(1, 601) ** -0.5
    n = np.arange(1, 601, dtype=float)
    ybar = np.cumsum(g) / n
    by_difference = fit_rate(n, ybar, running_average=True)
    exact = fit_rate(n, ybar, running_average=True, block_means=g)
    assert by_difference.se == pytest.approx(exact.se, rel=1e-6)


def test_describe_says_the_rate_in_words() -> None:
    fit = RateFit(slope=-0.48, intercept=1.0, se=0.025, ci_low=-0.53, ci_high=-0.43, level=0.95, naive_se=0.002,
                  autocorrelation=0.3, bandwidth=2, tail=0.5, n_start=500, n_end=1000, num_points=501,
                  running_average=True, theory_slope=-0.36, reference_constant=2.13,
                  quantity="the running average of ‖g‖²")
    assert verdict(fit) == "faster"
    assert describe(fit) == (
        "the running average of ‖g‖² decays as n^-0.48 (95% CI -0.53 to -0.43) over iterations 500-1000, "
        "faster than log n / √n (slope -0.36 over these iterations; fitted 2.13 log n / √n): "
        "the O(log n / √n) bound holds with room to spare")
    consistent = RateFit(**{**fit.__dict__, "theory_slope": -0.5})
    assert describe(consistent).endswith(
        "-0.43) over iterations 500-1000, consistent with O(log n / √n) "
        "(slope -0.50 over these iterations; fitted 2.13 log n / √n)")
    slower = RateFit(**{**fit.__dict__, "slope": 0.1, "ci_low": 0.05, "ci_high": 0.15})
    assert describe(slower).startswith("the running average of ‖g‖² grows as n^0.10 (95% CI 0.05 to 0.15)")
    assert "slower than the O(log n / √n) rate" in describe(slower)
    assert fit.to_dict()["verdict"] == "faster" and fit.to_dict()["consistent"] is False


def test_bad_inputs_are_refused() -> None:
    n = np.arange(1, 11, dtype=float)
    with pytest.raises(InputError, match="too few points"):
        fit_rate(n[:4], n[:4] ** -0.5)
    with pytest.raises(InputError, match="tail must lie"):
        fit_rate(n, n**-0.5, tail=0.0)
    with pytest.raises(InputError, match="differ in length"):
        fit_rate(n, n[:-1])
    with pytest.raises(InputError, match="strictly increasing integer steps"):
        fit_rate(n + 0.5, n**-0.5, running_average=True)
    with pytest.raises(InputError, match="block_means must be"):
        fit_rate(n, n**-0.5, running_average=True, block_means=n[:3])


@pytest.mark.parametrize("record_every", [1, 4])
def test_rate_from_a_real_training_run(tmp_path: Path, record_every: int) -> None:
    pyro.set_rng_seed(0)
    vae = GaussianVAE(INFO, latent_dim=2, hidden=[5])
    train = TensorDataset(torch.rand(48, 6, generator=torch.Generator().manual_seed(0)))
    trainer = Trainer(vae.model, vae.guide, objective=ELBO(), estimator=Pathwise(), optimizer=SGD(lr=0.02),
                      training=TrainingOptions(batch_size=4, epochs=10, seed=0, progress=False, device="cpu",
                                               record_every=record_every),
                      parameter_groups=vae.parameter_groups, modules=[vae])
    run = RunDirectory.create(tmp_path, "rate")
    history = trainer.fit(train, run=run)
    run.close()
    rows = read_csv(run.path / "metrics.csv")
    steps = np.array([r["step"] for r in rows])
    ybar = np.array([r["minibatch_grad_norm_sq_avg"] for r in rows])
    # the engine's running average is what fit_rate assumes: its differences are the per-step norms
    if record_every == 1:
        g = np.array([r["minibatch_grad_norm_sq"] for r in rows])
        np.testing.assert_allclose(np.diff(steps * ybar, prepend=0.0), g, rtol=1e-4)
    fit = rate_from_run(run.path, column="minibatch_grad_norm_sq_avg")
    assert fit == fit_rate(steps, ybar, running_average=True, block_means=g if record_every == 1 else None,
                           quantity="the running average of the mini-batch ‖g‖²")
    assert fit.n_end == 120 and fit.n_start == 60 and fit.running_average
    assert math.isfinite(fit.slope) and fit.ci_low < fit.slope < fit.ci_high
    assert fit.se > fit.naive_se  # the running average's noise is shared along the window
    assert describe(fit).startswith("the running average of the mini-batch ‖g‖² ")
    direct = rate_from_run(run.path)  # the default: the raw per-step column
    assert not direct.running_average and describe(direct).startswith("the mini-batch ‖g‖² ")
    assert len(history.metrics) == 120 // record_every
    with pytest.raises(InputError, match="no metrics.csv"):
        rate_from_run(tmp_path)
