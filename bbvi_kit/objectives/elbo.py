"""The evidence lower bound averaged over K particles."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from bbvi_kit.objectives.base import Objective
from bbvi_kit.registry import register_objective


@register_objective("elbo")
class ELBO(Objective):
    r"""ELBO(x) = E_q[log p(x, z) - log q(z|x)], estimated by the mean over K particles.

    .. math:: \hat{L}(x) = \frac{1}{K} \sum_{k=1}^K \log w_k, \quad w_k = p(x, z_k) / q(z_k|x).

    Score-function signal of particle k: ``log w_k / K`` (the other particles' terms do not depend
    on z_k and add only variance). Leave-one-out baseline: ``mean_{j != k} log w_j / K``.

    Reference: Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014; the objective of
    Surendran et al., "Theoretical Convergence Guarantees for Variational Autoencoders",
    AISTATS 2025.

    With ``kl: analytic`` each latent site's Monte Carlo term log p(z_k) - log q(z_k|x) is replaced
    by its expectation under q, -KL(q(z|x) || p(z)), computed by ``kl_divergence`` where the pair
    of families has a closed form registered (as Pyro's ``TraceMeanField_ELBO`` does); the bound
    is the same, and its KL part has no Monte Carlo error. Refused in one line naming the site where no
    closed form is registered, where the site is drawn without a gradient path (a score-function
    term), or where its prior depends on another latent.
    """

    linear_in_log_weights = True

    class Options(Objective.Options):
        kl: Literal["sample", "analytic"] = Field(
            "sample", description="each latent's KL part: by sampling (log q - log p at the draws) or in closed form"
        )

    options: Options

    @property
    def analytic_kl(self) -> bool:
        return self.options.kl == "analytic"

    def bound(self, log_weights: torch.Tensor) -> torch.Tensor:
        return log_weights.mean(0)

    def learning_signal(self, log_weights: torch.Tensor) -> torch.Tensor:
        return log_weights / log_weights.shape[0]

    def leave_one_out(self, log_weights: torch.Tensor) -> torch.Tensor:
        k = log_weights.shape[0]
        if k < 2:
            raise ValueError("a leave-one-out baseline needs num_particles >= 2")
        others_mean = (log_weights.sum(0, keepdim=True) - log_weights) / (k - 1)
        return others_mean / k
