"""The score-function (REINFORCE) gradient estimator with optional baselines."""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from bbvi_kit.distributed import global_mean
from bbvi_kit.estimators._particles import Particles, is_one
from bbvi_kit.estimators._sites import SiteModePolicy, score_mode
from bbvi_kit.estimators.base import Estimator, SurrogateLoss, negative_bound
from bbvi_kit.objectives.base import Objective
from bbvi_kit.plugin import PluginOptions
from bbvi_kit.registry import register_estimator


@register_estimator("score")
class ScoreFunction(Estimator):
    r"""grad_phi E_q[f(z)] = E_q[(f(z) - b) grad_phi log q(z|x)] + E_q[grad_phi f(z)], z held fixed.

    Every latent site (guide latents and model-only latents, which are drawn from their prior)
    is drawn without a gradient path and held fixed. Per particle k the surrogate is

    .. math:: (s_k - b_k)^{\perp} \log q(z_k|x) + \hat{L}(x)

    where s_k is the objective's learning signal (log w_k / K for the ELBO, the bound itself for
    IWAE), b_k a baseline, ``^\perp`` a stop-gradient and log q the unscaled, unmasked log density
    of the held sites (Pyro's ``ScoreParts.score_function``). The second term carries the
    gradient in theta and the zero-mean term -grad_phi log q in phi. Unbiased for any q with a
    density, including discrete latents and flows (a flow inverts the held sample); a ``Delta``
    whose value depends on parameters has no score and is refused. A baseline independent of
    z_k lowers the variance without bias:

    - ``none``: b = 0;
    - ``running_mean``: an exponential moving average of the mean signal over past steps;
    - ``leave_one_out``: built from the other K-1 particles of the same example (needs K >= 2;
      VIMCO's baseline for IWAE).

    References: Williams, "Simple statistical gradient-following algorithms", 1992;
    Ranganath, Gerrish & Blei, "Black Box Variational Inference", AISTATS 2014;
    Mnih & Rezende, "Variational inference for Monte Carlo objectives", ICML 2016.
    """

    class Options(PluginOptions):
        baseline: Literal["none", "running_mean", "leave_one_out"] = Field(
            "none", description="control variate subtracted from the learning signal"
        )
        baseline_decay: float = Field(0.9, ge=0.0, lt=1.0, description="EMA decay of running_mean")

    options: Options

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._running_mean: torch.Tensor | None = None

    def site_policy(self) -> SiteModePolicy:
        return score_mode

    def check(self, objective: Objective) -> None:
        if self.options.baseline == "leave_one_out" and objective.num_particles < 2:
            raise ValueError(
                "baseline leave_one_out needs objective.num_particles >= 2 "
                f"(got {objective.num_particles})"
            )

    def surrogate(self, objective: Objective, particles: Particles) -> SurrogateLoss:
        loss = negative_bound(objective, particles)
        log_q = particles.score_log_prob
        if log_q is None:  # no site held fixed (auto with every site reparameterised)
            return SurrogateLoss(surrogate=loss, loss=loss.detach(), particles=particles)
        log_w = particles.log_weights.detach()
        signal = objective.learning_signal(log_w)
        baseline = self.options.baseline
        if baseline == "leave_one_out":
            signal = signal - objective.leave_one_out(log_w)
        elif baseline == "running_mean":
            # The baseline only ever holds past steps' signals, so it is independent of z.
            current = global_mean(signal)  # over every rank's examples in data-parallel training
            if self._running_mean is None:
                self._running_mean = current
            else:
                signal = signal - self._running_mean
                decay = self.options.baseline_decay
                self._running_mean = decay * self._running_mean + (1.0 - decay) * current
        score_term = (signal * log_q).sum()
        if not is_one(particles.data_scale):
            score_term = score_term * particles.data_scale
        return SurrogateLoss(surrogate=loss - score_term / particles.num_examples, loss=loss.detach(),
                             particles=particles)

    def state_dict(self) -> dict[str, Any]:
        return {"running_mean": self._running_mean}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._running_mean = state.get("running_mean")
