"""Data flows one way, checked in a fresh interpreter (``sys.modules`` of this process holds
whatever other tests imported)."""

from __future__ import annotations

import subprocess
import sys


def test_training_imports_no_plotting() -> None:
    """Data flows one way: the step, the loop and the runner import neither matplotlib nor the
    plots and report packages (the runner draws a run's plots only once it has finished)."""
    code = ("import sys, bbvi_kit, bbvi_kit.runner, bbvi_kit.sweep_runner, bbvi_kit.train, bbvi_kit.recipe; "
            "print(sorted(m for m in ('matplotlib', 'bbvi_kit.plots', 'bbvi_kit.report') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
