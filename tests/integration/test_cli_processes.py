"""``bbvi-kit`` in a fresh interpreter, as a shell user starts it: help, a one-line error and its
exit code, and ``--debug`` / ``BBVI_KIT_DEBUG`` adding the traceback (the in-process calls of
``tests/unit/test_cli.py`` cannot see the interpreter's own start and end)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli import bbvi_subprocess


def test_help_lists_the_commands(tmp_path: Path) -> None:
    result = bbvi_subprocess(["--help"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    commands = result.stdout.split("Commands:", 1)[1]
    listed = {line.split()[0] for line in commands.splitlines() if line.strip()}
    assert {"run", "validate", "plugins", "plot", "report"} <= listed
    assert "--debug" in result.stdout


def test_bad_input_in_a_fresh_process(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("model: {name: gaussian_vae, hidden_sizes: [3]}\n")
    result = bbvi_subprocess(["validate", path], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [f"error: {path}: model.hidden_sizes: unknown key"]


@pytest.mark.parametrize("how", ["--debug", "BBVI_KIT_DEBUG=1"])
def test_debug_adds_the_traceback(tmp_path: Path, how: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("model: {name: gaussian_vae, hidden_sizes: [3]}\n")
    if how == "--debug":
        result = bbvi_subprocess(["--debug", "validate", path], cwd=tmp_path)
    else:
        result = bbvi_subprocess(["validate", path], cwd=tmp_path, env={"BBVI_KIT_DEBUG": "1"})
    assert result.returncode == 2
    assert "Traceback (most recent call last)" in result.stderr
    assert "bbvi_kit.errors.InputError" in result.stderr
    assert result.stderr.splitlines()[-1] == f"error: {path}: model.hidden_sizes: unknown key"


