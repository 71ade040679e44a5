"""What a training pass changes besides the parameters (:mod:`bbvi_kit.pass_state`): the
score-function estimator's running-mean baseline and the modules' buffers (batch-norm statistics)
are saved, put back, or kept only where a 0-d flag says the pass counts."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from bbvi_kit.estimators.score import ScoreFunction
from bbvi_kit.pass_state import PassState


def trainer(running_mean: torch.Tensor | None = None) -> SimpleNamespace:
    """What PassState reads: ``loss.estimator`` and ``modules`` (a batch-norm layer with buffers)."""
    estimator = ScoreFunction(baseline="running_mean")
    estimator.load_state_dict({"running_mean": running_mean})
    norm = nn.BatchNorm1d(2)
    return SimpleNamespace(loss=SimpleNamespace(estimator=estimator), modules=[norm])


def a_pass(t: SimpleNamespace, baseline: torch.Tensor) -> None:
    """A train-mode pass: the batch-norm statistics move, and so does the baseline."""
    t.modules[0].train()
    t.modules[0](torch.tensor([[1.0, 10.0], [3.0, 30.0]]))
    t.loss.estimator.load_state_dict({"running_mean": baseline})


def test_restore_puts_the_baseline_and_every_buffer_back() -> None:
    t = trainer(torch.tensor(0.5))
    norm = t.modules[0]
    saved = PassState(t)
    a_pass(t, torch.tensor(9.0))
    assert norm.running_mean.tolist() == pytest.approx([0.2, 2.0])  # momentum 0.1 towards the batch mean [2, 20]
    assert int(norm.num_batches_tracked) == 1
    saved.restore()
    assert norm.running_mean.tolist() == [0.0, 0.0] and norm.running_var.tolist() == [1.0, 1.0]
    assert int(norm.num_batches_tracked) == 0
    assert t.loss.estimator.state_dict()["running_mean"].item() == 0.5


def test_the_saved_copy_is_reusable_and_not_the_live_state() -> None:
    t = trainer(torch.tensor(0.5))
    saved = PassState(t)
    for baseline in (3.0, 4.0):
        a_pass(t, torch.tensor(baseline))
        saved.restore()
        assert t.loss.estimator.state_dict()["running_mean"].item() == 0.5
        assert t.modules[0].running_mean.tolist() == [0.0, 0.0]
    t.loss.estimator.state_dict()["running_mean"].add_(1.0)  # a change in place after a restore ...
    assert saved.estimator_state["running_mean"].item() == 0.5  # ... does not reach the saved copy


def test_the_buffers_are_restored_in_place() -> None:
    t = trainer()
    buffer = t.modules[0].running_mean
    saved = PassState(t)
    a_pass(t, torch.tensor(1.0))
    saved.restore()
    assert t.modules[0].running_mean is buffer


def test_keep_if_true_keeps_what_the_pass_left() -> None:
    t = trainer(torch.tensor(0.5))
    saved = PassState(t)
    a_pass(t, torch.tensor(9.0))
    saved.keep_if(torch.tensor(True))
    assert t.loss.estimator.state_dict()["running_mean"].item() == 9.0
    assert t.modules[0].running_mean.tolist() == pytest.approx([0.2, 2.0]) and int(t.modules[0].num_batches_tracked) == 1


def test_keep_if_false_puts_the_saved_state_back() -> None:
    t = trainer(torch.tensor(0.5))
    saved = PassState(t)
    a_pass(t, torch.tensor(9.0))
    saved.keep_if(torch.tensor(False))
    assert t.loss.estimator.state_dict()["running_mean"].item() == 0.5
    assert t.modules[0].running_mean.tolist() == [0.0, 0.0] and int(t.modules[0].num_batches_tracked) == 0


def test_keep_if_with_a_baseline_that_did_not_exist_before_the_pass() -> None:
    for keep, expected in ((True, 7.0), (False, None)):
        t = trainer(None)  # the first pass creates the baseline
        saved = PassState(t)
        a_pass(t, torch.tensor(7.0))
        saved.keep_if(torch.tensor(keep))
        baseline = t.loss.estimator.state_dict()["running_mean"]
        assert (None if baseline is None else baseline.item()) == expected


def test_a_trainer_without_modules_saves_the_estimator_only() -> None:
    t = trainer(torch.tensor(1.0))
    t.modules = []
    saved = PassState(t)
    t.loss.estimator.load_state_dict({"running_mean": torch.tensor(2.0)})
    saved.restore()
    assert t.loss.estimator.state_dict()["running_mean"].item() == 1.0
