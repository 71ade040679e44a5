"""The default estimator: pathwise where a site can be reparameterised, score terms elsewhere."""

from __future__ import annotations

from bbvi_kit.estimators._sites import SiteModePolicy, auto_mode
from bbvi_kit.estimators.score import ScoreFunction
from bbvi_kit.registry import register_estimator


@register_estimator("auto")
class Auto(ScoreFunction):
    r"""Per site, as Pyro's ``Trace_ELBO`` decides: a latent whose distribution has ``rsample``
    (Normal, flows, ``Delta`` point estimates, relaxed discrete families) is reparameterised;
    any other (Bernoulli, Categorical, Poisson, ...) is held fixed and gets a score-function
    term with the chosen baseline (see :class:`ScoreFunction`):

    .. math:: \nabla \mathcal{L} = \mathbb{E}\big[\nabla_{\text{path}} \hat{L}
              + (s_k - b_k)^{\perp} \nabla \log q(z^{\text{held}}_k)\big].

    With every site reparameterised it is :class:`~bbvi_kit.estimators.pathwise.Pathwise`,
    step for step; with none, :class:`ScoreFunction`. The default when a recipe names no
    estimator.

    References: Schulman, Heess, Weber & Abbeel, "Gradient Estimation Using Stochastic
    Computation Graphs", NeurIPS 2015; Pyro's ``Trace_ELBO`` (Bingham et al., JMLR 2019).
    """

    def site_policy(self) -> SiteModePolicy:
        return auto_mode
