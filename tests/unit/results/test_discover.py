"""Finding run directories (:mod:`bbvi_kit.results.discover`): a run directory holds ``run.json``
and ``metrics.csv``; the search goes through sweeps and folders of sweeps, not into a run or a
hidden folder, reads each run once, skips a run without rows with a warning, and refuses in one
line a path that is missing, not a folder, or holds no run with rows."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from bbvi_kit.errors import InputError
from bbvi_kit.results.discover import FiguresWarning, find_runs, is_run_dir, warner


def make_run(path: Path, seed: int = 0, rows: int = 2, diagnostics: tuple[str, ...] = ()) -> Path:
    path.mkdir(parents=True)
    (path / "run.json").write_text(json.dumps({"status": "completed", "seed": seed}))
    (path / "metrics.csv").write_text("step,loss\n" + "".join(f"{i + 1},{10 - i}\n" for i in range(rows)))
    for name in diagnostics:
        (path / "diagnostics").mkdir(exist_ok=True)
        (path / "diagnostics" / f"{name}.csv").write_text("step,value\n1,0.5\n")
    return path


def names(runs: list) -> list[str]:
    return [r.path.name for r in runs]


def test_a_run_directory_has_both_run_json_and_metrics_csv(tmp_path: Path) -> None:
    run = make_run(tmp_path / "r")
    assert is_run_dir(run)
    (run / "metrics.csv").unlink()
    assert not is_run_dir(run)
    (run / "metrics.csv").mkdir()  # a folder of that name is not the file
    assert not is_run_dir(run)
    assert not is_run_dir(tmp_path / "missing")


def test_one_run_directory_is_found_with_its_rows_and_seed(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run-a", seed=7, rows=3)
    (found,) = find_runs([run])
    assert found.path == run and found.seed == 7 and len(found.metrics) == 3
    assert found.metrics[2] == {"step": 3.0, "loss": 8.0}


def test_sweeps_and_folders_of_sweeps_are_searched_in_name_order(tmp_path: Path) -> None:
    make_run(tmp_path / "sweep-b" / "seed-1")
    make_run(tmp_path / "sweep-b" / "seed-0")
    make_run(tmp_path / "sweep-a" / "deep" / "er" / "run")
    (tmp_path / "sweep-a" / "notes").mkdir()
    runs = find_runs([tmp_path])
    assert [r.path.relative_to(tmp_path).as_posix() for r in runs] == [
        "sweep-a/deep/er/run", "sweep-b/seed-0", "sweep-b/seed-1"]


def test_the_search_enters_neither_a_run_nor_a_hidden_folder(tmp_path: Path) -> None:
    outer = make_run(tmp_path / "outer")
    make_run(outer / "set-aside-1" / "inner")  # inside a run: not a run of the sweep
    make_run(tmp_path / ".trash" / "old")
    assert names(find_runs([tmp_path])) == ["outer"]


def test_a_run_reached_twice_is_read_once(tmp_path: Path) -> None:
    run = make_run(tmp_path / "sweep" / "r0")
    make_run(tmp_path / "sweep" / "r1")
    runs = find_runs([tmp_path / "sweep", run, tmp_path / "sweep" / ".." / "sweep" / "r0"])
    assert names(runs) == ["r0", "r1"]


def test_only_the_diagnostics_the_figures_draw_are_read(tmp_path: Path) -> None:
    run = make_run(tmp_path / "r", diagnostics=("full_gradient", "snr", "gradient_noise"))
    (found,) = find_runs([run])
    assert set(found.diagnostics) == {"full_gradient", "snr"} and len(found.full) == 1


def test_a_run_without_rows_is_skipped_with_a_warning(tmp_path: Path) -> None:
    make_run(tmp_path / "a")
    empty = make_run(tmp_path / "b", rows=0)
    said: list[str] = []
    assert names(find_runs([tmp_path], warn=said.append)) == ["a"]
    assert said == [f"{empty}: no metrics rows yet; skipped"]


def test_the_default_warning_is_a_figures_warning(tmp_path: Path) -> None:
    make_run(tmp_path / "a")
    make_run(tmp_path / "b", rows=0)
    with pytest.warns(FiguresWarning, match="no metrics rows yet; skipped"):
        find_runs([tmp_path])


def test_warner_passes_a_given_function_through() -> None:
    said: list[str] = []
    assert warner(said.append) == said.append
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warner(None)("look")
    assert [(w.category, str(w.message)) for w in caught] == [(FiguresWarning, "look")]


def test_a_missing_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError) as excinfo:
        find_runs([tmp_path / "nope"])
    assert str(excinfo.value) == f"{tmp_path / 'nope'}: no such file or directory"


def test_a_file_is_refused(tmp_path: Path) -> None:
    run = make_run(tmp_path / "r")
    with pytest.raises(InputError) as excinfo:
        find_runs([run / "metrics.csv"])
    assert str(excinfo.value) == f"{run / 'metrics.csv'}: not a directory (give run or sweep directories)"


def test_a_folder_without_runs_is_refused_even_beside_good_paths(tmp_path: Path) -> None:
    good = make_run(tmp_path / "good")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError) as excinfo:
        find_runs([good, tmp_path / "empty"])
    assert str(excinfo.value) == f"{tmp_path / 'empty'}: no run directory (a folder with run.json and metrics.csv) under it"


def test_a_folder_whose_runs_all_lack_rows_is_refused(tmp_path: Path) -> None:
    make_run(tmp_path / "sweep" / "a", rows=0)
    make_run(tmp_path / "sweep" / "b", rows=0)
    said: list[str] = []
    with pytest.raises(InputError) as excinfo:
        find_runs([tmp_path / "sweep"], warn=said.append)
    assert str(excinfo.value) == f"{tmp_path / 'sweep'}: no run with metrics rows under it yet"
    assert len(said) == 2
