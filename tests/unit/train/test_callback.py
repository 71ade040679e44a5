"""The training loop's hooks (:mod:`bbvi_kit.train.callback`): a :class:`Callback`'s hooks do
nothing by default, and :class:`LoopState` says where the loop is (epoch end, last step, elapsed
time), flushes callbacks in order and joins their states into a checkpoint's ``loop`` entry."""

from __future__ import annotations

import time
from typing import Any, Mapping

import pytest
import torch

from bbvi_kit.infer.bbvi import StepResult
from bbvi_kit.train import callback as callback_module
from bbvi_kit.train.callback import Callback, LoopState


class Recorder(Callback):
    def __init__(self, name: str, calls: list[str], state: dict[str, Any] | None = None) -> None:
        self.name, self.calls, self.state = name, calls, state or {}

    def flush(self, loop: LoopState) -> None:
        self.calls.append(self.name)

    def state_dict(self) -> dict[str, Any]:
        return dict(self.state)


def test_every_hook_of_a_plain_callback_does_nothing() -> None:
    cb, loop = Callback(), LoopState(total=4, per_epoch=2)
    result = StepResult(loss=torch.tensor(1.0), norms={"total": torch.tensor(2.0)}, lr=0.1)
    assert cb.on_fit_start(loop) is None and cb.on_step(loop, result) is None and cb.flush(loop) is None
    assert cb.on_interrupt(loop) is None
    assert cb.on_error(loop, RuntimeError("x")) is None
    assert cb.close(loop) is None
    assert cb.state_dict() == {}
    empty: Mapping[str, Any] = {}
    assert cb.load_state_dict(empty) is None


@pytest.mark.parametrize("batch_index, expected", [(0, False), (2, False), (3, True)])
def test_epoch_end_is_the_epochs_last_batch(batch_index: int, expected: bool) -> None:
    assert LoopState(total=9, per_epoch=3, batch_index=batch_index).epoch_end is expected


@pytest.mark.parametrize("step, expected", [(0, False), (8, False), (9, True)])
def test_last_is_the_runs_last_step(step: int, expected: bool) -> None:
    assert LoopState(total=9, per_epoch=3, step=step).last is expected


def test_elapsed_counts_from_the_given_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(callback_module.time, "perf_counter", lambda: 1000.0)
    assert LoopState(total=1, per_epoch=1, start=990.5).elapsed() == 9.5


def test_each_loop_starts_its_own_clock() -> None:
    before = time.perf_counter()
    loop = LoopState(total=1, per_epoch=1)
    assert before <= loop.start <= time.perf_counter()
    assert 0.0 <= loop.elapsed() < 60.0


def test_flush_asks_every_callback_in_the_order_given() -> None:
    calls: list[str] = []
    loop = LoopState(total=1, per_epoch=1, callbacks=[Recorder("metrics", calls), Recorder("eval", calls),
                                                       Recorder("checkpoint", calls)])
    loop.flush()
    assert calls == ["metrics", "eval", "checkpoint"]


def test_the_loop_state_joins_its_position_with_every_callbacks_state(monkeypatch: pytest.MonkeyPatch) -> None:
    generator = torch.Generator().manual_seed(3).get_state()
    loop = LoopState(total=10, per_epoch=5, step=7, epoch=1, batch_index=2, epoch_generator=generator, start=100.0,
                     callbacks=[Recorder("a", [], {"metrics_sum": 1.5}), Recorder("b", [], {"eval_count": 2})])
    monkeypatch.setattr(callback_module.time, "perf_counter", lambda: 112.0)
    state = loop.state_dict()
    assert set(state) == {"epoch", "batch_index", "epoch_generator", "metrics_sum", "eval_count", "elapsed"}
    assert (state["epoch"], state["batch_index"], state["elapsed"]) == (1, 2, 12.0)
    assert state["metrics_sum"] == 1.5 and state["eval_count"] == 2
    assert torch.equal(state["epoch_generator"], generator)
