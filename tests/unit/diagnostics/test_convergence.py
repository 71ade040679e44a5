"""The convergence verdict on synthetic series with a known truth, many seeds each, and the
stratified running average against the exact average of a known curve."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from bbvi_kit.diagnostics.base import stratified_block
from bbvi_kit.diagnostics.convergence import full_gradient_verdict, minibatch_verdict
from bbvi_kit.diagnostics.full_gradient import FullGradient, StratifiedAverage, interval_multiplier
from bbvi_kit.diagnostics.rates import student_t_quantile

T = 2000
N = np.arange(1, T + 1)
SEEDS = 100


def ar1(rng: np.random.Generator, size: int, rho: float, sd: float) -> np.ndarray:
    """Stationary AR(1) noise with marginal sd ``sd``: the autocorrelated noise of ||g_n||^2 in log space."""
    shocks = rng.normal(size=size) * sd * math.sqrt(1 - rho**2)
    out = np.empty(size)
    out[0] = rng.normal() * sd
    for i in range(1, size):
        out[i] = rho * out[i - 1] + shocks[i]
    return out


def stratified_steps(rng: np.random.Generator, every: int) -> np.ndarray:
    return np.array([rng.integers(b * every + 1, (b + 1) * every + 1) for b in range(T // every)])


def test_student_t_quantiles_match_tables() -> None:
    for df, value in ((1, 12.7062), (2, 4.3027), (3, 3.1824), (7, 2.3646), (30, 2.0423)):
        assert student_t_quantile(0.975, df) == pytest.approx(value, abs=1e-4)
    assert student_t_quantile(0.025, 3) == pytest.approx(-3.1824, abs=1e-4)
    assert interval_multiplier(4) == pytest.approx(3.1824, abs=1e-4)


def test_a_flat_series_after_a_transient_is_at_the_noise_floor_never_faster() -> None:
    kinds, starts = Counter(), []
    for seed in range(SEEDS):
        rng = np.random.default_rng(seed)
        minibatch = 48 * (1 + 10 * np.exp(-N / 30)) * np.exp(ar1(rng, T, 0.3, 0.3))
        found = minibatch_verdict(N, minibatch)
        kinds[found.kind] += 1
        if found.kind == "noise_floor":
            starts.append(found.floor_since)
            assert found.floor == pytest.approx(48 * math.exp(0.3**2 / 2), rel=0.1)  # lognormal mean
    assert kinds["noise_floor"] >= 0.97 * SEEDS and kinds["faster"] == 0 and kinds["consistent"] == 0, kinds
    # the transient is 10 e^{-n/30}: over 10% of the floor until n = 138; the start found is past
    # the visible transient and well before the window (n = 1000) in most runs
    assert 60 <= np.median(starts) <= 300
    assert found.series == "minibatch" and "noise floor" in found.sentence and "full_gradient" in found.sentence


def test_the_old_running_average_rule_would_have_been_fooled() -> None:
    """The running average of the same flat series decays like 1/n from its transient: that is
    what made a floor read as 'faster than the bound'."""
    rng = np.random.default_rng(0)
    minibatch = 48 * (1 + 10 * np.exp(-N / 30)) * np.exp(ar1(rng, T, 0.3, 0.3))
    average = np.cumsum(minibatch) / N
    assert np.log(average[-1] / average[T // 2]) / np.log(2) < -0.05  # the running average still falls


def test_n_to_the_minus_half_plus_a_floor_is_found_on_the_full_series_and_the_floor_reported() -> None:
    kinds, covered, floors = Counter(), 0, Counter()
    for seed in range(SEEDS):
        rng = np.random.default_rng(seed)
        steps = stratified_steps(rng, 25)
        truth = 5 * steps**-0.5
        se = 0.1 * truth
        full = truth + rng.normal(size=steps.size) * se
        verdict = full_gradient_verdict(steps, full, se, num_estimates=8)
        kinds[verdict.kind] += 1
        covered += verdict.fit.ci_low <= -0.5 <= verdict.fit.ci_high
        minibatch = (5 * N**-0.5 + 3) * np.exp(ar1(rng, T, 0.3, 0.3))
        floor = minibatch_verdict(N, minibatch, full=(steps, full))
        floors[floor.kind] += 1
        if floor.kind == "noise_floor":
            assert floor.noise_share > 0.9  # 5/sqrt(n) is under 0.16 of 3 past n = 1000
    assert kinds["consistent"] + kinds["faster"] >= 0.95 * SEEDS, kinds
    assert covered >= 0.88 * SEEDS  # the interval covers the true exponent
    assert floors["noise_floor"] >= 0.95 * SEEDS, floors
    assert "full-data ‖∇L‖²" in verdict.sentence


def test_pure_one_over_n_is_faster() -> None:
    kinds = Counter()
    for seed in range(SEEDS):
        rng = np.random.default_rng(seed)
        steps = stratified_steps(rng, 20)
        se = 0.2 * 50 / steps
        verdict = full_gradient_verdict(steps, 50 / steps + rng.normal(size=steps.size) * se, se, num_estimates=8)
        kinds[verdict.kind] += 1
        minibatch = minibatch_verdict(N, 50 / N * np.exp(ar1(rng, T, 0.3, 0.3)))
        assert minibatch.kind == "faster", minibatch.sentence
    assert kinds["faster"] >= 0.95 * SEEDS, kinds


def test_a_growing_minibatch_norm_says_so() -> None:
    rng = np.random.default_rng(1)
    found = minibatch_verdict(N, 900 * N**0.4 * np.exp(ar1(rng, T, 0.3, 0.3)))
    assert found.kind == "grows" and found.level == "warning" and "grows as n^0.4" in found.sentence
    assert found.noise_share is None and "tell which" in found.sentence
    # a full-data gradient that stays at 100 while ||g||^2 grows: the noise grows
    steps = np.arange(50, 2001, 50)
    found = minibatch_verdict(N, 900 * N**0.4 * np.exp(ar1(rng, T, 0.3, 0.3)), full=(steps, np.full(steps.size, 100.0)))
    assert found.kind == "grows" and found.noise_share > 0.99 and "full_gradient diagnostic puts" in found.sentence


def test_zero_within_error_is_stationary_not_a_rate() -> None:
    rng = np.random.default_rng(2)
    steps = stratified_steps(rng, 100)
    se = np.full(steps.size, 0.05)
    found = full_gradient_verdict(steps, rng.normal(size=steps.size) * 0.05, se, num_estimates=4,
                                  average=(2000.0, 0.3, 0.02))
    assert found.kind == "stationary" and found.fit is None
    assert "0.3 ± 0.02 at n = 2000" in found.sentence


def test_too_few_measurements_are_named_not_fitted() -> None:
    found = full_gradient_verdict([500, 1000, 1500], [3.0, 2.0, 1.0], [0.1, 0.1, 0.1], num_estimates=4)
    assert found.kind == "too_short" and "measured 2 times over the last 50%" in found.sentence


def test_the_stratified_running_average_is_unbiased_with_an_honest_standard_error() -> None:
    """f(n) = 100 n^-0.7 + 1 along a trajectory of 1000 iterations, one measurement per block of
    the stratified schedule (every = 50) at a uniform iteration, with measurement noise of known
    SE; the exact average (1/n) sum f is covered by the estimate +- 2 SE in about 95% of runs,
    and the estimate is unbiased."""
    f = 100 * N[:1000] ** -0.7 + 1
    exact = f.cumsum() / N[:1000]
    blocks = sorted({stratified_block(n, 1000, 50) for n in range(1, 1001)})
    assert blocks[:8] == [(1, 1), (2, 2), (3, 4), (5, 8), (9, 16), (17, 32), (33, 64), (65, 114)]
    assert blocks[-1] == (965, 1000)
    errors, covered = [], 0
    for seed in range(400):
        rng = np.random.default_rng(seed)
        average = StratifiedAverage()
        for first, last in blocks:
            tau = int(rng.integers(first, last + 1))
            se = 0.1 * f[tau - 1]
            mean, mean_se = average.add(first, last, f[tau - 1] + rng.normal() * se, se)
        errors.append(mean - exact[-1])
        covered += abs(mean - exact[-1]) <= 2 * mean_se
    errors = np.array(errors)
    assert abs(errors.mean()) < 3 * errors.std() / math.sqrt(len(errors))
    assert covered >= 0.9 * 400
    # a grid at the blocks' last iterations is biased low on a falling curve: the right Riemann sum
    grid = np.mean(f[49::50])
    assert grid < exact[-1] - 5 * errors.std()


def test_a_missing_block_makes_the_average_nan_and_the_state_round_trips() -> None:
    average = StratifiedAverage()
    average.add(1, 10, 2.0, 0.1)
    copy = StratifiedAverage()
    copy.load_state_dict(average.state_dict())
    assert copy.add(11, 20, 1.0, 0.1) == average.add(11, 20, 1.0, 0.1)
    assert math.isnan(average.add(31, 40, 1.0, 0.1)[0])


def test_the_stratified_schedule_measures_once_per_block_at_a_seeded_uniform_step() -> None:
    stratified = FullGradient(every=10, schedule="stratified")
    grid = FullGradient(every=10)
    total = 95

    def drawn(seed: int) -> list[int]:
        return [n for n in range(1, total + 1) if stratified.due(n, evaluating=False, total=total, seed=seed)]

    steps = drawn(7)
    blocks = [stratified.block(n, total) for n in steps]
    assert blocks == sorted(set(blocks)) and blocks[:6] == [(1, 1), (2, 2), (3, 4), (5, 8), (9, 16), (17, 26)]
    assert blocks[-1] == (87, 95)  # the last block cut at the last iteration
    assert sorted({stratified_block(n, total, 10) for n in range(1, total + 1)}) == blocks  # one per block
    assert all(first <= n <= last for n, (first, last) in zip(steps, blocks))
    assert drawn(7) == steps and drawn(8) != steps  # the run's seed decides, a resumed run draws the same
    assert not any(stratified.due(n, evaluating=True, total=total, seed=7) for n in range(1, total + 1))
    # uniform within a block: over many seeds every iteration of a block of 10 is drawn about equally
    counts = Counter(n for seed in range(2000) for n in range(37, 47)
                     if stratified.due(n, evaluating=False, total=total, seed=seed))
    assert sorted(counts) == list(range(37, 47)) and max(counts.values()) < 1.3 * min(counts.values())
    assert [n for n in range(1, total + 1) if grid.due(n, evaluating=False, total=total, seed=7)] == [
        10, 20, 30, 40, 50, 60, 70, 80, 90, 95]
    assert grid.block(10, total) is None


def test_a_stratified_schedule_without_every_is_refused_naming_the_key() -> None:
    from bbvi_kit.errors import InputError
    from bbvi_kit.recipe import resolve

    with pytest.raises(InputError, match=r"diagnostics\.0: schedule: stratified needs `every`"):
        resolve({"name": "x", "model": {"name": "gaussian_vae"}, "data": {"name": "digits"},
                 "diagnostics": [{"name": "full_gradient", "schedule": "stratified"}]})
