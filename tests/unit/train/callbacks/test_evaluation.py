"""The evaluation callback (:mod:`bbvi_kit.train.callbacks.evaluation`): when it evaluates
(``eval_every`` steps, else each epoch's end, and the last step; never twice at one step; never
without a test set), with which seed and split, the reference gap columns, rows in
``History.evals`` and ``eval.csv`` after a flush, the ``evaluated_now`` flag, and its state."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import TensorDataset

from bbvi_kit.config import TrainingOptions
from bbvi_kit.infer.bbvi import StepResult
from bbvi_kit.runs import RunDirectory
from bbvi_kit.train.callback import Callback, LoopState
from bbvi_kit.train.callbacks.evaluation import Evaluation
from bbvi_kit.train.history import History

RESULT = StepResult(loss=torch.tensor(1.0), norms={"total": torch.tensor(1.0)}, lr=0.1)
TRAIN = TensorDataset(torch.zeros(4, 1))
TEST = TensorDataset(torch.ones(2, 1))


class Evaluator:
    """Records each call; the test set's loss is 10 + step-seed, the train set's 20 + seed."""

    def __init__(self, events: list[Any]) -> None:
        self.events = events

    def __call__(self, dataset: TensorDataset, seed: int, split: str = "test") -> dict[str, float]:
        self.events.append(("evaluate", "test" if dataset is TEST else "train", seed, split))
        base = 10.0 if split == "test" else 20.0
        return {f"{split}_loss": base + seed, f"{split}_objective_loss": base + seed + 0.5}


class Flushes(Callback):
    def __init__(self, events: list[Any]) -> None:
        self.events = events

    def flush(self, loop: LoopState) -> None:
        self.events.append("flush")


def drive(evaluation: Evaluation, total: int, per_epoch: int, events: list[Any] | None = None) -> list[int]:
    loop = LoopState(total=total, per_epoch=per_epoch, callbacks=[Flushes(events if events is not None else [])])
    for _ in range(total):
        loop.step += 1
        loop.batch_index = loop.batch_index % per_epoch + 1
        evaluation.on_step(loop, RESULT)
    return [int(row["step"]) for row in evaluation.history.evals]


def test_by_default_it_evaluates_at_each_epochs_end_and_the_last_step() -> None:
    evaluation = Evaluation(Evaluator([]), TRAIN, TEST, TrainingOptions(), History(), None)
    assert drive(evaluation, total=7, per_epoch=3) == [3, 6, 7]


def test_with_eval_every_it_evaluates_every_that_many_steps_and_the_last() -> None:
    evaluation = Evaluation(Evaluator([]), TRAIN, TEST, TrainingOptions(eval_every=2), History(), None)
    assert drive(evaluation, total=5, per_epoch=5) == [2, 4, 5]


def test_it_flushes_first_and_seeds_with_the_run_seed_plus_the_step() -> None:
    events: list[Any] = []
    evaluation = Evaluation(Evaluator(events), TRAIN, TEST, TrainingOptions(seed=100, eval_every=2), History(), None)
    drive(evaluation, total=2, per_epoch=2, events=events)
    assert events == ["flush", ("evaluate", "test", 102, "test")]
    row = evaluation.history.evals[0]
    assert (row["step"], row["epoch"], row["test_loss"], row["test_objective_loss"]) == (2, 0, 112.0, 112.5)
    assert list(row) == ["step", "epoch", "test_loss", "test_objective_loss", "time"]


def test_with_eval_train_the_training_set_is_evaluated_too_with_the_same_seed() -> None:
    events: list[Any] = []
    evaluation = Evaluation(Evaluator(events), TRAIN, TEST, TrainingOptions(seed=1, eval_train=True), History(), None)
    drive(evaluation, total=1, per_epoch=1, events=events)
    assert events[1:] == [("evaluate", "test", 2, "test"), ("evaluate", "train", 2, "train")]
    row = evaluation.history.evals[0]
    assert (row["test_loss"], row["train_loss"], row["train_objective_loss"]) == (12.0, 22.0, 22.5)


def test_a_reference_value_adds_a_gap_column_for_the_columns_present() -> None:
    reference = {"test_loss": 11.5, "missing_column": 0.0}
    evaluation = Evaluation(Evaluator([]), TRAIN, TEST, TrainingOptions(), History(), None, reference=reference)
    drive(evaluation, total=1, per_epoch=1)
    row = evaluation.history.evals[0]
    assert row["test_loss_gap"] == 11.0 - 11.5  # test_loss 10 + seed (0 + step 1)
    assert "missing_column_gap" not in row
    assert list(row)[-2:] == ["test_loss_gap", "time"]


def test_without_a_test_set_nothing_is_evaluated() -> None:
    events: list[Any] = []
    evaluation = Evaluation(Evaluator(events), TRAIN, None, TrainingOptions(eval_every=1), History(), None)
    assert drive(evaluation, total=3, per_epoch=3, events=events) == []
    assert events == [] and evaluation.evaluated_now is False and evaluation.last_eval_step == -1


def test_rows_are_written_to_eval_csv(run: RunDirectory) -> None:
    evaluation = Evaluation(Evaluator([]), TRAIN, TEST, TrainingOptions(eval_every=1), History(), run)
    drive(evaluation, total=2, per_epoch=2)
    lines = (run.path / "eval.csv").read_text().splitlines()
    assert lines[0] == "step,epoch,test_loss,test_objective_loss,time"
    assert [line.split(",")[:4] for line in lines[1:]] == [["1", "0", "11.0", "11.5"], ["2", "0", "12.0", "12.5"]]


def test_evaluated_now_says_whether_the_step_just_taken_was_evaluated() -> None:
    evaluation = Evaluation(Evaluator([]), TRAIN, TEST, TrainingOptions(eval_every=2), History(), None)
    loop = LoopState(total=4, per_epoch=4)
    flags = []
    for _ in range(3):
        loop.step += 1
        loop.batch_index += 1
        evaluation.on_step(loop, RESULT)
        flags.append(evaluation.evaluated_now)
    assert flags == [False, True, False]


def test_a_step_already_evaluated_before_a_resume_is_not_evaluated_again() -> None:
    events: list[Any] = []
    first = Evaluation(Evaluator([]), TRAIN, TEST, TrainingOptions(eval_every=2), History(), None)
    drive(first, total=2, per_epoch=2)
    state = first.state_dict()
    assert state == {"last_eval_step": 2}

    resumed = Evaluation(Evaluator(events), TRAIN, TEST, TrainingOptions(eval_every=2), History(), None)
    resumed.load_state_dict({"last_eval_step": "2", "other_callbacks_key": 1.0})
    assert resumed.last_eval_step == 2
    loop = LoopState(total=2, per_epoch=2, step=2, batch_index=2)
    resumed.on_step(loop, RESULT)
    assert events == [] and resumed.history.evals == [] and resumed.evaluated_now is False
