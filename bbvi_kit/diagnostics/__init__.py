"""Convergence diagnostics recorded by the engine."""

from bbvi_kit.diagnostics.gradients import squared_grad_norm, squared_grad_norms

__all__ = ["squared_grad_norm", "squared_grad_norms"]
