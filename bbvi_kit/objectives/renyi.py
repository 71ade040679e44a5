"""The Renyi-alpha bound with K samples (variational Renyi bound)."""

from __future__ import annotations

import torch
from pydantic import Field, field_validator

from bbvi_kit.objectives.base import Objective
from bbvi_kit.objectives.iwae import log_mean_exp, vimco_baseline
from bbvi_kit.registry import register_objective


@register_objective("renyi")
class Renyi(Objective):
    r"""L_alpha,K(x) = 1/(1 - alpha) E[log (1/K) sum_k w_k^(1 - alpha)], z_1..z_K iid from q(.|x).

    alpha = 0 is IWAE_K; alpha -> 1 is the ELBO (use objective ``elbo``); for alpha in (0, 1) it lies
    between them; alpha < 0 gives values above IWAE_K, not a lower bound of log p(x) in general
    (Li & Turner). Computed per example, as IWAE: the K log weights of an example are combined
    before the examples are summed (Pyro's ``RenyiELBO`` does the same, whose values it equals at the
    same seed). Its pathwise gradient is sum_k v_k grad log w_k with v = softmax((1 - alpha) log w).

    Score-function signal of every particle: the bound itself; leave-one-out baseline: IWAE's
    (VIMCO) applied to (1 - alpha) log w, divided by (1 - alpha).

    Reference: Li & Turner, "Renyi Divergence Variational Inference", NeurIPS 2016.
    """

    class Options(Objective.Options):
        num_particles: int = Field(5, ge=1, le=100_000, description="K, importance samples per example")
        alpha: float = Field(0.0, ge=-1e3, le=1e3, description="Renyi order, not 1 (0: IWAE; 1 is the ELBO)")

        @field_validator("alpha")
        @classmethod
        def _not_one(cls, value: float) -> float:
            if value == 1.0:
                raise ValueError("alpha = 1 is the ELBO: use objective elbo")
            return value

    options: Options

    @property
    def _power(self) -> float:
        return 1.0 - float(self.options.alpha)

    def bound(self, log_weights: torch.Tensor) -> torch.Tensor:
        return log_mean_exp(self._power * log_weights, 0) / self._power

    def learning_signal(self, log_weights: torch.Tensor) -> torch.Tensor:
        return self.bound(log_weights).unsqueeze(0).expand_as(log_weights)

    def leave_one_out(self, log_weights: torch.Tensor) -> torch.Tensor:
        return vimco_baseline(self._power * log_weights) / self._power
