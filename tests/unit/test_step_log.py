"""The per-step record of a training run (:mod:`bbvi_kit.step_log`): the metrics rows it gives back
at a flush (columns, the running average of ||g||^2 over the updates made, the skipped-step count),
the non-finite policy applied at once (``every_step``) or found at the flush (``at_flush``) with
the same one-line errors, its checkpoint state, and the warning for a run that skipped too much."""

from __future__ import annotations

import math

import pytest
import torch

from bbvi_kit.errors import TrainingError
from bbvi_kit.infer.bbvi import StepResult
from bbvi_kit.step_log import NonFiniteAtFlush, StepLog, skipped_steps_warning

CPU = torch.device("cpu")
GROUPS = ["phi", "theta"]


def result(loss: float, phi: float, theta: float, *, problem: str | None = None, finite: bool | None = None,
           lr: float = 0.01) -> StepResult:
    """A step whose gradient has squared norms ``phi`` and ``theta`` (total: their sum)."""
    norms = {"total": torch.tensor(phi + theta), "phi": torch.tensor(phi), "theta": torch.tensor(theta)}
    return StepResult(loss=torch.tensor(loss), norms=norms, lr=lr, problem=problem,
                      finite=None if finite is None else torch.tensor(finite))


def step(log: StepLog, n: int, res: StepResult, epoch: int = 0) -> None:
    """What the metrics callback does after step ``n``: count it, then queue its row."""
    log.add(n, epoch, res)
    log.record({"step": n, "epoch": epoch, "lr": res.lr, "time": 0.1 * n}, res)


def test_rows_hold_the_loss_the_norms_and_the_average_over_the_updates_so_far() -> None:
    log = StepLog(CPU, GROUPS, stop_on_nonfinite=True, max_skips=0)
    step(log, 1, result(5.0, 1.5, 0.5))  # ||g||^2 = 2
    step(log, 2, result(4.0, 3.0, 1.0))  # 4
    step(log, 3, result(3.0, 8.0, 1.0), epoch=1)  # 9
    rows = log.flush()
    assert [list(r) for r in rows] == [["step", "epoch", "loss", "minibatch_grad_norm_sq", "minibatch_grad_norm_sq_avg",
                                        "minibatch_grad_norm_sq_phi", "minibatch_grad_norm_sq_theta", "lr", "time"]] * 3
    assert [r["minibatch_grad_norm_sq_avg"] for r in rows] == [2.0, 3.0, 5.0]  # 2/1, 6/2, 15/3
    assert rows[2] == {"step": 3, "epoch": 1, "loss": 3.0, "minibatch_grad_norm_sq": 9.0, "minibatch_grad_norm_sq_avg": 5.0,
                       "minibatch_grad_norm_sq_phi": 8.0, "minibatch_grad_norm_sq_theta": 1.0, "lr": 0.01,
                       "time": pytest.approx(0.3)}


def test_a_flush_empties_the_queue() -> None:
    log = StepLog(CPU, GROUPS, stop_on_nonfinite=True, max_skips=0)
    assert log.flush() == []
    step(log, 1, result(1.0, 1.0, 1.0))
    assert len(log.flush()) == 1
    assert log.flush() == []


def test_the_average_is_nan_before_the_first_update() -> None:
    log = StepLog(CPU, GROUPS, stop_on_nonfinite=False, max_skips=5)
    res = result(1.0, 1.0, 1.0)
    log.record({"step": 0, "epoch": 0, "lr": 0.1, "time": 0.0}, res)
    (row,) = log.flush()
    assert math.isnan(row["minibatch_grad_norm_sq_avg"])


# -- every_step: the policy acts at once -------------------------------------------------------
def test_stop_raises_the_steps_problem_at_once() -> None:
    log = StepLog(CPU, GROUPS, stop_on_nonfinite=True, max_skips=100)
    with pytest.raises(TrainingError) as excinfo:
        log.add(4, 0, result(math.nan, 1.0, 1.0, problem="non-finite loss at step 4"))
    assert str(excinfo.value) == "non-finite loss at step 4"
    assert not isinstance(excinfo.value, NonFiniteAtFlush)


def test_skip_counts_skipped_steps_and_leaves_them_out_of_the_average() -> None:
    log = StepLog(CPU, GROUPS, stop_on_nonfinite=False, max_skips=1)
    step(log, 1, result(2.0, 1.0, 1.0))  # 2
    step(log, 2, result(math.nan, math.inf, 1.0, problem="bad step 2"))
    step(log, 3, result(1.0, 3.0, 1.0))  # 4
    rows = log.flush()
    assert [r["skipped_steps"] for r in rows] == [0, 1, 1]
    assert [r["minibatch_grad_norm_sq_avg"] for r in rows] == [2.0, 2.0, 3.0]
    assert list(rows[0])[-2:] == ["skipped_steps", "time"]
    assert log.state()["good_steps"] == 2 and log.state()["skipped_steps"] == 1


def test_skip_stops_once_more_steps_than_the_limit_were_skipped() -> None:
    log = StepLog(CPU, GROUPS, stop_on_nonfinite=False, max_skips=1)
    log.add(1, 0, result(math.nan, 1.0, 1.0, problem="bad step 1"))  # one skip is allowed
    with pytest.raises(TrainingError) as excinfo:
        log.add(2, 0, result(math.nan, 1.0, 1.0, problem="bad step 2"))
    assert str(excinfo.value) == "bad step 2; 2 steps skipped, more than training.max_nonfinite_skips=1"


