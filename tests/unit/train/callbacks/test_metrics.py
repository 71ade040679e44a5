"""The metrics log callback (:mod:`bbvi_kit.train.callbacks.metrics`): which steps get a row
(``record_every`` and the last step), when rows reach ``History.metrics`` and ``metrics.csv``
(``flush_every`` and explicit flushes), the non-finite policy at a step and at a flush, the
first step's ``examples`` in ``run.json``, and its checkpoint state. A stand-in BBVI object
gives the device, the parameter groups and the loss's ``examples``."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from bbvi_kit.config import TrainingOptions
from bbvi_kit.errors import TrainingError
from bbvi_kit.infer.bbvi import StepResult
from bbvi_kit.runs import RunDirectory
from bbvi_kit.step_log import NonFiniteAtFlush
from bbvi_kit.train.callback import LoopState
from bbvi_kit.train.callbacks.metrics import MetricsLog
from bbvi_kit.train.history import History


class Examples:
    def as_dict(self) -> dict[str, Any]:
        return {"plate": "data", "count": 8}


def fake_bbvi(groups: tuple[str, ...] = ("model", "guide"), examples: Any = None) -> Any:
    return SimpleNamespace(device=torch.device("cpu"), groups=list(groups), loss=SimpleNamespace(examples=examples))


def result(loss: float, total: float = 4.0, lr: float = 0.1, problem: str | None = None, finite: bool | None = None) -> StepResult:
    norms = {"total": torch.tensor(total), "model": torch.tensor(total / 4), "guide": torch.tensor(3 * total / 4)}
    return StepResult(loss=torch.tensor(loss), norms=norms, lr=lr, problem=problem,
                      finite=None if finite is None else torch.tensor(finite))


def step(log: MetricsLog, loop: LoopState, res: StepResult) -> None:
    loop.step += 1
    log.on_step(loop, res)


def test_rows_every_record_every_steps_and_the_last_reach_history_and_disk_at_flush(run: RunDirectory) -> None:
    history = History()
    log = MetricsLog(fake_bbvi(), TrainingOptions(record_every=2, flush_every=4), history, run)
    loop = LoopState(total=5, per_epoch=5, callbacks=[log])
    log.on_fit_start(loop)
    for loss in (1.0, 2.0, 3.0):
        step(log, loop, result(loss))
    assert history.metrics == [] and not (run.path / "metrics.csv").exists()  # step 2 recorded, not flushed
    step(log, loop, result(4.0))  # step 4: flush_every
    assert [row["step"] for row in history.metrics] == [2, 4]
    step(log, loop, result(5.0, lr=0.05))  # the last step: recorded, flushed at the end
    log.flush(loop)
    assert [row["step"] for row in history.metrics] == [2, 4, 5]
    last = history.metrics[-1]
    assert (last["loss"], last["lr"], last["minibatch_grad_norm_sq"]) == (5.0, 0.05, 4.0)
    assert (last["minibatch_grad_norm_sq_model"], last["minibatch_grad_norm_sq_guide"]) == (1.0, 3.0)
    assert last["minibatch_grad_norm_sq_avg"] == 4.0
    assert log.last_row is last
    lines = (run.path / "metrics.csv").read_text().splitlines()
    assert lines[0] == ("step,epoch,loss,minibatch_grad_norm_sq,minibatch_grad_norm_sq_avg,"
                        "minibatch_grad_norm_sq_model,minibatch_grad_norm_sq_guide,lr,time")
    assert [line.split(",")[:3] for line in lines[1:]] == [["2", "0", "2.0"], ["4", "0", "4.0"], ["5", "0", "5.0"]]


def test_without_a_run_directory_rows_go_to_history_only(tmp_path: Path) -> None:
    history = History()
    log = MetricsLog(fake_bbvi(), TrainingOptions(flush_every=1), history, None)
    loop = LoopState(total=2, per_epoch=2)
    step(log, loop, result(0.5))
    assert [row["loss"] for row in history.metrics] == [0.5]
    assert list(tmp_path.iterdir()) == []


def test_a_flush_with_nothing_recorded_writes_nothing(run: RunDirectory) -> None:
    log = MetricsLog(fake_bbvi(), TrainingOptions(), History(), run)
    log.flush(LoopState(total=1, per_epoch=1))
    assert log.last_row is None and not (run.path / "metrics.csv").exists()


def test_the_first_step_writes_the_examples_into_run_json_once(run: RunDirectory) -> None:
    log = MetricsLog(fake_bbvi(examples=Examples()), TrainingOptions(), History(), run)
    loop = LoopState(total=3, per_epoch=3)
    step(log, loop, result(1.0))
    assert json.loads((run.path / "run.json").read_text()) == {"examples": {"plate": "data", "count": 8}}
    (run.path / "run.json").unlink()
    step(log, loop, result(1.0))
    assert not (run.path / "run.json").exists()


def test_a_rank_that_does_not_write_info_leaves_run_json_alone(run: RunDirectory) -> None:
    log = MetricsLog(fake_bbvi(examples=Examples()), TrainingOptions(), History(), run, writes_info=False)
    step(log, LoopState(total=1, per_epoch=1), result(1.0))
    assert not (run.path / "run.json").exists()


def test_under_stop_a_step_with_a_problem_raises_its_message() -> None:
    log = MetricsLog(fake_bbvi(), TrainingOptions(on_nonfinite="stop"), History(), None)
    with pytest.raises(TrainingError, match=r"^non-finite loss at step 1$"):
        step(log, LoopState(total=3, per_epoch=3), result(float("nan"), problem="non-finite loss at step 1"))


def test_under_skip_skipped_steps_are_counted_in_a_column_and_the_average_leaves_them_out() -> None:
    history = History()
    log = MetricsLog(fake_bbvi(), TrainingOptions(on_nonfinite="skip", flush_every=10), history, None)
    loop = LoopState(total=3, per_epoch=3)
    step(log, loop, result(1.0, total=2.0))
    step(log, loop, result(float("nan"), total=float("nan"), problem="bad step"))
    step(log, loop, result(1.0, total=6.0))
    log.flush(loop)
    assert [row["skipped_steps"] for row in history.metrics] == [0, 1, 1]
    assert history.metrics[-1]["minibatch_grad_norm_sq_avg"] == 4.0  # (2 + 6) / 2 updates made
    assert log.state_dict()["good_steps"] == 2 and log.state_dict()["skipped_steps"] == 1


def test_under_skip_more_skips_than_allowed_stops_naming_the_limit() -> None:
    log = MetricsLog(fake_bbvi(), TrainingOptions(on_nonfinite="skip", max_nonfinite_skips=1), History(), None)
    loop = LoopState(total=5, per_epoch=5)
    step(log, loop, result(float("nan"), problem="bad step"))
    with pytest.raises(TrainingError, match=r"^bad step; 2 steps skipped, more than training.max_nonfinite_skips=1$"):
        step(log, loop, result(float("nan"), problem="bad step"))


def test_a_non_finite_step_found_at_flush_writes_the_rows_before_it_then_raises(run: RunDirectory) -> None:
    history = History()
    log = MetricsLog(fake_bbvi(), TrainingOptions(on_nonfinite="stop", flush_every=100), history, run)
    loop = LoopState(total=4, per_epoch=4)
    step(log, loop, result(1.0, finite=True))
    step(log, loop, result(2.0, finite=True))
    step(log, loop, result(float("inf"), finite=False))
    with pytest.raises(NonFiniteAtFlush, match=r"^non-finite loss or gradient at step 3 \(epoch 0\): loss=inf"):
        log.flush(loop)
    assert [row["step"] for row in history.metrics] == [1, 2]
    assert log.last_row == history.metrics[-1]
    assert len((run.path / "metrics.csv").read_text().splitlines()) == 3  # header + steps 1, 2


def test_the_checkpoint_state_round_trips_into_a_fresh_log() -> None:
    options = TrainingOptions(flush_every=100)
    log = MetricsLog(fake_bbvi(), options, History(), None)
    loop = LoopState(total=3, per_epoch=3)
    step(log, loop, result(1.0, total=3.0))
    step(log, loop, result(1.0, total=5.0))
    state = log.state_dict()
    assert (state["grad_norm_sq_sum"].item(), state["good_steps"], state["skipped_steps"]) == (8.0, 2, 0)

    history = History()
    resumed = MetricsLog(fake_bbvi(), options, history, None)
    resumed.load_state_dict(state)
    step(resumed, loop, result(1.0, total=11.0))
    resumed.flush(loop)
    assert history.metrics[-1]["minibatch_grad_norm_sq_avg"] == pytest.approx((3.0 + 5.0 + 11.0) / 3)


def test_fit_start_takes_the_groups_the_bbvi_has_now() -> None:
    bbvi = fake_bbvi(groups=())
    history = History()
    log = MetricsLog(bbvi, TrainingOptions(flush_every=1), history, None)
    bbvi.groups = ["guide"]
    log.on_fit_start(LoopState(total=1, per_epoch=1))
    step(log, LoopState(total=1, per_epoch=1), result(1.0, total=8.0))
    assert history.metrics[0]["minibatch_grad_norm_sq_guide"] == 6.0
    assert "minibatch_grad_norm_sq_model" not in history.metrics[0]
