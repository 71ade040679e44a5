"""``bbvi-kit`` as the shell sees it: in-process (:func:`call_cli`) or in a fresh interpreter
(:func:`bbvi_subprocess`), and what its output should look like."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from bbvi_kit import cli


def call_cli(args: list[object]) -> int:
    """Run ``bbvi_kit.cli.main`` in-process; returns the exit code it would give the shell."""
    try:
        cli.main([str(a) for a in args])
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    return 0


def bbvi_subprocess(args: list[object], *, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m bbvi_kit ARGS`` in a fresh interpreter (what a shell user gets), with none of
    this process's ``BBVI_KIT_*`` variables or ``PYTHONPATH``; ``env`` adds to that."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("BBVI_KIT_") and k != "PYTHONPATH"}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "bbvi_kit", *map(str, args)],
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=300,
    )


def assert_one_line_error(err: str, *pieces: str) -> str:
    """``err`` is exactly one line, ``error: ...``, with every piece in it and no traceback."""
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {err!r}"
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in err
    for piece in pieces:
        assert piece in lines[0], f"{piece!r} not in {lines[0]!r}"
    return lines[0]


def run_dir_from(stdout: str) -> Path:
    """The run directory that ``bbvi-kit run`` printed."""
    match = re.search(r"^run directory: (.+)$", stdout, flags=re.M)
    assert match, f"no 'run directory:' line in {stdout!r}"
    return Path(match.group(1).strip())
