"""The beta-VAE objective: beta scales the latent (KL) part of the ELBO, constant or on a schedule."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from bbvi_kit.objectives.elbo import ELBO
from bbvi_kit.registry import register_objective


@register_objective("beta")
class BetaELBO(ELBO):
    r"""E_q[log p(x|z)] - beta_n * KL(q(z|x) || p(z)), the KL by Monte Carlo or in closed form.

    Implemented by scaling the log density of every latent site, in model and guide, by beta:
    log w_k = log p(x|z_k) + beta_n * (log p(z_k) - log q(z_k|x)). At beta = 1 it is the ELBO.

    ``beta_schedule`` makes beta a function of the training step n = 1, 2, ... (written to
    ``metrics.csv`` as the ``beta`` column); evaluation always uses the target ``beta``:

    - ``constant``: beta_n = beta;
    - ``linear`` (KL warm-up; Bowman et al., CoNLL 2016; Sonderby et al., NeurIPS 2016):
      beta_n = beta * min(1, (n - 1) / warmup_steps), so the first step fits the likelihood alone;
    - ``cyclical`` (Fu et al., "Cyclical Annealing Schedule", NAACL 2019): with period
      P = ``cycle_steps`` and tau = ((n - 1) mod P) / P, beta_n = beta * min(1, tau / R),
      R = ``cycle_ratio``: beta rises linearly over the first R of each cycle, then holds.

    Reference: Higgins et al., "beta-VAE: Learning Basic Visual Concepts with a Constrained
    Variational Framework", ICLR 2017; covered by Surendran et al., AISTATS 2025 (for a constant
    beta; a schedule changes the objective during the run, which their theorems do not cover).
    """

    class Options(ELBO.Options):
        beta: float = Field(1.0, gt=0.0, le=1e6, description="weight of the KL term (the target of a schedule)")
        beta_schedule: Literal["constant", "linear", "cyclical"] = Field(
            "constant", description="beta as a function of the step: constant, linear warm-up, or cyclical annealing"
        )
        warmup_steps: int = Field(1000, ge=1, le=10**9, description="linear: steps over which beta rises from 0")
        cycle_steps: int = Field(1000, ge=1, le=10**9, description="cyclical: the length of one cycle, in steps")
        cycle_ratio: float = Field(0.5, gt=0.0, le=1.0, description="cyclical: the part of a cycle over which beta rises")

    options: Options

    @property
    def latent_scale(self) -> float:
        return float(self.options.beta)

    @property
    def scheduled(self) -> bool:
        return self.options.beta_schedule != "constant"

    def latent_scale_at(self, step: int | None) -> float:
        beta = float(self.options.beta)
        schedule = self.options.beta_schedule
        if step is None or schedule == "constant":
            return beta
        if schedule == "linear":
            return beta * min(1.0, (step - 1) / self.options.warmup_steps)
        tau = math.fmod(step - 1, self.options.cycle_steps) / self.options.cycle_steps
        return beta * min(1.0, tau / self.options.cycle_ratio)
