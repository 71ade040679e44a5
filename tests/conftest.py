"""Shared test set-up: GPU tests skip without CUDA; Pyro's global param store starts empty."""

from __future__ import annotations

import pyro
import pytest
import torch


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
