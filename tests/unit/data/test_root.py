"""Where dataset files live and where a recipe may write (:mod:`bbvi_kit.data.root`): the data
root's precedence (option, ``$BBVI_KIT_DATA``, the default) with ``~`` expanded, the hint for a
missing root, the folders a recipe may download or cache into (symbolic links followed), and a
failed download that removes only what it created."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bbvi_kit.data.root import (
    ALLOW_WRITE_ENV,
    DATA_ENV,
    allow_writes_to,
    check_recipe_write,
    data_root,
    download_cleanly,
    root_hint,
)
from bbvi_kit.errors import InputError


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh home folder, no $BBVI_KIT_DATA, no --allow-write folders, working in ``tmp_path/work``."""
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "work").mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv(DATA_ENV, raising=False)
    monkeypatch.delenv(ALLOW_WRITE_ENV, raising=False)
    monkeypatch.chdir(tmp_path / "work")
    return home


# -- data_root ---------------------------------------------------------------------------------
def test_the_option_comes_first_with_its_tilde_expanded(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATA_ENV, "/from/env")
    assert data_root("~/datasets") == home / "datasets"
    assert data_root("relative/data") == Path("relative/data")  # relative to the working folder, not resolved


def test_the_environment_comes_next(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATA_ENV, "~/shared")
    assert data_root(None) == home / "shared"
    assert data_root("") == home / "shared" and data_root("   ") == home / "shared"  # a blank option is no option


def test_the_default_is_in_the_users_cache(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert data_root(None) == home / ".cache" / "bbvi_kit" / "data"
    monkeypatch.setenv(DATA_ENV, "  ")  # set but blank
    assert data_root(None) == home / ".cache" / "bbvi_kit" / "data"
    assert not (home / ".cache").exists()  # the folder is not made


def test_the_hint_is_empty_for_a_root_that_exists(tmp_path: Path) -> None:
    assert root_hint(tmp_path) == ""


def test_the_hint_for_a_missing_root_names_it_and_how_to_set_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    assert root_hint(missing) == f" (the data root {missing} does not exist; set the dataset's root option or BBVI_KIT_DATA)"


# -- where a recipe may write ------------------------------------------------------------------
def test_below_the_working_folder_and_the_data_root_a_recipe_may_write(home: Path, tmp_path: Path) -> None:
    check_recipe_write(Path("cache"), "celeba", "cache_dir", "cache decoded images")
    check_recipe_write(tmp_path / "work", "celeba", "cache_dir", "cache decoded images")  # the folder itself
    check_recipe_write(tmp_path / "work" / "a" / "b", "mnist", "root", "download")
    check_recipe_write(Path("~/.cache/bbvi_kit/data/MNIST"), "mnist", "root", "download")


def test_elsewhere_a_recipe_may_not_write_and_is_told_how_to_allow_it(home: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    with pytest.raises(InputError) as excinfo:
        check_recipe_write(target, "mnist", "root", "download")
    assert str(excinfo.value) == (
        f"dataset mnist: data.root {target} is outside the working folder and the data root "
        f"{home / '.cache' / 'bbvi_kit' / 'data'}, and a recipe does not download there by itself; allow it with "
        f"'bbvi-kit --allow-write {target} run ...'")


@pytest.mark.parametrize("target", ["../work-evil", "../work/../elsewhere", "/"])
def test_a_name_that_only_looks_inside_is_outside(home: Path, target: str) -> None:
    with pytest.raises(InputError, match="is outside the working folder"):
        check_recipe_write(Path(target), "celeba", "cache_dir", "cache decoded images")


def test_a_link_inside_the_working_folder_to_a_folder_outside_is_outside(home: Path, tmp_path: Path) -> None:
    (tmp_path / "outside").mkdir()
    Path("link").symlink_to(tmp_path / "outside")
    with pytest.raises(InputError, match=r"data\.cache_dir link is outside"):
        check_recipe_write(Path("link"), "celeba", "cache_dir", "cache decoded images")
    with pytest.raises(InputError):
        check_recipe_write(Path("link/sub"), "celeba", "cache_dir", "cache decoded images")


def test_the_environments_data_root_is_writable_and_not_its_neighbours(home: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "data"))
    check_recipe_write(tmp_path / "data" / "celeba", "celeba", "root", "download")
    with pytest.raises(InputError, match=f"data root {tmp_path / 'data'},"):
        check_recipe_write(tmp_path / "data2", "celeba", "root", "download")


def test_allowed_folders_are_kept_resolved_in_the_environment_and_become_writable(home: Path, tmp_path: Path) -> None:
    target = tmp_path / "scratch" / "celeba"
    with pytest.raises(InputError):
        check_recipe_write(target, "celeba", "cache_dir", "cache decoded images")
    allow_writes_to([tmp_path / "scratch", "~/big"])
    assert os.environ[ALLOW_WRITE_ENV] == os.pathsep.join([str(tmp_path / "scratch"), str(home / "big")])
    check_recipe_write(target, "celeba", "cache_dir", "cache decoded images")
    check_recipe_write(home / "big" / "x", "celeba", "cache_dir", "cache decoded images")
    allow_writes_to(["relative"])  # added to those before, resolved against the working folder
    assert os.environ[ALLOW_WRITE_ENV].split(os.pathsep) == [str(tmp_path / "scratch"), str(home / "big"),
                                                             str(tmp_path / "work" / "relative")]


# -- download_cleanly --------------------------------------------------------------------------
def test_a_failed_download_removes_what_it_created_and_keeps_what_was_there(tmp_path: Path) -> None:
    kept = tmp_path / "MNIST"
    kept.mkdir()
    (kept / "mine.txt").write_text("keep")
    new_folder, new_file = kept / "raw", tmp_path / "archive.tar"

    def fetch() -> None:
        (new_folder / "deep").mkdir(parents=True)
        (new_folder / "deep" / "part").write_bytes(b"...")
        new_file.write_bytes(b"partial")
        raise ConnectionError("network down")

    with pytest.raises(ConnectionError, match="network down"):
        download_cleanly([kept, new_folder, new_file], fetch)
    assert not new_folder.exists() and not new_file.exists()
    assert (kept / "mine.txt").read_text() == "keep"


def test_a_link_the_download_made_is_removed_but_not_what_it_points_to(tmp_path: Path) -> None:
    target = tmp_path / "real"
    target.mkdir()
    (target / "precious").write_text("x")
    link = tmp_path / "data"

    def fetch() -> None:
        link.symlink_to(target)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        download_cleanly([link], fetch)
    assert not os.path.lexists(link)
    assert (target / "precious").read_text() == "x"


def test_a_successful_download_keeps_everything(tmp_path: Path) -> None:
    made = tmp_path / "cifar-100-python"
    download_cleanly([made], lambda: made.mkdir())
    assert made.is_dir()


def test_a_path_the_download_never_made_is_no_problem(tmp_path: Path) -> None:
    def fetch() -> None:
        raise OSError("refused")

    with pytest.raises(OSError, match="refused"):
        download_cleanly([tmp_path / "never"], fetch)
