"""Inference: the public, Pyro-like black-box VI step (:class:`BBVI`)."""

from bbvi_kit.infer.bbvi import BBVI, StepResult

__all__ = ["BBVI", "StepResult"]
