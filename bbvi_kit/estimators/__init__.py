"""Gradient estimators: how a surrogate loss is built from particles (auto, pathwise, score
function, sticking the landing, doubly reparameterised)."""

from bbvi_kit.estimators.auto import Auto
from bbvi_kit.estimators.base import Estimator, SurrogateLoss
from bbvi_kit.estimators.dreg import DReG
from bbvi_kit.estimators.pathwise import Pathwise
from bbvi_kit.estimators.score import ScoreFunction
from bbvi_kit.estimators.stl import StickingTheLanding

__all__ = ["Auto", "DReG", "Estimator", "SurrogateLoss", "Pathwise", "ScoreFunction", "StickingTheLanding"]
