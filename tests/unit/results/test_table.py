"""The CSV logs as float columns and the mappings beside them (:mod:`bbvi_kit.results.table`): a
:class:`Table` is a sequence of row dicts with whole columns at hand, ``read_table`` drops a row
still being written and reads old column names under today's, ``read_mapping`` is one line on bad
input, and ``finite``/``last_finite`` skip NaN and infinities."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from bbvi_kit.errors import InputError
from bbvi_kit.results.table import Table, finite, last_finite, read_mapping, read_table


def table() -> Table:
    return Table({"step": np.array([1.0, 2.0, 3.0]), "loss": np.array([5.0, math.nan, 4.0])})


# -- Table -------------------------------------------------------------------------------------
def test_a_table_is_a_sequence_of_row_dicts() -> None:
    t = table()
    assert len(t) == 3 and bool(t)
    assert t[0] == {"step": 1.0, "loss": 5.0}
    assert t[-1] == {"step": 3.0, "loss": 4.0}
    assert math.isnan(t[1]["loss"])
    assert [row["step"] for row in t] == [1.0, 2.0, 3.0]  # iteration stops at the end
    assert all(type(v) is float for v in t[0].values())


def test_slices_are_lists_of_rows() -> None:
    t = table()
    assert isinstance(t[1:], list) and [r["step"] for r in t[1:]] == [2.0, 3.0]
    assert [r["step"] for r in t[::-1]] == [3.0, 2.0, 1.0]
    assert [r["step"] for r in t[:2]] == [1.0, 2.0] and t[5:] == []


@pytest.mark.parametrize("index", [3, -4, 100])
def test_an_index_past_either_end_is_an_index_error(index: int) -> None:
    with pytest.raises(IndexError):
        table()[index]


def test_an_empty_table_has_no_rows() -> None:
    assert len(Table()) == 0 and not Table() and list(Table()) == []
    assert Table().column("loss").shape == (0,)


def test_a_missing_column_is_nan_over_every_row() -> None:
    t = table()
    np.testing.assert_array_equal(t.column("step"), [1.0, 2.0, 3.0])
    missing = t.column("test_loss")
    assert missing.shape == (3,) and np.isnan(missing).all()


# -- read_table --------------------------------------------------------------------------------
def test_a_csv_log_is_read_as_float_columns_with_empty_cells_nan(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text("step,epoch,loss\n1,0,2.5\n2,0,\n3,1,1e-3\n")
    t = read_table(path)
    assert list(t.columns) == ["step", "epoch", "loss"] and len(t) == 3
    np.testing.assert_array_equal(t.column("loss"), [2.5, math.nan, 0.001])
    assert t[2] == {"step": 3.0, "epoch": 1.0, "loss": 0.001}


def test_a_last_line_still_being_written_is_left_out(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text("step,loss\n1,2.0\n2,1.5\n3,1.")  # no line end: a row cut short
    t = read_table(path)
    np.testing.assert_array_equal(t.column("step"), [1.0, 2.0])


def test_old_mini_batch_column_names_are_read_under_todays(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text("step,grad_norm_sq,grad_norm_sq_avg,grad_norm_sq_phi,minibatch_grad_norm_sq_theta\n1,4,4,3,1\n")
    assert list(read_table(path).columns) == ["step", "minibatch_grad_norm_sq", "minibatch_grad_norm_sq_avg",
                                              "minibatch_grad_norm_sq_phi", "minibatch_grad_norm_sq_theta"]


@pytest.mark.parametrize("text", [None, "", "step,loss\n", "step,loss\n1,2"])
def test_a_missing_file_or_one_without_rows_is_an_empty_table(tmp_path: Path, text: str | None) -> None:
    path = tmp_path / "eval.csv"
    if text is not None:
        path.write_text(text)
    t = read_table(path)
    assert isinstance(t, Table) and len(t) == 0


def test_a_damaged_line_is_an_input_error_naming_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text("step,loss\n1,2.0\n2,1.0,9\n3,0.5\n")
    with pytest.raises(InputError) as excinfo:
        read_table(path)
    assert str(excinfo.value) == f"{path}: line 3: 3 fields, the header has 2"


def test_a_value_that_is_no_number_is_an_input_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text("step,loss\n1,2.0\n2,abc\n")
    with pytest.raises(InputError, match=str(path)) as excinfo:
        read_table(path)
    assert "line 3" in str(excinfo.value) and "\n" not in str(excinfo.value)


# -- read_mapping ------------------------------------------------------------------------------
def test_a_mapping_is_read_with_the_loader_given(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text('{"status": "completed", "seed": 3}')
    (tmp_path / "recipe.yaml").write_text("training:\n  seed: 3\n")
    assert read_mapping(tmp_path / "run.json", json.loads) == {"status": "completed", "seed": 3}
    assert read_mapping(tmp_path / "recipe.yaml", yaml.safe_load) == {"training": {"seed": 3}}


@pytest.mark.parametrize("text", [None, "[1, 2]", '"text"', "null"])
def test_a_missing_file_or_one_holding_no_mapping_is_empty(tmp_path: Path, text: str | None) -> None:
    path = tmp_path / "run.json"
    if text is not None:
        path.write_text(text)
    assert read_mapping(path, json.loads) == {}


def test_json_that_cannot_be_parsed_is_one_line_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    path.write_text('{"status":\n "completed",\n')
    with pytest.raises(InputError) as excinfo:
        read_mapping(path, json.loads)
    assert str(excinfo.value).startswith(f"{path}: cannot read it (") and "\n" not in str(excinfo.value)


def test_yaml_that_cannot_be_parsed_is_one_line_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text("a: b: c\n")
    with pytest.raises(InputError) as excinfo:
        read_mapping(path, yaml.safe_load)
    assert str(excinfo.value).startswith(f"{path}: cannot read it (") and "\n" not in str(excinfo.value)


# -- finite, last_finite -----------------------------------------------------------------------
def test_finite_keeps_the_finite_values_in_order() -> None:
    np.testing.assert_array_equal(finite([1, math.nan, -math.inf, 2.5, math.inf, 0]), [1.0, 2.5, 0.0])
    assert finite([]).shape == (0,) and finite([math.nan]).shape == (0,)


def test_last_finite_is_the_step_and_value_of_the_last_finite_row() -> None:
    t = Table({"step": np.array([10.0, 20.0, 30.0, 40.0]), "loss": np.array([5.0, 4.0, math.inf, math.nan])})
    assert last_finite(t, "loss") == (20.0, 4.0)


def test_last_finite_is_none_without_the_column_rows_or_a_finite_value() -> None:
    assert last_finite(table(), "test_loss") is None
    assert last_finite(Table(), "loss") is None
    assert last_finite(Table({"step": np.array([1.0]), "loss": np.array([math.nan])}), "loss") is None
