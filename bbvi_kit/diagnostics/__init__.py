"""Convergence diagnostics: the per-step gradient norms the engine records, and the diagnostic
plugins a recipe switches on (see :mod:`bbvi_kit.diagnostics.base`)."""

from bbvi_kit.diagnostics.base import (
    Diagnostic,
    DiagnosticContext,
    DiagnosticOptions,
    preserved_training_state,
    run_diagnostic,
)
from bbvi_kit.diagnostics import rates
from bbvi_kit.diagnostics.collapse import PosteriorCollapse, PosteriorCollapseWarning
from bbvi_kit.diagnostics.full_gradient import FullGradient
from bbvi_kit.diagnostics.gradients import squared_grad_norm, squared_grad_norms
from bbvi_kit.diagnostics.heldout import HeldOutIWAE
from bbvi_kit.diagnostics.noise import GradientNoise, GradientSNR
from bbvi_kit.diagnostics.smoothness import Smoothness

__all__ = [
    "Diagnostic",
    "DiagnosticContext",
    "DiagnosticOptions",
    "FullGradient",
    "GradientNoise",
    "HeldOutIWAE",
    "PosteriorCollapse",
    "PosteriorCollapseWarning",
    "GradientSNR",
    "Smoothness",
    "preserved_training_state",
    "rates",
    "run_diagnostic",
    "squared_grad_norm",
    "squared_grad_norms",
]
