"""Doubly reparameterised gradients for the IWAE bound."""

from __future__ import annotations

from typing import Any

import torch

from bbvi_kit.estimators._particles import Particles, is_one
from bbvi_kit.estimators._sites import SiteModePolicy, reparameterised
from bbvi_kit.estimators._stopped import PathScales
from bbvi_kit.estimators.base import Estimator, SurrogateLoss, negative_bound
from bbvi_kit.objectives.base import Objective
from bbvi_kit.objectives.iwae import IWAE
from bbvi_kit.registry import register_estimator


@register_estimator("dreg")
class DReG(Estimator):
    r"""The doubly reparameterised gradient of the IWAE bound.

    With wtilde_k = w_k / sum_j w_j and z_k = g(eps_k, phi), the IWAE gradient is

    .. math:: \nabla_\theta = \sum_k \tilde w_k \nabla_\theta \log w_k, \qquad
              \nabla_\phi^{\mathrm{DReG}} = \sum_k \tilde w_k^2 \,
              \frac{\partial \log w_k}{\partial z_k} \frac{\partial z_k}{\partial \phi},

    where the phi gradient applies the reparameterisation trick a second time to the score term
    of the ordinary estimator; it has the same expectation and, unlike it, an SNR that does not
    fall as K grows. Computed in one backward pass: the surrogate is
    ``-sum_k wtilde_k^perp log w_k`` with log q's parameters stopped (as :class:`StickingTheLanding`),
    and each latent's value multiplies its gradient by wtilde_k on the way back, so every path
    into phi (through a value) carries wtilde_k^2 and every path into theta wtilde_k.

    Needs the IWAE objective; the conditions on the guide are STL's (reparameterised latents
    whose distributions do not depend on each other's draws, no model-only latents) and a model
    that broadcasts over the particle dimension; anything else is refused in one line.

    Reference: Tucker, Lawson, Gu & Maddison, "Doubly Reparameterized Gradient Estimators for
    Monte Carlo Objectives", ICLR 2019.
    """

    def site_policy(self) -> SiteModePolicy:
        return reparameterised("dreg")

    def check(self, objective: Objective) -> None:
        if not isinstance(objective, IWAE):
            raise ValueError("estimator dreg needs objective iwae (for the ELBO use estimator stl, which is "
                             "unbiased there)")

    def particle_options(self) -> dict[str, Any]:
        return {"stop_guide": "dreg", "path_scales": PathScales()}  # one per pass: its own weights

    def surrogate(self, objective: Objective, particles: Particles) -> SurrogateLoss:
        log_w = particles.log_weights
        weights = torch.softmax(log_w.detach(), dim=0)
        assert particles.path_scales is not None  # set by particle_options
        particles.path_scales.scales = particles.at_guide_sites(weights)
        total = (weights * log_w).sum()
        if not is_one(particles.data_scale):
            total = total * particles.data_scale
        loss = negative_bound(objective, particles).detach()
        return SurrogateLoss(surrogate=-total / particles.num_examples, loss=loss, particles=particles)
