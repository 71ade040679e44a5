"""Gradient estimators: how a surrogate loss is built from particles (auto, pathwise, score function)."""

from bbvi_kit.estimators.auto import Auto
from bbvi_kit.estimators.base import Estimator, SurrogateLoss
from bbvi_kit.estimators.pathwise import Pathwise
from bbvi_kit.estimators.score import ScoreFunction

__all__ = ["Auto", "Estimator", "SurrogateLoss", "Pathwise", "ScoreFunction"]
