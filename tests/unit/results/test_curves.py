"""What the figures draw of a group of runs (:mod:`bbvi_kit.results.curves`), on run directories
written by hand: the running-average band over seeds and its fitted C of C log n / √n, the
per-epoch mean (cut epochs, the authors' scale), the full-data band, the test curves and final
values over seeds of different lengths, and what ``say`` reports."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pytest

from bbvi_kit.errors import InputError
from bbvi_kit.results.curves import Final, group_curves, last_evaluation
from bbvi_kit.results.groups import Group
from bbvi_kit.results.run import Run, load_run


def csv(path: Path, columns: dict[str, Sequence[Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = zip(*columns.values())
    path.write_text(",".join(columns) + "\n" + "".join(",".join("" if v is None else repr(float(v)) for v in r) + "\n"
                                                      for r in rows))


def make_run(path: Path, seed: Any, metrics: dict[str, Sequence[Any]], evals: dict[str, Sequence[Any]] | None = None,
             full: dict[str, Sequence[Any]] | None = None, status: str = "completed", info: dict | None = None,
             recipe: str = "") -> Run:
    path.mkdir(parents=True)
    (path / "run.json").write_text(json.dumps({"status": status, "seed": seed, **(info or {})}))
    (path / "recipe.yaml").write_text(recipe)
    csv(path / "metrics.csv", metrics)
    if evals is not None:
        csv(path / "eval.csv", evals)
    if full is not None:
        csv(path / "diagnostics" / "full_gradient.csv", full)
    return load_run(path)


def group(*runs: Run) -> Group:
    return Group(label="g", runs=list(runs), key={}, point={}, settings={})


def epochs_of(steps: Sequence[int], ipe: int) -> list[int]:
    return [(s - 1) // ipe for s in steps]


def quiet(messages: list[str]) -> Any:
    return messages.append


def test_the_running_average_band_is_over_seeds_and_its_fit_gives_back_the_mean_constant(tmp_path: Path) -> None:
    n = np.arange(1, 201)
    shape = np.log(n) / np.sqrt(n)
    a = make_run(tmp_path / "a", 0, {"step": n, "minibatch_grad_norm_sq_avg": 2.0 * shape})
    b = make_run(tmp_path / "b", 1, {"step": n, "minibatch_grad_norm_sq_avg": 4.0 * shape})
    said: list[str] = []
    data = group_curves(group(a, b), quiet(said))
    assert data.avg is not None and data.avg.n == 2
    np.testing.assert_array_equal(data.avg.x, n)
    np.testing.assert_allclose(data.avg.mean, 3.0 * shape, rtol=1e-12)
    np.testing.assert_allclose(data.avg.lo, 2.0 * shape, rtol=1e-12)
    np.testing.assert_allclose(data.avg.hi, 4.0 * shape, rtol=1e-12)
    assert data.c_avg == pytest.approx(3.0, rel=1e-9)
    np.testing.assert_array_equal(data.steps, n)
    assert data.per_epoch is None and data.c_epoch is None and data.full_avg is None
    assert data.ipe == 1  # no epoch column: one update per epoch
    assert said == ["group 'g': no test curve (no eval rows from seed 0 [completed], seed 1 [completed])"]


def test_the_slope_of_a_power_law_is_its_exponent(tmp_path: Path) -> None:
    n = np.arange(1, 101)
    run = make_run(tmp_path / "a", 0, {"step": n, "minibatch_grad_norm_sq_avg": 5.0 * n**-0.5})
    data = group_curves(group(run), quiet([]))
    assert data.slope_avg == pytest.approx(-0.5, abs=1e-9)


def test_without_the_running_average_in_every_seed_there_is_no_avg_band(tmp_path: Path) -> None:
    a = make_run(tmp_path / "a", 0, {"step": [1, 2, 3], "minibatch_grad_norm_sq_avg": [1, 2, 3]})
    b = make_run(tmp_path / "b", 1, {"step": [1, 2, 3], "loss": [1, 2, 3]})
    data = group_curves(group(a, b), quiet([]))
    assert data.avg is None and data.c_avg is None and data.slope_avg is None


def test_the_per_epoch_curve_is_each_epochs_mean_at_epochs_completed(tmp_path: Path) -> None:
    steps = list(range(1, 13))
    values = [1, 2, 3, 6, 2, 2, 2, 2, 0.5, 1.5, 1, 1]  # epoch means 3, 2, 1
    run = make_run(tmp_path / "a", 0, {"step": steps, "epoch": epochs_of(steps, 4), "minibatch_grad_norm_sq": values})
    data = group_curves(group(run), quiet([]))
    assert data.ipe == 4
    assert data.per_epoch is not None
    np.testing.assert_allclose(data.per_epoch.x, [1.0, 2.0, 3.0])
    np.testing.assert_allclose(data.per_epoch.mean, [3.0, 2.0, 1.0])
    # C over the second half of n = epochs * 4 = 4, 8, 12: the points n = 8 (y = 2) and n = 12 (y = 1), geometric mean
    expected = math.sqrt(2.0 / (math.log(8) / math.sqrt(8)) * 1.0 / (math.log(12) / math.sqrt(12)))
    assert data.c_epoch == pytest.approx(expected, rel=1e-12)


def test_an_epoch_cut_short_sits_at_its_fraction(tmp_path: Path) -> None:
    steps = list(range(1, 11))
    values = [1, 2, 3, 6, 2, 2, 2, 2, 0.5, 1.5]
    run = make_run(tmp_path / "a", 0, {"step": steps, "epoch": epochs_of(steps, 4), "minibatch_grad_norm_sq": values})
    data = group_curves(group(run), quiet([]))
    assert data.ipe == 4
    np.testing.assert_allclose(data.per_epoch.x, [1.0, 2.0, 2.5])  # type: ignore[union-attr]
    np.testing.assert_allclose(data.per_epoch.mean, [3.0, 2.0, 1.0])  # type: ignore[union-attr]


def test_seeds_of_different_lengths_use_their_common_iterations_and_say_so(tmp_path: Path) -> None:
    long, short = list(range(1, 13)), list(range(1, 9))
    a = make_run(tmp_path / "a", 0, {"step": long, "epoch": epochs_of(long, 4), "minibatch_grad_norm_sq": [1.0] * 12})
    b = make_run(tmp_path / "b", 1, {"step": short, "epoch": epochs_of(short, 4), "minibatch_grad_norm_sq": [3.0] * 8},
                 status="interrupted")
    said: list[str] = []
    data = group_curves(group(a, b), quiet(said))
    np.testing.assert_array_equal(data.steps, short)
    np.testing.assert_allclose(data.per_epoch.x, [1.0, 2.0])  # type: ignore[union-attr]
    np.testing.assert_allclose(data.per_epoch.mean, [2.0, 2.0])  # type: ignore[union-attr]
    np.testing.assert_allclose(data.per_epoch.lo, [1.0, 1.0])  # type: ignore[union-attr]
    np.testing.assert_allclose(data.per_epoch.hi, [3.0, 3.0])  # type: ignore[union-attr]
    assert said[0] == ("group 'g': curves use the 8 recorded iterations common to its 2 seeds "
                       "(seed 1 stops at n=8, status interrupted)")


def test_the_same_seed_twice_is_reported(tmp_path: Path) -> None:
    a = make_run(tmp_path / "a", 0, {"step": [1, 2]})
    b = make_run(tmp_path / "b", 0, {"step": [1, 2]})
    said: list[str] = []
    group_curves(group(a, b), quiet(said))
    assert "group 'g': the same seed appears more than once (0, 0)" in said


def test_the_paper_scale_is_the_authors_sum_of_squared_batch_gradients(tmp_path: Path) -> None:
    # N = 10 examples, batches 4, 4, 2 (3 updates an epoch), d = 5 parameters, ‖g_k‖² = 1:
    # (1 / (N d)) Σ_k ‖B_k g_k‖² = (16 + 16 + 4) / 50 = 0.72 each epoch
    steps = list(range(1, 7))
    run = make_run(tmp_path / "a", 0, {"step": steps, "epoch": epochs_of(steps, 3), "minibatch_grad_norm_sq": [1.0] * 6},
                   info={"num_train": 10, "num_parameters": 5}, recipe="training:\n  batch_size: 4\n")
    plain = group_curves(group(run), quiet([]))
    paper = group_curves(group(run), quiet([]), paper=True)
    assert paper.ipe == 3
    np.testing.assert_allclose(plain.per_epoch.mean, [1.0, 1.0])  # type: ignore[union-attr]
    np.testing.assert_allclose(paper.per_epoch.mean, [0.72, 0.72])  # type: ignore[union-attr]


def test_the_paper_scale_without_its_sizes_is_a_one_line_error_naming_the_run(tmp_path: Path) -> None:
    run = make_run(tmp_path / "a", 0, {"step": [1, 2], "epoch": [0, 0], "minibatch_grad_norm_sq": [1.0, 1.0]},
                   info={"num_train": 10})
    with pytest.raises(InputError) as info:
        group_curves(group(run), quiet([]), paper=True)
    message = str(info.value)
    assert message.startswith(str(tmp_path / "a")) and "num_parameters" in message and "batch_size" in message
    assert "\n" not in message


def test_the_full_data_band_of_one_seed_is_two_standard_errors_wide(tmp_path: Path) -> None:
    full = {"block_end": [10, 20], "full_grad_norm_sq_avg": [4.0, 2.0], "full_grad_norm_sq_avg_se": [0.5, 0.25]}
    run = make_run(tmp_path / "a", 0, {"step": [10, 20]}, full=full)
    band = group_curves(group(run), quiet([])).full_avg
    assert band is not None and band.n == 1
    np.testing.assert_array_equal(band.x, [10, 20])
    np.testing.assert_allclose(band.lo, [3.0, 1.5])
    np.testing.assert_allclose(band.hi, [5.0, 2.5])


def test_the_full_data_band_of_several_seeds_is_their_range_and_needs_every_seed(tmp_path: Path) -> None:
    def full(avg: list[float]) -> dict[str, list[float]]:
        return {"block_end": [10, 20], "full_grad_norm_sq_avg": avg, "full_grad_norm_sq_avg_se": [9.0, 9.0]}

    a = make_run(tmp_path / "a", 0, {"step": [10, 20]}, full=full([4.0, 2.0]))
    b = make_run(tmp_path / "b", 1, {"step": [10, 20]}, full=full([6.0, 1.0]))
    band = group_curves(group(a, b), quiet([])).full_avg
    assert band is not None
    np.testing.assert_allclose(band.mean, [5.0, 1.5])
    np.testing.assert_allclose(band.lo, [4.0, 1.0])
    np.testing.assert_allclose(band.hi, [6.0, 2.0])
    c = make_run(tmp_path / "c", 2, {"step": [10, 20]})
    assert group_curves(group(a, c), quiet([])).full_avg is None


def test_test_curves_use_common_evaluations_and_the_final_value_the_latest_one(tmp_path: Path) -> None:
    steps = list(range(1, 13))
    metrics = {"step": steps, "epoch": epochs_of(steps, 4)}
    a = make_run(tmp_path / "a", 0, metrics, evals={"step": [4, 8, 12], "epoch": [0, 1, 2], "test_loss": [10, 9, 8]})
    b = make_run(tmp_path / "b", 1, metrics, evals={"step": [4, 8], "epoch": [0, 1], "test_loss": [12, 11]})
    said: list[str] = []
    data = group_curves(group(a, b), quiet(said))
    band = data.evals["test_loss"]
    np.testing.assert_array_equal(band.x, [4, 8])
    np.testing.assert_allclose(band.mean, [11.0, 10.0])
    assert "test_objective_loss" not in data.evals
    np.testing.assert_allclose(data.eval_epochs, [1.0, 2.0])  # type: ignore[arg-type]
    final = data.finals["test_loss"]
    assert (final.step, final.values, final.seeds, final.left_out) == (12.0, [8.0], [0], [1])
    assert said == ["group 'g': test curves use the 2 evaluations common to its 2 seeds"]


def test_an_evaluation_inside_an_epoch_sits_at_its_fraction(tmp_path: Path) -> None:
    steps = list(range(1, 9))
    run = make_run(tmp_path / "a", 0, {"step": steps, "epoch": epochs_of(steps, 4)},
                   evals={"step": [2, 4, 6], "epoch": [0, 0, 1], "test_loss": [3, 2, 1]})
    data = group_curves(group(run), quiet([]))
    np.testing.assert_allclose(data.eval_epochs, [0.5, 1.0, 1.5])  # type: ignore[arg-type]


def test_a_seed_without_eval_rows_means_no_test_curve(tmp_path: Path) -> None:
    a = make_run(tmp_path / "a", 0, {"step": [1]}, evals={"step": [1], "test_loss": [1.0]})
    b = make_run(tmp_path / "b", 1, {"step": [1]}, status="failed")
    said: list[str] = []
    data = group_curves(group(a, b), quiet(said))
    assert data.evals == {} and data.finals == {} and data.eval_epochs is None
    assert said == ["group 'g': no test curve (no eval rows from seed 1 [failed])"]


def test_last_evaluation_skips_nan_and_leaves_out_seeds_that_did_not_reach_the_last_step(tmp_path: Path) -> None:
    a = make_run(tmp_path / "a", 0, {"step": [1]}, evals={"step": [5, 10], "test_loss": [3.0, 2.0]})
    b = make_run(tmp_path / "b", 1, {"step": [1]}, evals={"step": [5, 10], "test_loss": [4.0, 6.0]})
    c = make_run(tmp_path / "c", 2, {"step": [1]}, evals={"step": [5, 10], "test_loss": [1.0, None]})
    final = last_evaluation([a, b, c], "test_loss")
    assert final is not None
    assert (final.step, final.values, final.seeds, final.left_out) == (10.0, [2.0, 6.0], [0, 1], [2])
    assert final.stats() == {"step": 10.0, "mean": 4.0, "min": 2.0, "max": 6.0, "seeds": 2}


def test_last_evaluation_without_any_finite_value_is_none(tmp_path: Path) -> None:
    a = make_run(tmp_path / "a", 0, {"step": [1]}, evals={"step": [5], "test_loss": [None]})
    assert last_evaluation([a], "test_loss") is None
    assert last_evaluation([a], "missing_column") is None
    assert last_evaluation([], "test_loss") is None


def test_final_stats_are_mean_min_and_max() -> None:
    stats = Final(step=7.0, values=[1.0, 2.0, 6.0], seeds=[0, 1, 2], left_out=[]).stats()
    assert stats == {"step": 7.0, "mean": 3.0, "min": 1.0, "max": 6.0, "seeds": 3}
