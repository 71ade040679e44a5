"""Curves over seeds (:mod:`bbvi_kit.results.bands`): the mean, minimum and maximum at the x
values every seed shares (the common prefix of seeds of different lengths, in any order), and
thinning for drawing that keeps the first and last points."""

from __future__ import annotations

import numpy as np

from bbvi_kit.results.bands import MAX_POINTS, Band, aggregate


def test_no_curves_give_an_empty_band() -> None:
    band = aggregate([])
    assert band.n == 0 and len(band) == 0
    assert all(a.shape == (0,) for a in (band.x, band.mean, band.lo, band.hi))


def test_one_curve_is_its_own_mean_minimum_and_maximum() -> None:
    band = aggregate([([1, 2, 3], [4.0, 5.0, 6.0])])
    assert band.n == 1
    for values in (band.mean, band.lo, band.hi):
        np.testing.assert_array_equal(values, [4.0, 5.0, 6.0])


def test_the_band_is_the_mean_and_range_over_seeds_at_each_x() -> None:
    band = aggregate([([1, 2, 3], [1.0, 10.0, 0.0]), ([1, 2, 3], [3.0, 20.0, -6.0]), ([1, 2, 3], [8.0, 0.0, 3.0])])
    np.testing.assert_array_equal(band.x, [1, 2, 3])
    np.testing.assert_allclose(band.mean, [4.0, 10.0, -1.0])
    np.testing.assert_array_equal(band.lo, [1.0, 0.0, -6.0])
    np.testing.assert_array_equal(band.hi, [8.0, 20.0, 3.0])
    assert band.n == 3


def test_seeds_of_different_lengths_share_their_common_prefix() -> None:
    band = aggregate([([10, 20, 30, 40], [1.0, 2.0, 3.0, 4.0]), ([10, 20], [3.0, 6.0]), ([10, 20, 30], [5.0, 1.0, 0.0])])
    np.testing.assert_array_equal(band.x, [10, 20])
    np.testing.assert_allclose(band.mean, [3.0, 3.0])
    np.testing.assert_array_equal(band.lo, [1.0, 1.0])
    np.testing.assert_array_equal(band.hi, [5.0, 6.0])
    assert band.n == 3


def test_each_seeds_values_are_read_at_the_right_x_whatever_its_order() -> None:
    band = aggregate([([1, 2, 3], [10.0, 20.0, 30.0]), ([3, 1, 2], [33.0, 11.0, 22.0])])
    np.testing.assert_array_equal(band.x, [1, 2, 3])
    np.testing.assert_allclose(band.mean, [10.5, 21.0, 31.5])
    np.testing.assert_array_equal(band.lo, [10.0, 20.0, 30.0])
    np.testing.assert_array_equal(band.hi, [11.0, 22.0, 33.0])


def test_seeds_without_a_shared_x_give_an_empty_band_of_n_seeds() -> None:
    band = aggregate([([1, 2], [1.0, 2.0]), ([3, 4], [3.0, 4.0])])
    assert len(band) == 0 and band.n == 2


def test_a_short_band_is_not_thinned() -> None:
    band = aggregate([(range(10), np.arange(10.0))])
    assert band.thinned(max_points=10) is band and band.thinned(max_points=10, log_x=True) is band


def test_thinning_keeps_at_most_max_points_evenly_with_both_ends() -> None:
    x = np.arange(1001.0)
    band = Band(x, 2 * x, x - 1, x + 1, 3)
    thin = band.thinned(max_points=11)
    np.testing.assert_array_equal(thin.x, np.arange(0.0, 1001.0, 100.0))  # 0, 100, ..., 1000
    np.testing.assert_array_equal(thin.mean, 2 * thin.x)  # the arrays stay aligned
    np.testing.assert_array_equal(thin.lo, thin.x - 1)
    np.testing.assert_array_equal(thin.hi, thin.x + 1)
    assert thin.n == 3


def test_log_thinning_is_dense_at_the_start_and_keeps_both_ends() -> None:
    x = np.arange(10_000.0)
    thin = Band(x, x, x, x, 1).thinned(max_points=50, log_x=True)
    assert thin.x[0] == 0.0 and thin.x[-1] == 9999.0
    assert len(thin) <= 50 and np.all(np.diff(thin.x) > 0)
    gaps = np.diff(thin.x)
    assert gaps[0] == 1.0 and gaps[-1] > 1000.0  # geometric spacing: unit steps first, wide ones last


def test_the_default_thinning_limit_is_max_points() -> None:
    x = np.arange(MAX_POINTS + 500.0)
    thin = Band(x, x, x, x, 1).thinned()
    assert len(thin) == MAX_POINTS and thin.x[0] == 0.0 and thin.x[-1] == x[-1]