# -- at_flush: the device knows, the flush finds out -------------------------------------------
def test_at_flush_stop_raises_the_first_bad_steps_error_with_the_rows_before_it() -> None:
    log = StepLog(CPU, GROUPS, stop_on_nonfinite=True, max_skips=0)
    step(log, 1, result(2.0, 1.0, 1.0, finite=True))
    step(log, 2, result(math.nan, math.inf, 1.0, finite=False), epoch=0)
    step(log, 3, result(1.0, 1.0, 1.0, finite=False))  # a later failure is not the one reported
    with pytest.raises(NonFiniteAtFlush) as excinfo:
        log.flush()
    assert isinstance(excinfo.value, TrainingError)
    assert str(excinfo.value) == "non-finite loss or gradient at step 2 (epoch 0): loss=nan, minibatch_grad_norm_sq=inf"
    assert [r["step"] for r in excinfo.value.rows] == [1]
    assert excinfo.value.rows[0]["loss"] == 2.0


def test_at_flush_skip_leaves_skipped_steps_out_of_the_average_and_counts_them() -> None:
    log = StepLog(CPU, GROUPS, stop_on_nonfinite=False, max_skips=1)
    step(log, 1, result(2.0, 1.0, 1.0, finite=True))  # 2
    step(log, 2, result(math.nan, math.inf, 1.0, finite=False))
    step(log, 3, result(1.0, 3.0, 1.0, finite=True))  # 4
    rows = log.flush()
    assert [r["skipped_steps"] for r in rows] == [0, 1, 1]
    assert [r["minibatch_grad_norm_sq_avg"] for r in rows] == [2.0, 2.0, 3.0]
    assert log.state()["grad_norm_sq_sum"].item() == 6.0


def test_at_flush_skip_over_the_limit_is_the_error_every_step_would_give_at_that_step() -> None:
    log = StepLog(CPU, GROUPS, stop_on_nonfinite=False, max_skips=1)
    step(log, 1, result(math.nan, 1.0, 1.0, finite=False))
    step(log, 2, result(1.0, 1.0, 1.0, finite=True))
    step(log, 3, result(math.inf, 2.0, 1.0, finite=False), epoch=2)
    step(log, 4, result(1.0, 1.0, 1.0, finite=True))
    with pytest.raises(NonFiniteAtFlush) as excinfo:
        log.flush()
    assert str(excinfo.value) == ("non-finite loss or gradient at step 3 (epoch 2): loss=inf, minibatch_grad_norm_sq=3; "
                                  "2 steps skipped, more than training.max_nonfinite_skips=1")
    assert [r["step"] for r in excinfo.value.rows] == [1, 2]


def test_an_error_found_at_flush_without_rows_has_an_empty_row_list() -> None:
    assert NonFiniteAtFlush("x").rows == []
    log = StepLog(CPU, GROUPS, stop_on_nonfinite=True, max_skips=0)
    log.add(1, 0, result(math.nan, 1.0, 1.0, finite=False))  # checked, no row queued
    with pytest.raises(NonFiniteAtFlush) as excinfo:
        log.flush()
    assert excinfo.value.rows == []


# -- checkpoint state --------------------------------------------------------------------------
def test_the_running_sums_go_on_from_a_saved_state() -> None:
    log = StepLog(CPU, GROUPS, stop_on_nonfinite=False, max_skips=10)
    step(log, 1, result(1.0, 1.0, 1.0))  # 2
    step(log, 2, result(1.0, 4.0, 0.0))  # 4
    step(log, 3, result(math.nan, 1.0, 1.0, problem="bad"))
    log.flush()
    state = log.state()
    assert state["good_steps"] == 2 and state["skipped_steps"] == 1 and type(state["good_steps"]) is int
    assert state["grad_norm_sq_sum"].item() == 6.0 and state["grad_norm_sq_sum"].device.type == "cpu"
    resumed = StepLog(CPU, GROUPS, stop_on_nonfinite=False, max_skips=10)
    resumed.load_state(state)
    step(resumed, 4, result(1.0, 6.0, 3.0))  # 9: (2 + 4 + 9) / 3
    (row,) = resumed.flush()
    assert row["minibatch_grad_norm_sq_avg"] == 5.0 and row["skipped_steps"] == 1


def test_a_new_log_starts_from_nothing() -> None:
    state = StepLog(CPU, [], stop_on_nonfinite=True, max_skips=0).state()
    assert state["grad_norm_sq_sum"].item() == 0.0 and state["good_steps"] == 0 and state["skipped_steps"] == 0


# -- skipped_steps_warning ---------------------------------------------------------------------
def test_a_run_that_skipped_more_than_the_fraction_is_warned_about() -> None:
    rows = [{"step": 5.0, "skipped_steps": 0.0}, {"step": 10.0, "skipped_steps": 3.0}]
    assert skipped_steps_warning(rows, 0.2) == (
        "3 of 10 steps (30%) were skipped as non-finite, more than training.warn_skipped_fraction=0.2: "
        "the results describe 7 updates")


@pytest.mark.parametrize("rows, fraction", [
    ([], 0.1),  # no rows
    ([{"step": 10.0, "loss": 1.0}], 0.0),  # on_nonfinite: stop has no skipped_steps column
    ([{"step": 0.0, "skipped_steps": 0.0}], 0.0),  # no steps
    ([{"step": 10.0, "skipped_steps": 2.0}], 0.2),  # exactly the fraction: not more
    ([{"step": 10.0, "skipped_steps": 10.0}, {"step": 20.0, "skipped_steps": 1.0}], 0.1),  # only the last row counts
])
def test_no_warning_at_or_below_the_fraction_or_without_the_column(rows: list[dict[str, float]], fraction: float) -> None:
    assert skipped_steps_warning(rows, fraction) is None
