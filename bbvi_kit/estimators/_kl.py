"""Closed-form KL terms for ``kl: analytic`` (the ELBO and beta objectives).

For a latent site drawn from q(z|x) with prior p(z), the ELBO's Monte Carlo term
log p(z_k) - log q(z_k|x) has expectation -KL(q || p). Where torch (or Pyro) registers a closed
form for the pair of families, :func:`kl_terms` returns it per site, scaled and masked as the
site's log densities are (beta, ``poutine.scale``, ``mask``; the kept data plate's subsampling
scale taken out), as Pyro's ``TraceMeanField_ELBO`` computes it. The replacement keeps the bound
unbiased when the prior's parameters do not depend on other latents and the site is drawn with a
gradient path; anything else is refused in one line naming the site.
"""

from __future__ import annotations

from typing import Any

import torch
from pyro.distributions.kl import kl_divergence
from pyro.distributions.util import scale_and_mask

from bbvi_kit.errors import InputError
from bbvi_kit.estimators._sites import describe
from bbvi_kit.estimators._stopped import ancestors, parameters_of


def _refuse(site: str, why: str) -> InputError:
    return InputError(f"objective kl: analytic: site {site!r} {why}; use kl: sample")


def check_analytic(guide_sites: list[dict[str, Any]], model_sites: dict[str, dict[str, Any]],
                   latent_values: list[tuple[str, torch.Tensor]], held: set[str]) -> None:
    """Refuse a site drawn without a path, and one whose prior depends on another latent."""
    for site in guide_sites:
        name = site["name"]
        if name not in model_sites:
            raise _refuse(name, "is in the guide but not in the model: it has no prior")
        if name in held:
            raise _refuse(name, "is drawn without a gradient path (a score-function term), where its KL term "
                          "would need the score of the rest")
        nodes = ancestors(parameters_of(model_sites[name]["fn"]))
        for other, value in latent_values:
            if other != name and value.grad_fn is not None and value.grad_fn in nodes:
                raise _refuse(name, f"has a prior computed from latent {other!r}: its KL to q is not the "
                              "expectation of its term")


def kl_terms(guide_sites: list[dict[str, Any]], model_sites: dict[str, dict[str, Any]],
             data_scale: float | torch.Tensor) -> dict[str, torch.Tensor]:
    """Per guide latent: KL(q || p) in closed form, scaled and masked as its log density is."""
    out = {}
    for site in guide_sites:
        name, prior = site["name"], model_sites[site["name"]]
        try:
            kl = kl_divergence(site["fn"], prior["fn"])
        except NotImplementedError:
            raise _refuse(name, f"has no closed-form KL from {describe(site['fn'])} to {describe(prior['fn'])} "
                          "registered (torch.distributions.kl_divergence)") from None
        scale = site["scale"] if isinstance(data_scale, float) and data_scale == 1.0 else site["scale"] / data_scale
        out[name] = scale_and_mask(kl, scale, site["mask"])
    return out
