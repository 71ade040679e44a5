"""The evidence lower bound averaged over K particles."""

from __future__ import annotations

import torch

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
    """

    linear_in_log_weights = True

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
