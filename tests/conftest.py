"""Shared test set-up: GPU tests skip without CUDA; Pyro's global param store starts empty;
in-process CLI calls; single-threaded torch for modules that ask for it."""

from __future__ import annotations

from typing import Callable, Iterator

import pyro
import pytest
import torch

from bbvi_kit import cli
from bbvi_kit.data.root import DATA_ENV


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _fresh_pyro_state() -> None:
    pyro.clear_param_store()


@pytest.fixture(autouse=True, scope="session")
def _data_root_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No test reads or writes the user's data root (~/.cache/bbvi_kit/data or $BBVI_KIT_DATA):
    it is a fresh folder for the session (decoded-image caches land there), inherited by the
    subprocesses the tests start."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(DATA_ENV, str(tmp_path_factory.mktemp("bbvi_kit_data")))
        yield


def call_cli(args: list[object]) -> int:
    """Run ``bbvi_kit.cli.main`` in-process; returns the exit code it would give the shell."""
    try:
        cli.main([str(a) for a in args])
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    return 0


@pytest.fixture
def cli_run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable:
    """``cli_run(args) -> (exit code, stdout, stderr)`` of an in-process CLI call."""
    monkeypatch.setitem(cli._state, "debug", False)

    def invoke(args: list[object]) -> tuple[int, str, str]:
        capsys.readouterr()
        code = call_cli(args)
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny tensors: one intra-op thread is as fast, and far faster than two when other processes
    share the (two) cores. Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
