"""What the callback tests share: a fresh run directory, closed and unlocked afterwards."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from bbvi_kit.runs import RunDirectory


@pytest.fixture
def run(tmp_path: Path) -> Iterator[RunDirectory]:
    directory = RunDirectory(tmp_path)
    yield directory
    directory.close()
    directory.release()
