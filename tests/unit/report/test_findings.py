"""The findings about one run (:mod:`bbvi_kit.report.findings`), on tables and run directories
written by hand: the status sentences, the columns with values that are not finite (strictly for
``metrics.csv``, after a first finite value for a diagnostic), the test loss and its rise above
the lowest value (the 1% rule), a diagnostic's trend, and the whole list for a run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import bbvi_kit  # noqa: F401  (registers the built-in plugins)
from bbvi_kit.findings import Finding
from bbvi_kit.report.findings import (
    convergence_findings,
    diagnostic_class,
    diagnostic_findings,
    headline,
    nonfinite_findings,
    run_findings,
    status_findings,
)
from bbvi_kit.report.findings import test_findings as evaluation_findings  # not collected as a test
from bbvi_kit.results.run import Run, load_run
from bbvi_kit.results.table import Table

nan, inf = math.nan, math.inf
PROBE = "my_probe"  # a diagnostic no plugin registers


def table(**columns: list[float]) -> Table:
    return Table({k: np.array(v, dtype=float) for k, v in columns.items()})


def run(info: dict, metrics: Table | None = None) -> Run:
    return Run(path=Path("/runs/r"), recipe={}, info=info, metrics=metrics or Table(), evals=Table())


def test_a_completed_run_says_nothing_unless_it_has_a_warning() -> None:
    assert status_findings(run({"status": "completed"}), "A") == []
    (f,) = status_findings(run({"status": "completed", "warning": "low memory\n  at line 3"}), "A")
    assert f == Finding("run A completed with a warning: low memory", "warning", "status")


def test_a_failed_run_states_its_step_and_the_first_line_of_its_error() -> None:
    (f,) = status_findings(run({"status": "failed", "steps_done": 7, "error": "\nValueError: boom\n trace"}), "A")
    assert f == Finding("run A failed after step 7: ValueError: boom", "problem", "status", {"step": 7.0})


def test_a_failed_run_without_steps_done_takes_its_last_recorded_step() -> None:
    (f,) = status_findings(run({"status": "failed"}, table(step=[1, 5, 3])), "A")
    assert f.text == "run A failed after step 5: no error recorded" and f.numbers == {"step": 5.0}
    (g,) = status_findings(run({"status": "failed"}), "A")
    assert g.text == "run A failed after step 0: no error recorded" and g.numbers == {}


def test_an_interrupted_run_is_a_warning_at_its_step() -> None:
    (f,) = status_findings(run({"status": "interrupted", "steps_done": 40}), "A")
    assert f == Finding("run A was interrupted at step 40; its values are those of an unfinished run.",
                        "warning", "status", {"step": 40.0})


def test_any_other_status_is_provisional() -> None:
    (f,) = status_findings(run({"status": "running"}), "A")
    assert f.text == ("run A has status 'running' (last recorded step none yet): it has not finished, or it "
                      "stopped without saying why, so its values are provisional.")
    assert f.level == "warning" and f.numbers == {}
    (g,) = status_findings(run({}, table(step=[2.0, 9.0])), "A")
    assert "status 'unknown' (last recorded step 9)" in g.text


def test_strictly_every_nan_or_infinity_counts_bookkeeping_aside() -> None:
    t = table(step=[1, 2, 3], epoch=[nan, 0, 0], a=[1, nan, 3], b=[2, 2, inf], c=[1, 2, 3])
    (f,) = nonfinite_findings(t, "metrics.csv", "this run", "status")
    assert f == Finding("this run: metrics.csv has values that are not finite (NaN or infinite) in columns a, b, "
                        "first at step 2.", "problem", "status", {"step": 2.0})


def test_a_single_bad_column_is_named_in_the_singular() -> None:
    (f,) = nonfinite_findings(table(step=[4, 8], a=[-inf, 1]), "metrics.csv", "L", "status")
    assert "in column a, first at step 4." in f.text


def test_more_than_five_bad_columns_are_counted() -> None:
    t = table(step=[1], **{f"c{i}": [nan] for i in range(7)})
    (f,) = nonfinite_findings(t, "metrics.csv", "L", "status")
    assert "in columns c0, c1, c2, c3, c4 and 2 more, first at step 1." in f.text


def test_a_diagnostic_nan_counts_only_after_a_first_finite_value() -> None:
    assert nonfinite_findings(table(step=[1, 2], s=[nan, 1.0]), "d", "L", "t", strict=False) == []
    (f,) = nonfinite_findings(table(step=[1, 2, 3], s=[nan, 1.0, nan]), "d", "L", "t", strict=False)
    assert f.level == "problem" and f.numbers == {"step": 3.0} and "in column s," in f.text
    (g,) = nonfinite_findings(table(step=[1, 2, 3], s=[2.0, inf, 2.0]), "d", "L", "t", strict=False)
    assert g.numbers == {"step": 2.0}  # an infinity always counts
    never, infinite = nonfinite_findings(table(step=[1, 2], s=[inf, nan]), "d", "L", "t", strict=False)
    assert never.level == "warning" and "no finite value in column s:" in never.text
    assert infinite.level == "problem" and infinite.numbers == {"step": 1.0}


def test_a_diagnostic_column_without_a_finite_value_is_undefined_or_broken() -> None:
    found = nonfinite_findings(table(step=[1, 2], u=[nan, nan], v=[nan, nan], w=[1.0, 2.0]), "diagnostic x", "L", "t",
                               strict=False)
    assert found == [Finding("L: diagnostic x has no finite value in columns u, v: undefined for this model, or "
                             "broken from the start.", "warning", "t")]


def test_the_test_loss_from_first_to_last_evaluation() -> None:
    (f,) = evaluation_findings(table(step=[10, 20, 30], test_loss=[nan, 90.0, 85.5]), "A")
    assert f.text == "A: the test negative ELBO went from 90 at n = 20 to 85.5 nats per example at n = 30."
    assert f.level == "info" and f.topic == "test"
    assert f.numbers == {"first": 90.0, "last": 85.5, "lowest": 85.5, "first_step": 20.0, "last_step": 30.0,
                         "lowest_step": 30.0}


@pytest.mark.parametrize(("last", "level"), [(101.0, "info"), (101.5, "warning")], ids=["exactly-1pc", "above-1pc"])
def test_a_final_test_loss_more_than_one_percent_above_the_lowest_is_a_rise(last: float, level: str) -> None:
    (f,) = evaluation_findings(table(step=[1, 2, 3], test_loss=[120.0, 100.0, last]), "")
    assert f.level == level
    if level == "warning":
        assert f.text == ("the test negative ELBO ended at 102 nats per example, 1.5 above its lowest value 100 at "
                          "n = 2: check for overfitting or an unstable step size.")
        assert f.numbers["lowest_step"] == 2.0


def test_no_test_finding_without_two_finite_evaluations() -> None:
    assert evaluation_findings(Table(), "A") == []
    assert evaluation_findings(table(step=[1, 2], loss=[1, 2]), "A") == []
    assert evaluation_findings(table(step=[1, 2], test_loss=[nan, 3.0]), "A") == []


def test_diagnostic_class_is_none_for_a_name_no_plugin_has() -> None:
    assert diagnostic_class(PROBE) is None
    assert diagnostic_class("full_gradient") is not None


def test_the_headline_without_a_plugin_is_the_first_single_value_column() -> None:
    t = table(step=[1, 2], time=[0, 1], z_0=[1, 2], z_1=[1, 2], z_2=[1, 2], flat=[3, 3], value=[1, 2], other=[4, 5])
    assert headline(PROBE, t) == "value"
    assert headline(PROBE, table(step=[1, 2])) is None


@pytest.mark.parametrize(("values", "ending"), [
    ([8.0, 4.0, 1.0], "value went from 8 at n = 10 to 1 at n = 30 (÷8)."),
    ([1.0, 2.0, 3.0], "value went from 1 at n = 10 to 3 at n = 30 (×3)."),
    ([1.0, 1.5, 1.9], "value went from 1 at n = 10 to 1.9 at n = 30."),
    ([-1.0, 0.0, -4.0], "value went from -1 at n = 10 to -4 at n = 30."),
    ([nan, 2.5, nan], "value = 2.5 at n = 20."),
], ids=["fell", "rose", "less-than-double", "negative", "one-finite"])
def test_a_diagnostics_trend_is_its_headline_from_first_to_last(values: list[float], ending: str) -> None:
    t = table(step=[10, 20, 30], value=values)
    found = diagnostic_findings(run({}), PROBE, t, "A")
    trend = [f for f in found if f.level == "info"]
    assert trend[-1].text == f"A: diagnostic {PROBE}: {ending}"
    assert all(f.topic == f"diagnostic:{PROBE}" for f in found)


def test_a_diagnostic_without_rows_says_so() -> None:
    (f,) = diagnostic_findings(run({}), PROBE, Table(), "")
    assert f == Finding(f"diagnostics/{PROBE}.csv has no rows yet, or could not be read (see the notes).", "info",
                        f"diagnostic:{PROBE}")


def test_convergence_findings_fit_the_raw_minibatch_norm() -> None:
    n = np.arange(1, 401, dtype=float)
    (f,) = convergence_findings(n, 3.0 * n**-0.5, subject="A")
    assert f.topic == "rate" and f.text.startswith("A: ")
    assert f.numbers["slope"] == pytest.approx(-0.5, abs=1e-9)
    assert (f.numbers["n_start"], f.numbers["n_end"]) == (200.0, 400.0)


def test_run_findings_put_each_sentence_in_order_capitalised(tmp_path: Path) -> None:
    path = tmp_path / "run-x"
    (path / "diagnostics").mkdir(parents=True)
    (path / "run.json").write_text(json.dumps({"status": "interrupted", "steps_done": 3}))
    (path / "metrics.csv").write_text("step,loss\n1,5\n2,nan\n3,4\n")
    (path / "eval.csv").write_text("step,test_loss\n1,10\n3,9\n")
    (path / "diagnostics" / f"{PROBE}.csv").write_text("step,value\n1,4\n3,1\n")
    found = run_findings(load_run(path))
    assert [(f.topic, f.level) for f in found] == [("status", "warning"), ("status", "problem"), ("test", "info"),
                                                   (f"diagnostic:{PROBE}", "info")]
    assert found[0].text.startswith("Run run-x was interrupted at step 3")
    assert found[1].text.startswith("This run: metrics.csv has values that are not finite")
    assert found[2].text == "The test negative ELBO went from 10 at n = 1 to 9 nats per example at n = 3."
    assert found[3].text == f"Diagnostic {PROBE}: value went from 4 at n = 1 to 1 at n = 3 (÷4)."
    labelled = run_findings(load_run(path), "seed 1")
    assert labelled[0].text.startswith("Run seed 1 was interrupted") and labelled[2].text.startswith("Seed 1: the test")
