"""The beta-VAE objective: beta scales the latent (KL) part of the ELBO."""

from __future__ import annotations

from pydantic import Field

from bbvi_kit.objectives.elbo import ELBO
from bbvi_kit.registry import register_objective


@register_objective("beta")
class BetaELBO(ELBO):
    r"""E_q[log p(x|z)] - beta * KL(q(z|x) || p(z)), the KL estimated by Monte Carlo.

    Implemented by scaling the log density of every latent site, in model and guide, by beta:
    log w_k = log p(x|z_k) + beta * (log p(z_k) - log q(z_k|x)). At beta = 1 it is the ELBO.

    Reference: Higgins et al., "beta-VAE: Learning Basic Visual Concepts with a Constrained
    Variational Framework", ICLR 2017; covered by Surendran et al., AISTATS 2025.
    """

    class Options(ELBO.Options):
        beta: float = Field(1.0, gt=0.0, le=1e6, description="weight of the KL term")

    options: Options

    @property
    def latent_scale(self) -> float:
        return float(self.options.beta)
