"""Convergence diagnostics: the per-step gradient norms the engine records, and the diagnostic
plugins a recipe switches on (see :mod:`bbvi_kit.diagnostics.base`)."""

from bbvi_kit.diagnostics.base import Diagnostic, DiagnosticContext, DiagnosticOptions, run_diagnostic
from bbvi_kit.diagnostics.gradients import squared_grad_norm, squared_grad_norms
from bbvi_kit.diagnostics.heldout import HeldOutIWAE

__all__ = [
    "Diagnostic",
    "DiagnosticContext",
    "DiagnosticOptions",
    "HeldOutIWAE",
    "run_diagnostic",
    "squared_grad_norm",
    "squared_grad_norms",
]
