"""The rate fit of a column of a run directory's ``metrics.csv`` (:mod:`bbvi_kit.results.run_rate`),
on files written by hand: an exact power law gives back its exponent, an exact C log n / √n its
constant, the tail and level are passed on, the running average is fitted as one, and a missing
file or column is a one-line error naming it."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from bbvi_kit.errors import InputError
from bbvi_kit.results.run_rate import rate_from_run


def write_metrics(run_dir: Path, columns: dict[str, np.ndarray]) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    rows = zip(*columns.values())
    (run_dir / "metrics.csv").write_text(",".join(columns) + "\n" + "".join(",".join(repr(float(v)) for v in r) + "\n"
                                                                          for r in rows))
    return run_dir


N = np.arange(1, 201, dtype=float)


def test_an_exact_power_law_gives_back_its_exponent_and_intercept(tmp_path: Path) -> None:
    run = write_metrics(tmp_path / "r", {"step": N, "minibatch_grad_norm_sq": 7.0 * N**-0.3})
    fit = rate_from_run(run)
    assert fit.slope == pytest.approx(-0.3, abs=1e-9)
    assert fit.intercept == pytest.approx(math.log(7.0), abs=1e-9)
    assert (fit.n_start, fit.n_end, fit.num_points) == (100.0, 200.0, 101)  # n >= max(3, 200 / 2)
    assert not fit.running_average and fit.quantity == "the mini-batch ‖g‖²"


def test_an_exact_reference_curve_gives_back_its_constant(tmp_path: Path) -> None:
    run = write_metrics(tmp_path / "r", {"step": N, "minibatch_grad_norm_sq": 2.5 * np.log(N) / np.sqrt(N)})
    assert rate_from_run(run).reference_constant == pytest.approx(2.5, rel=1e-12)


def test_the_tail_sets_the_window_and_a_path_may_be_text(tmp_path: Path) -> None:
    run = write_metrics(tmp_path / "r", {"step": N, "minibatch_grad_norm_sq": N**-0.5})
    fit = rate_from_run(str(run), tail=0.9)
    assert (fit.n_start, fit.n_end, fit.num_points, fit.tail) == (20.0, 200.0, 181, 0.9)
    assert rate_from_run(run, tail=1.0).n_start == 3.0  # never below n = 3


def test_the_level_sets_the_width_of_the_interval(tmp_path: Path) -> None:
    wobble = np.exp(0.2 * np.sin(1.7 * N))  # deterministic noise around n^-1/2
    run = write_metrics(tmp_path / "r", {"step": N, "minibatch_grad_norm_sq": N**-0.5 * wobble})
    narrow, wide = rate_from_run(run, level=0.5), rate_from_run(run, level=0.99)
    assert (narrow.level, wide.level) == (0.5, 0.99)
    assert narrow.slope == wide.slope
    assert wide.ci_low < narrow.ci_low < narrow.slope < narrow.ci_high < wide.ci_high
    assert wide.ci_low < -0.5 < wide.ci_high


def test_another_column_is_fitted_directly_and_named_by_itself(tmp_path: Path) -> None:
    run = write_metrics(tmp_path / "r", {"step": N, "loss": 3.0 * N**-1.0})
    fit = rate_from_run(run, column="loss")
    assert fit.slope == pytest.approx(-1.0, abs=1e-9) and fit.quantity == "loss" and not fit.running_average


def test_the_running_average_is_fitted_as_one(tmp_path: Path) -> None:
    g = N**-0.5
    avg = np.cumsum(g) / N
    run = write_metrics(tmp_path / "r", {"step": N, "minibatch_grad_norm_sq": g, "minibatch_grad_norm_sq_avg": avg})
    fit = rate_from_run(run, column="minibatch_grad_norm_sq_avg")
    assert fit.running_average and fit.quantity == "the running average of the mini-batch ‖g‖²"
    # ȳ(n) = (1/n) Σ k^-1/2 ≈ 2 n^-1/2 + ζ(1/2) / n with ζ(1/2) ≈ -1.46: a slope a little above -1/2
    window = N >= 100
    assert fit.slope == pytest.approx(np.polyfit(np.log(N[window]), np.log(avg[window]), 1)[0], abs=1e-9)
    assert -0.48 < fit.slope < -0.46


def test_a_running_average_with_unrecorded_steps_is_refused_when_not_increasing(tmp_path: Path) -> None:
    steps = np.array([1.0, 2.0, 2.0] + list(range(3, 50)))
    run = write_metrics(tmp_path / "r", {"step": steps, "minibatch_grad_norm_sq_avg": np.ones(steps.size)})
    with pytest.raises(InputError, match="strictly increasing integer steps"):
        rate_from_run(run, column="minibatch_grad_norm_sq_avg")


def test_no_metrics_file_is_a_one_line_error_naming_the_run(tmp_path: Path) -> None:
    with pytest.raises(InputError) as info:
        rate_from_run(tmp_path / "nowhere")
    assert str(info.value) == f"no metrics.csv in {tmp_path / 'nowhere'}"


@pytest.mark.parametrize(("text", "column"), [
    ("step,loss\n1,2\n", "minibatch_grad_norm_sq"),
    ("loss,minibatch_grad_norm_sq\n1,2\n", "minibatch_grad_norm_sq"),
    ("step,minibatch_grad_norm_sq\n", "minibatch_grad_norm_sq"),
    ("step,loss\n1,2\n", "grad_var"),
], ids=["no-column", "no-step", "no-rows", "other-column"])
def test_a_missing_column_or_no_rows_is_an_error_naming_the_file_and_column(tmp_path: Path, text: str, column: str) -> None:
    (tmp_path / "metrics.csv").write_text(text)
    with pytest.raises(InputError) as info:
        rate_from_run(tmp_path, column=column)
    assert str(info.value) == f"{tmp_path / 'metrics.csv'} has no rows with columns step and {column}"


def test_too_few_points_to_fit_is_an_error(tmp_path: Path) -> None:
    run = write_metrics(tmp_path / "r", {"step": np.array([1.0, 2.0, 3.0, 4.0]), "minibatch_grad_norm_sq": np.ones(4)})
    with pytest.raises(InputError, match="too few points to fit a rate"):
        rate_from_run(run)
