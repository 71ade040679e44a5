"""What the tests share that is not a fixture: generated datasets in their on-disk formats, Pyro
programs, plugin sources that misbehave on purpose, the in-process CLI call, and the process
helpers of the fault-injection tests."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
"""The repository root (README.md, recipes/, plugins/, pyproject.toml)."""
