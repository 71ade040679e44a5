"""The pathwise (reparameterisation) gradient estimator."""

from __future__ import annotations

from bbvi_kit.estimators._particles import Particles
from bbvi_kit.estimators._sites import SiteModePolicy, pathwise_mode
from bbvi_kit.estimators.base import Estimator, SurrogateLoss, negative_bound
from bbvi_kit.objectives.base import Objective
from bbvi_kit.registry import register_estimator


@register_estimator("pathwise")
class Pathwise(Estimator):
    r"""Differentiate the bound through z = g(eps, phi) (reparameterised samples).

    The surrogate is the negative per-example bound itself; for IWAE its gradient is
    sum_k wtilde_k grad log w_k with wtilde = softmax(log w) (Burda et al. 2016).
    Every latent site, in the guide and model-only ones, must have ``rsample``; any other is
    refused on the first step, naming the site.

    Reference: Kingma & Welling, ICLR 2014; Rezende, Mohamed & Wierstra, ICML 2014.
    """

    def site_policy(self) -> SiteModePolicy:
        return pathwise_mode

    def surrogate(self, objective: Objective, particles: Particles) -> SurrogateLoss:
        loss = negative_bound(objective, particles)
        return SurrogateLoss(surrogate=loss, loss=loss.detach(), particles=particles)
