"""Safe file operations (:mod:`bbvi_kit.files`): bounded reads of regular files only, atomic
writes that leave the old file intact on failure, folders made with one-line errors, fresh
directories with an exclusive mkdir, and the one-line wording of a failed file operation."""

from __future__ import annotations

import datetime
import errno
import os
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from bbvi_kit import files
from bbvi_kit.errors import InputError, OutputError
from bbvi_kit.files import (
    TEMPORARY_NAME,
    atomic_file,
    atomic_write_text,
    ensure_folder,
    file_error_message,
    fresh_directory,
    read_regular_file,
)


# -- read_regular_file -------------------------------------------------------------------------
def test_a_regular_file_up_to_the_limit_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    payload = bytes(range(256)) * 8  # 2048 bytes, every byte value
    path.write_bytes(payload)
    assert read_regular_file(path, limit=2048) == payload


def test_a_file_one_byte_over_the_limit_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    path.write_bytes(b"x" * 2049)
    with pytest.raises(InputError) as excinfo:
        read_regular_file(path, limit=2048)
    assert str(excinfo.value) == f"{path}: larger than 2 KiB; refused"


def test_a_symbolic_link_to_a_regular_file_is_followed(tmp_path: Path) -> None:
    (tmp_path / "real").write_bytes(b"abc")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert read_regular_file(tmp_path / "link", limit=10) == b"abc"


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)  # no writer: a blocking open or read would hang the test
    with pytest.raises(InputError, match="not a regular file") as excinfo:
        read_regular_file(fifo, limit=100)
    assert str(fifo) in str(excinfo.value)


def test_a_device_is_refused_naming_it() -> None:
    with pytest.raises(InputError, match=r"^/dev/zero: not a regular file"):
        read_regular_file(Path("/dev/zero"), limit=100)


def test_a_directory_and_a_missing_file_raise_the_os_errors_for_the_caller_to_word(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError):
        read_regular_file(tmp_path, limit=100)
    with pytest.raises(FileNotFoundError):
        read_regular_file(tmp_path / "missing", limit=100)


# -- atomic_file -------------------------------------------------------------------------------
def test_an_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_bytes(b"old")
    with atomic_file(path) as fh:
        fh.write(b"new contents")
        assert path.read_bytes() == b"old"  # nothing visible until the block ends
        assert [p.name for p in tmp_path.iterdir() if p != path] == [f".metrics.csv.tmp-{os.getpid()}"]
    assert path.read_bytes() == b"new contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]


def test_an_atomic_text_write_is_utf8_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "recipe.yaml"
    atomic_write_text(path, "β: 1\n")
    assert path.read_bytes() == b"\xce\xb2: 1\n"


def test_an_exception_in_the_block_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    path.write_bytes(b"old")
    with pytest.raises(KeyError):
        with atomic_file(path) as fh:
            fh.write(b"half")
            raise KeyError("boom")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]


def test_a_failed_write_is_an_os_error_naming_the_target_not_the_temporary(tmp_path: Path) -> None:
    path = tmp_path / "eval.csv"
    path.write_bytes(b"old")
    with pytest.raises(OSError) as excinfo:
        with atomic_file(path):
            raise OSError(errno.ENOSPC, "No space left on device")  # what a full disk gives a write
    assert excinfo.value.errno == errno.ENOSPC
    assert excinfo.value.filename == str(path)
    assert file_error_message(excinfo.value) == f"{path}: No space left on device"
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.csv"]


def test_an_atomic_write_into_a_missing_folder_names_the_target(tmp_path: Path) -> None:
    path = tmp_path / "absent" / "x.json"
    with pytest.raises(OSError) as excinfo:
        with atomic_file(path, "w") as fh:
            fh.write("never")
    assert excinfo.value.filename == str(path)
    assert not (tmp_path / "absent").exists()


@pytest.mark.parametrize("name", [".metrics.csv.tmp-123", ".run.json.tmp-1", ".loss.tmp-4567.png", ".a.tmp-9.svg"])
def test_temporary_names_of_atomic_writes_are_recognised(name: str) -> None:
    assert TEMPORARY_NAME.match(name)


@pytest.mark.parametrize("name", ["metrics.csv", ".metrics.csv", "metrics.csv.tmp-1", ".x.tmp-", ".x.tmp-abc",
                                  ".x.tmp-1.png.bak", ".hidden"])
def test_other_names_are_not_taken_for_temporaries(name: str) -> None:
    assert not TEMPORARY_NAME.match(name)


