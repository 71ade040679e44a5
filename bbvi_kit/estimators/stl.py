"""Sticking the landing: the pathwise estimator without the score part of log q."""

from __future__ import annotations

from typing import Any

from bbvi_kit.estimators._particles import Particles
from bbvi_kit.estimators._sites import SiteModePolicy, reparameterised
from bbvi_kit.estimators.base import Estimator, SurrogateLoss, negative_bound
from bbvi_kit.objectives.base import Objective
from bbvi_kit.registry import register_estimator


@register_estimator("stl")
class StickingTheLanding(Estimator):
    r"""The pathwise gradient with the guide's parameters stopped inside log q.

    With z = g(eps, phi), the pathwise gradient of log w = log p(x, z) - log q_phi(z) is

    .. math:: \frac{d \log w}{d\phi} = \big(\nabla_z \log p(x,z) - \nabla_z \log q_\phi(z)\big)
              \frac{\partial z}{\partial\phi} - \frac{\partial \log q_\phi(z)}{\partial\phi}\Big|_z .

    STL drops the last term, the score, whose expectation is zero: for the ELBO the estimator is
    unbiased, and where q is the exact posterior, log p(x, z) - log q(z) = log p(x) for every z, so
    its phi gradient is exactly zero (zero variance; pathwise keeps the score's variance there).
    Theta's gradient is pathwise's. With the IWAE objective ("IWAE-STL") the score term has no
    zero expectation under the self-normalised weights: the estimator is biased for K > 1 (Tucker
    et al. 2019, section 3); estimator ``dreg`` is its unbiased form.

    Valid for guides whose latents all have ``rsample`` and whose distributions do not depend on
    each other's draws (mean-field or amortised guides, a VAE's encoder), and models without
    latents outside the guide; anything else is refused in one line naming the site.

    Reference: Roeder, Wu & Duvenaud, "Sticking the Landing: Simple, Lower-Variance Gradient
    Estimators for Variational Inference", NeurIPS 2017.
    """

    def site_policy(self) -> SiteModePolicy:
        return reparameterised("stl")

    def particle_options(self) -> dict[str, Any]:
        return {"stop_guide": "stl"}

    def surrogate(self, objective: Objective, particles: Particles) -> SurrogateLoss:
        loss = negative_bound(objective, particles)
        return SurrogateLoss(surrogate=loss, loss=loss.detach(), particles=particles)
