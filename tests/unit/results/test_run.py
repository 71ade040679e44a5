"""One run directory as read from disk (:mod:`bbvi_kit.results.run`): ``run.json``,
``recipe.yaml``, ``metrics.csv``, ``eval.csv`` and ``diagnostics/*.csv`` into a :class:`Run`, its
properties and their defaults, and a file that cannot be read: a one-line error naming it, or a
note and an empty value when the caller collects notes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from bbvi_kit.errors import InputError
from bbvi_kit.results.run import Run, load_run, looks_like_run
from bbvi_kit.results.table import Table

RECIPE = """name: demo
training:
  seed: 11
  batch_size: 32
objective:
  name: iwae
  num_particles: 5
diagnostics:
  - name: snr
    every: 10
  - name: full_gradient
    every: null
"""


def make_run(path: Path, info: dict | None = None, recipe: str | None = RECIPE) -> Path:
    (path / "diagnostics").mkdir(parents=True)
    (path / "run.json").write_text(json.dumps({"status": "completed", "seed": 3, "point": {"objective.num_particles": 5},
                                               "point_label": "K=5"} if info is None else info))
    if recipe is not None:
        (path / "recipe.yaml").write_text(recipe)
    (path / "metrics.csv").write_text("step,epoch,loss\n1,0,9.5\n2,0,8.5\n3,1,\n")
    (path / "eval.csv").write_text("step,test_loss\n2,7.25\n")
    (path / "diagnostics" / "snr.csv").write_text("step,snr\n1,0.5\n")
    (path / "diagnostics" / "full_gradient.csv").write_text("step,full_grad_norm_sq\n1,4\n2,2\n")
    (path / "diagnostics" / ".hidden.csv").write_text("step,x\n1,1\n")
    (path / "diagnostics" / "notes.txt").write_text("not a table")
    return path


def test_a_run_directory_is_read_whole(tmp_path: Path) -> None:
    run = load_run(make_run(tmp_path / "run-a"))
    assert run.path == tmp_path / "run-a" and run.name == "run-a"
    assert run.status == "completed" and run.seed == 3
    assert run.point == {"objective.num_particles": 5} and run.point_label == "K=5"
    assert run.recipe["objective"] == {"name": "iwae", "num_particles": 5}
    assert run.recipe_text == RECIPE
    assert len(run.metrics) == 3 and run.metrics[1] == {"step": 2.0, "epoch": 0.0, "loss": 8.5}
    assert math.isnan(run.metrics[2]["loss"])  # an empty cell
    assert run.evals[0] == {"step": 2.0, "test_loss": 7.25}
    assert sorted(run.diagnostics) == ["full_gradient", "snr"]  # hidden files and other files aside
    np.testing.assert_array_equal(run.full.column("full_grad_norm_sq"), [4.0, 2.0])


def test_only_the_diagnostics_asked_for_and_present_are_read(tmp_path: Path) -> None:
    run = load_run(make_run(tmp_path / "r"), diagnostics=["snr", "missing"])
    assert list(run.diagnostics) == ["snr"]
    assert len(run.full) == 0  # no full_gradient read: an empty table
    assert load_run(tmp_path / "r", diagnostics=[]).diagnostics == {}


def test_metrics_read_by_the_caller_are_used_as_they_are(tmp_path: Path) -> None:
    mine = Table({"step": np.array([10.0]), "loss": np.array([1.0])})
    assert load_run(make_run(tmp_path / "r"), metrics=mine).metrics is mine
    assert load_run(tmp_path / "r", notes=[], metrics=mine).metrics is mine


def test_the_seed_falls_back_to_the_recipe_and_the_rest_to_defaults(tmp_path: Path) -> None:
    run = load_run(make_run(tmp_path / "r", info={"seed": None}))
    assert run.seed == 11  # training.seed of recipe.yaml
    assert run.status == "unknown" and run.point == {} and run.point_label == ""
    bare = load_run(make_run(tmp_path / "bare", info={"point": ["not", "a", "mapping"]}, recipe=None))
    assert bare.seed is None and bare.recipe == {} and bare.recipe_text == ""
    assert bare.point == {} and bare.num_particles == 1


def test_settings_and_diagnostic_options_come_from_the_resolved_recipe(tmp_path: Path) -> None:
    run = load_run(make_run(tmp_path / "r"))
    assert run.num_particles == 5 and run.setting("training", "batch_size") == 32
    assert run.setting("training", "missing", "d") == "d" and run.setting("nosection", "x", 7) == 7
    assert run.setting("name", "x", "d") == "d"  # a section that is not a mapping
    assert run.diagnostic_option("snr", "every", 1) == 10
    assert run.diagnostic_option("full_gradient", "every", 99) == 99  # null counts as unset
    assert run.diagnostic_option("absent", "every", 5) == 5


def test_a_column_absent_is_nan_and_has_column_needs_rows(tmp_path: Path) -> None:
    run = load_run(make_run(tmp_path / "r"))
    assert run.has_column("metrics", "loss") and not run.has_column("metrics", "nothing")
    col = run.column("metrics", "nothing")
    assert col.shape == (3,) and np.isnan(col).all()
    np.testing.assert_array_equal(run.column("evals", "test_loss"), [7.25])
    (tmp_path / "r" / "eval.csv").write_text("step,test_loss\n")
    assert not load_run(tmp_path / "r").has_column("evals", "step")


def test_a_missing_csv_reads_as_an_empty_table(tmp_path: Path) -> None:
    path = make_run(tmp_path / "r")
    (path / "eval.csv").unlink()
    run = load_run(path)
    assert len(run.evals) == 0 and run.evals.columns == {}


@pytest.mark.parametrize("name", ["run.json", "recipe.yaml"])
def test_an_unreadable_mapping_is_a_one_line_error_naming_the_file(tmp_path: Path, name: str) -> None:
    path = make_run(tmp_path / "r")
    (path / name).write_text("{not: [valid\n  json")
    with pytest.raises(InputError) as info:
        load_run(path)
    message = str(info.value)
    assert message.startswith(str(path / name)) and "cannot read it" in message and "\n" not in message


def test_a_bad_csv_line_is_an_error_naming_the_file_line_and_column(tmp_path: Path) -> None:
    path = make_run(tmp_path / "r")
    (path / "metrics.csv").write_text("step,loss\n1,2\n2,oops\n3,4\n")
    with pytest.raises(InputError, match=r"metrics\.csv: line 3, column loss: 'oops' is not a number"):
        load_run(path)


def test_with_notes_each_unreadable_file_is_noted_and_read_as_empty(tmp_path: Path) -> None:
    path = make_run(tmp_path / "r")
    (path / "run.json").write_text("{broken")
    (path / "metrics.csv").write_text("step,loss\n1,x\n2,3\n")
    (path / "diagnostics" / "snr.csv").write_text("step,snr\n1,2,3\n4,5\n")
    notes: list[str] = []
    run = load_run(path, notes)
    assert run.info == {} and len(run.metrics) == 0 and len(run.diagnostics["snr"]) == 0
    assert run.evals[0]["test_loss"] == 7.25  # the readable files are still read
    assert len(notes) == 3
    assert "snr.csv" in notes[0]  # the diagnostics are noted first
    assert any(str(path / "run.json") in n for n in notes) and any("metrics.csv" in n for n in notes)


def test_a_row_still_being_written_is_left_out(tmp_path: Path) -> None:
    path = make_run(tmp_path / "r")
    (path / "metrics.csv").write_text("step,loss\n1,2\n2,3\n3,4")  # no line end on the last
    np.testing.assert_array_equal(load_run(path).column("metrics", "step"), [1.0, 2.0])


def test_a_run_looks_like_one_with_either_file(tmp_path: Path) -> None:
    assert not looks_like_run(tmp_path)
    (tmp_path / "run.json").write_text("{}")
    assert looks_like_run(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    (other / "metrics.csv").write_text("step\n")
    assert looks_like_run(other)
    (tmp_path / "folder" / "run.json").mkdir(parents=True)
    assert not looks_like_run(tmp_path / "folder")


def test_a_run_built_in_memory_has_empty_diagnostics() -> None:
    run = Run(path=Path("x"), recipe={}, info={}, metrics=Table(), evals=Table())
    assert run.diagnostics == {} and len(run.full) == 0 and run.recipe_text == ""
    assert not run.has_column("metrics", "step")