def test_the_temporary_of_an_atomic_write_matches_temporary_name(tmp_path: Path) -> None:
    with atomic_file(tmp_path / "sweep.json") as fh:
        (tmp,) = [p.name for p in tmp_path.iterdir()]
        fh.write(b"{}")
    assert TEMPORARY_NAME.match(tmp)


# -- file_error_message ------------------------------------------------------------------------
def test_a_file_error_names_both_files_of_a_rename() -> None:
    exc = OSError(errno.EXDEV, "Invalid cross-device link", "/a/src", None, "/b/dst")
    assert file_error_message(exc) == "/a/src -> /b/dst: Invalid cross-device link"


def test_a_file_error_without_a_file_says_a_file() -> None:
    assert file_error_message(OSError(errno.EIO, "Input/output error")) == "a file: Input/output error"
    assert file_error_message(OSError("plain message")) == "a file: plain message"


def test_the_machine_failures_are_the_ones_listed() -> None:
    assert files.WRITE_FAILURES == {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EFBIG}
    assert errno.ENOENT not in files.WRITE_FAILURES and errno.EACCES not in files.WRITE_FAILURES


# -- ensure_folder -----------------------------------------------------------------------------
def test_ensure_folder_makes_every_level_and_accepts_an_existing_folder(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "plots"
    assert ensure_folder(target) == target and target.is_dir()
    assert ensure_folder(target) == target


def test_a_file_where_the_folder_goes_is_an_input_error_naming_it(tmp_path: Path) -> None:
    blocked = tmp_path / "plots"
    blocked.write_text("a file")
    with pytest.raises(InputError) as excinfo:
        ensure_folder(blocked)
    assert str(excinfo.value) == f"{blocked}: exists and is not a folder; move it away"
    with pytest.raises(InputError, match="exists and is not a folder"):
        ensure_folder(blocked / "below")  # a file as a parent: not a directory
    assert blocked.read_text() == "a file"


def test_a_folder_that_cannot_be_created_is_an_output_error_naming_it(tmp_path: Path) -> None:
    too_long = tmp_path / ("x" * 300)  # longer than any file system's name limit (ENAMETOOLONG), even for root
    with pytest.raises(OutputError) as excinfo:
        ensure_folder(too_long / "plots")
    assert str(excinfo.value).startswith(f"{too_long / 'plots'}: cannot create the folder (")
    assert "\n" not in str(excinfo.value)


# -- fresh_directory ---------------------------------------------------------------------------
def _frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    moment = datetime.datetime(2024, 1, 2, 3, 4, 5)
    monkeypatch.setattr(files, "_dt", SimpleNamespace(datetime=SimpleNamespace(now=lambda: moment)))


def test_a_fresh_directory_is_named_by_prefix_time_and_random_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _frozen_clock(monkeypatch)
    parent = tmp_path / "runs" / "vae"  # made on the way
    first = fresh_directory(parent, prefix="set-aside-")
    second = fresh_directory(parent, prefix="set-aside-")
    for path in (first, second):
        assert path.parent == parent and path.is_dir() and not any(path.iterdir())
        assert re.fullmatch(r"set-aside-20240102-030405-[0-9a-f]{6}", path.name), path.name
    assert first != second


def test_a_taken_name_is_skipped_and_never_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _frozen_clock(monkeypatch)
    ids = iter(["aaaaaa", "aaaaaa", "bbbbbb"])
    monkeypatch.setattr(files.secrets, "token_hex", lambda n: next(ids))
    (tmp_path / "20240102-030405-aaaaaa").mkdir()
    (tmp_path / "20240102-030405-aaaaaa" / "keep").write_text("mine")
    assert fresh_directory(tmp_path).name == "20240102-030405-bbbbbb"
    assert (tmp_path / "20240102-030405-aaaaaa" / "keep").read_text() == "mine"


def test_no_free_name_after_many_tries_is_an_input_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _frozen_clock(monkeypatch)
    monkeypatch.setattr(files.secrets, "token_hex", lambda n: "cccccc")
    (tmp_path / "20240102-030405-cccccc").mkdir()
    with pytest.raises(InputError, match=re.escape(f"cannot find a fresh directory name under {tmp_path}")):
        fresh_directory(tmp_path)


def test_a_parent_that_cannot_be_made_is_an_input_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match=re.escape(f"cannot create output directory {tmp_path / 'file' / 'runs'}")):
        fresh_directory(tmp_path / "file" / "runs")
