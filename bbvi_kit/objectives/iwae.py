"""The importance weighted bound (IWAE) with K samples."""

from __future__ import annotations

import math

import torch
from pydantic import Field

from bbvi_kit.objectives.base import Objective
from bbvi_kit.registry import register_objective


def log_mean_exp(x: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """log (1/K) sum_k exp(x_k) along ``dim``, computed stably."""
    return torch.logsumexp(x, dim=dim) - math.log(x.shape[dim])


@register_objective("iwae")
class IWAE(Objective):
    r"""IWAE_K(x) = E[log (1/K) sum_k w_k], z_1..z_K iid from q(.|x); IWAE_1 = ELBO.

    Its pathwise gradient is sum_k wtilde_k grad log w_k with wtilde = softmax(log w), which
    autograd produces from :meth:`bound` directly.

    Score-function signal of every particle: the bound itself. Leave-one-out baseline (VIMCO,
    Mnih & Rezende 2016): the bound with log w_k replaced by the mean of the other log weights,

    .. math:: b_k = \log \frac{1}{K}\Big(\sum_{j \ne k} w_j + \exp\big(\tfrac{1}{K-1}\sum_{j\ne k}\log w_j\big)\Big).

    References: Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders", ICLR 2016;
    Surendran et al., AISTATS 2025 (rate O(L*/sqrt n + d* log n / (B K sqrt n))).
    """

    class Options(Objective.Options):
        num_particles: int = Field(5, ge=1, le=100_000, description="K, importance samples per example")

    options: Options

    def bound(self, log_weights: torch.Tensor) -> torch.Tensor:
        return log_mean_exp(log_weights, 0)

    def learning_signal(self, log_weights: torch.Tensor) -> torch.Tensor:
        return self.bound(log_weights).unsqueeze(0).expand_as(log_weights)

    def leave_one_out(self, log_weights: torch.Tensor) -> torch.Tensor:
        return vimco_baseline(log_weights)


def vimco_baseline(log_weights: torch.Tensor) -> torch.Tensor:
    """Per particle k: log (1/K) sum_j w_j with log w_k replaced by the mean of the others."""
    k = log_weights.shape[0]
    if k < 2:
        raise ValueError("a leave-one-out baseline needs num_particles >= 2")
    others_mean = (log_weights.sum(0, keepdim=True) - log_weights) / (k - 1)
    # Row i of the K x K block holds log w with entry i replaced by others_mean[i].
    eye = torch.eye(k, dtype=torch.bool, device=log_weights.device)
    eye = eye.reshape((k, k) + (1,) * (log_weights.dim() - 1))
    replaced = torch.where(eye, others_mean.unsqueeze(1), log_weights.unsqueeze(0))
    return log_mean_exp(replaced, 1)
