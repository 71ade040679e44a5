"""The pathwise (reparameterisation) gradient estimator."""

from __future__ import annotations

from bbvi_kit.errors import InputError
from bbvi_kit.estimators._particles import Particles, sample_sites
from bbvi_kit.estimators.base import Estimator, SurrogateLoss
from bbvi_kit.objectives.base import Objective
from bbvi_kit.registry import register_estimator


@register_estimator("pathwise")
class Pathwise(Estimator):
    r"""Differentiate the bound through z = g(eps, phi) (reparameterised samples).

    The surrogate is the negative per-example bound itself; for IWAE its gradient is
    sum_k wtilde_k grad log w_k with wtilde = softmax(log w) (Burda et al. 2016).
    Needs every guide site to have ``rsample``.

    Reference: Kingma & Welling, ICLR 2014; Rezende, Mohamed & Wierstra, ICML 2014.
    """

    reparameterized = True

    def surrogate(self, objective: Objective, particles: Particles) -> SurrogateLoss:
        for site in sample_sites(particles.guide_trace):
            if not site["is_observed"] and not site["fn"].has_rsample:
                raise InputError(
                    f"estimator pathwise: guide site {site['name']!r} ({type(site['fn']).__name__}) "
                    "cannot be reparameterised; use estimator 'score'"
                )
        loss = -objective.bound(particles.log_weights).sum() / particles.num_examples
        return SurrogateLoss(surrogate=loss, loss=loss.detach(), particles=particles)
