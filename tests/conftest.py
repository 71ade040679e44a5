"""Shared test set-up (the tree: ``unit/`` mirrors ``bbvi_kit/`` and ``plugins/``, one file per
module; ``integration/`` starts other processes: subprocesses, Ray, torchrun, a browser, and is
marked ``slow``; ``project/`` checks the repository as shipped; ``support/`` is what they share).
GPU tests skip without CUDA; Pyro's global param store starts empty;
in-process CLI calls; single-threaded torch for modules that ask for it."""

from __future__ import annotations

import os
from typing import Any, Callable, Iterator

import pyro
import pytest
import torch

from bbvi_kit import cli
from bbvi_kit.data.root import DATA_ENV
from tests.support.cli import call_cli

pytest_plugins = ["tests.support.report_pages"]  # the report pages' fixtures, for unit and integration tests


# pytest-xdist hands out whole files (--dist loadfile, pyproject.toml), so a module's fixtures are
# built once. The heaviest files (seconds of test time on 2 cores, measured 2026-12-06) go out
# first, so that no worker is left running one of them alone at the end. Only the order changes.
HEAVIEST_FIRST = (
    "tests/integration/test_resume.py",  # ~105 s (the kill at every file-creation point: ~25 s)
    "tests/integration/test_executors.py",  # ~90 s
    "tests/integration/test_recipes.py",  # ~75 s
    "tests/unit/report/test_report.py",  # ~25 s, with the browser test (SAME_WORKER)
    "tests/integration/test_data_parallel.py",  # ~20 s
    "tests/integration/test_plugin_entry_points.py",
    "tests/integration/test_benchmarks.py",
    "tests/unit/diagnostics/test_noise.py",
    "tests/unit/plots/test_plots.py",
    "tests/unit/plugins/test_model_plugins.py",
    "tests/unit/diagnostics/test_full_gradient.py",
    "tests/integration/test_cli_processes.py",
    "tests/integration/test_examples.py",
    "tests/unit/test_checkpoint.py",
    "tests/unit/config/test_hostile_recipes.py",
    "tests/unit/test_sweep.py",
    "tests/unit/infer/test_pyro_programs.py",
    "tests/unit/diagnostics/test_full_gradient_linear_vae.py",
)


# Files whose tests share session-scoped fixtures go to one worker as one unit, so the fixtures
# are built once: the report pages (real tiny runs) of the report tests and the browser test.
SAME_WORKER = {"tests/integration/test_report_browser.py": "tests/unit/report/test_report.py"}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """--dist loadfile, with the files of :data:`SAME_WORKER` sent as one unit."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class LoadFileSharing(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            scope = super()._split_scope(nodeid)
            return SAME_WORKER.get(scope, scope)

    return LoadFileSharing(config, log)


def _xdist_workers() -> int:
    return int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist each worker gets its share of the cores for torch's intra-op threads
    (and the processes it starts, through OMP_NUM_THREADS): two workers with two threads each on
    two cores spin against each other and run several times slower."""
    if _xdist_workers():
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        threads = max(1, cores // _xdist_workers())
        torch.set_num_threads(threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _xdist_workers():
        def rank(item: pytest.Item) -> int:
            return next((i for i, p in enumerate(HEAVIEST_FIRST) if item.nodeid.startswith(p + "::")), len(HEAVIEST_FIRST))

        items.sort(key=rank)  # stable: the rest keep their order
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
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
