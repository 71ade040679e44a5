"""The importance weighted autoencoder: the Gaussian VAE trained under the IWAE bound."""

from __future__ import annotations

from bbvi_kit import register_model
from .gaussian_vae import GaussianVAE


@register_model("iwae")
class IWAE(GaussianVAE):
    """The :class:`GaussianVAE` networks under IWAE_K (``objective: {name: iwae, num_particles: K}``,
    K = 5 by default); this plugin accepts only that objective.

    Reference: Burda, Grosse & Salakhutdinov, ICLR 2016.
    """

    default_objective = {"name": "iwae", "num_particles": 5}
    objectives = ("iwae",)
