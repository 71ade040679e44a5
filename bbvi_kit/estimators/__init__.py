"""Gradient estimators: how a surrogate loss is built from particles (auto, pathwise, score
function with optional Rao-Blackwellisation and per-site baselines, sticking the landing, doubly
reparameterised, and split: one estimator per parameter group)."""

from bbvi_kit.estimators.auto import Auto
from bbvi_kit.estimators.base import Estimator, SurrogateLoss
from bbvi_kit.estimators.baselines import BaselineNet
from bbvi_kit.estimators.dreg import DReG
from bbvi_kit.estimators.pathwise import Pathwise
from bbvi_kit.estimators.score import ScoreFunction
from bbvi_kit.estimators.split import PerGroup
from bbvi_kit.estimators.stl import StickingTheLanding

__all__ = ["Auto", "BaselineNet", "DReG", "Estimator", "Pathwise", "PerGroup", "ScoreFunction", "StickingTheLanding",
           "SurrogateLoss"]
