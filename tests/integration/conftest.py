"""Integration tests start other processes (``bbvi-kit`` subprocesses, forked children, Ray,
torchrun, runnable scripts): every one of them is marked ``slow`` (``-m "not slow"`` leaves them out)."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.slow)
