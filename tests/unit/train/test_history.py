"""What a run recorded in memory (:class:`bbvi_kit.train.history.History`): empty by default, and
no two histories share their lists or mappings."""

from __future__ import annotations

from bbvi_kit.train.history import History


def test_a_new_history_is_empty_with_no_run_directory_and_no_warning() -> None:
    history = History()
    assert history.metrics == [] and history.evals == [] and history.diagnostics == {}
    assert history.run_dir is None and history.warning is None


def test_two_histories_never_share_their_rows() -> None:
    first, second = History(), History()
    first.metrics.append({"step": 1.0, "loss": 2.0})
    first.evals.append({"step": 1.0, "test_loss": 3.0})
    first.diagnostics["snr"] = [{"step": 1.0}]
    assert second.metrics == [] and second.evals == [] and second.diagnostics == {}


def test_a_history_keeps_the_rows_it_is_given() -> None:
    rows = [{"step": 1.0}, {"step": 2.0}]
    history = History(metrics=rows, run_dir="runs/x", warning="3 of 10 steps were skipped")
    assert history.metrics is rows
    assert (history.run_dir, history.warning) == ("runs/x", "3 of 10 steps were skipped")
