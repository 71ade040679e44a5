"""The beta-VAE: the Gaussian VAE trained under the beta objective."""

from __future__ import annotations

from bbvi_kit import register_model
from .gaussian_vae import GaussianVAE


@register_model("beta_vae")
class BetaVAE(GaussianVAE):
    """The :class:`GaussianVAE` networks under E_q[log p(x|z)] - beta KL(q(z|x) || p(z)).

    beta belongs to the objective (``objective: {name: beta, beta: 4.0}``, the default here),
    which scales the latent sites in model and guide; this plugin accepts only that objective.

    Reference: Higgins et al., ICLR 2017.
    """

    default_objective = {"name": "beta", "beta": 4.0}
    objectives = ("beta",)
