"""The progress bar callback (:mod:`bbvi_kit.train.callbacks.progress`): a tqdm bar over the
run's steps starting where a resumed run stands, its postfix the loss of the metrics log's last
row (4 significant digits, set only when the row changes), shown or not, and closed at the end."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch

from bbvi_kit.infer.bbvi import StepResult
from bbvi_kit.train.callback import LoopState
from bbvi_kit.train.callbacks.progress import ProgressBar

RESULT = StepResult(loss=torch.tensor(1.0), norms={"total": torch.tensor(1.0)}, lr=0.1)


def metrics(row: dict[str, float] | None = None) -> Any:
    return SimpleNamespace(last_row=row)


def test_the_bar_counts_steps_from_where_the_run_stands(capsys: pytest.CaptureFixture[str]) -> None:
    bar = ProgressBar(metrics(), enabled=True)
    loop = LoopState(total=10, per_epoch=5, step=4)
    bar.on_fit_start(loop)
    assert (bar.bar.total, bar.bar.n) == (10, 4)
    for _ in range(3):
        bar.on_step(loop, RESULT)
    assert bar.bar.n == 7
    bar.close(loop)
    assert "7/10" in capsys.readouterr().err


def test_the_postfix_is_the_last_rows_loss_to_four_significant_digits(capsys: pytest.CaptureFixture[str]) -> None:
    log = metrics({"loss": 123.456789})
    bar = ProgressBar(log)
    loop = LoopState(total=3, per_epoch=3)
    bar.on_fit_start(loop)
    bar.on_step(loop, RESULT)
    assert bar.bar.postfix == "loss=123.5"
    log.last_row = {"loss": 0.000123456}
    bar.close(loop)
    assert bar.bar.postfix == "loss=0.0001235"
    assert "loss=0.0001235" in capsys.readouterr().err


def test_no_postfix_before_the_first_row(capsys: pytest.CaptureFixture[str]) -> None:
    bar = ProgressBar(metrics())
    loop = LoopState(total=2, per_epoch=2)
    bar.on_fit_start(loop)
    bar.on_step(loop, RESULT)
    bar.close(loop)
    assert not bar.bar.postfix
    assert "loss=" not in capsys.readouterr().err


def test_the_postfix_is_set_only_when_a_new_row_arrives() -> None:
    log = metrics({"loss": 1.0})
    bar = ProgressBar(log, enabled=False)
    loop = LoopState(total=5, per_epoch=5)
    bar.on_fit_start(loop)
    calls: list[dict[str, Any]] = []
    original = bar.bar.set_postfix
    bar.bar.set_postfix = lambda **kw: (calls.append(kw), original(**kw))
    bar.on_step(loop, RESULT)
    bar.on_step(loop, RESULT)
    log.last_row = {"loss": 1.0}  # an equal but new row
    bar.on_step(loop, RESULT)
    assert calls == [{"loss": "1", "refresh": False}, {"loss": "1", "refresh": False}]


def test_a_disabled_bar_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    bar = ProgressBar(metrics({"loss": 2.0}), enabled=False)
    loop = LoopState(total=2, per_epoch=2)
    bar.on_fit_start(loop)
    bar.on_step(loop, RESULT)
    bar.close(loop)
    assert bar.bar.disable is True
    assert capsys.readouterr().err == ""


def test_closing_before_the_fit_started_does_nothing() -> None:
    bar = ProgressBar(metrics({"loss": 2.0}))
    bar.close(LoopState(total=1, per_epoch=1))
    assert bar.bar is None
