"""Objectives: how K particles' log weights become a per-example bound (ELBO, IWAE, beta, Renyi)."""

from bbvi_kit.objectives.base import Objective
from bbvi_kit.objectives.beta import BetaELBO
from bbvi_kit.objectives.elbo import ELBO
from bbvi_kit.objectives.iwae import IWAE
from bbvi_kit.objectives.renyi import Renyi

__all__ = ["Objective", "ELBO", "IWAE", "BetaELBO", "Renyi"]
