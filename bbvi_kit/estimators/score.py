"""The score-function (REINFORCE) gradient estimator with optional baselines and
Rao-Blackwellisation."""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from bbvi_kit.distributed import global_mean
from bbvi_kit.estimators._particles import Particles, is_one
from bbvi_kit.estimators.baselines import SiteBaselines
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

    ``rao_blackwellise: true`` (objectives ``elbo`` and ``beta``, with ``kl: sample``) gives each
    held site z_i its own signal, the cost terms computed from it:

    .. math:: \nabla \mathcal{L} = \mathbb{E}\Big[\sum_i \big(c_i(z) - b_i\big)^{\perp}
              \nabla \log q(z_i) + \nabla_{\text{path}} \hat{L}\Big],

    where c_i sums the terms of log w (the model's log p, the guide's -log q, scaled as in log w)
    downstream of z_i, summed to z_i's plates, so that z_i at plate index b sees its own index's
    terms and those outside the plate. The terms it drops do not depend on z_i: their products
    with its score have expectation zero, so the expectation is the same and, typically, the
    variance much lower. The dependence is found as
    Pyro's ``TraceGraph_ELBO`` finds it (provenance of the held values;
    :mod:`bbvi_kit.estimators._downstream`), and with K = 1 and no baseline the gradient is
    ``TraceGraph_ELBO``'s at the same seed. The baseline b_i is per site: the ``baseline``
    option applied to each site's cost, or the site's own Pyro ``infer={"baseline": ...}``
    options (decaying average, ``nn_baseline``, ``baseline_value``), whose squared error is
    added to the surrogate to fit them (:mod:`bbvi_kit.estimators.baselines`).

    References: Williams, "Simple statistical gradient-following algorithms", 1992;
    Ranganath, Gerrish & Blei, "Black Box Variational Inference", AISTATS 2014;
    Mnih & Rezende, "Variational inference for Monte Carlo objectives", ICML 2016;
    Schulman, Heess, Weber & Abbeel, "Gradient Estimation Using Stochastic Computation Graphs",
    NeurIPS 2015; Mnih & Gregor, "Neural Variational Inference and Learning in Belief
    Networks", ICML 2014 (learned baselines); Pyro's ``TraceGraph_ELBO``.
    """

    class Options(PluginOptions):
        baseline: Literal["none", "running_mean", "leave_one_out"] = Field(
            "none", description="control variate subtracted from the learning signal"
        )
        baseline_decay: float = Field(0.9, ge=0.0, lt=1.0, description="EMA decay of running_mean")
        rao_blackwellise: bool = Field(
            False, description="multiply each held site's score by its downstream cost only (elbo and beta objectives)"
        )

    options: Options

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._running_mean: torch.Tensor | None = None
        self._site_baselines = SiteBaselines()

    def site_policy(self) -> SiteModePolicy:
        return score_mode

    def check(self, objective: Objective) -> None:
        if self.options.baseline == "leave_one_out" and objective.num_particles < 2:
            raise ValueError(
                "baseline leave_one_out needs objective.num_particles >= 2 "
                f"(got {objective.num_particles})"
            )
        if self.options.rao_blackwellise and not objective.linear_in_log_weights:
            raise ValueError(f"rao_blackwellise needs a bound that is a mean of log weights (objective elbo or beta), "
                             f"not objective {type(objective).__name__}; set rao_blackwellise: false")
        if self.options.rao_blackwellise and objective.analytic_kl:
            raise ValueError("rao_blackwellise cannot be combined with objective kl: analytic (its KL terms are not "
                             "per-sample costs); use kl: sample or rao_blackwellise: false")

    def particle_options(self) -> dict[str, Any]:
        return {"rao_blackwellise": True} if self.options.rao_blackwellise else {}

    def surrogate(self, objective: Objective, particles: Particles) -> SurrogateLoss:
        loss = negative_bound(objective, particles)
        log_q = particles.score_log_prob
        if log_q is None:  # no site held fixed (auto with every site reparameterised)
            return SurrogateLoss(surrogate=loss, loss=loss.detach(), particles=particles)
        if particles.site_scores is not None:
            return self._rao_blackwellised(objective, particles, loss)
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

    def _rao_blackwellised(self, objective: Objective, particles: Particles, loss: torch.Tensor) -> SurrogateLoss:
        """``loss - sum_i (s_i^perp log q(z_i)) + sum_i mean_k (c_i - b_i)^2``, the sums over
        particles and plate entries scaled as :func:`negative_bound` (N/B, per example), with
        s_i = learning_signal(c_i - b_i) = (c_i - b_i) / K and the squared error only for the
        sites with a fitted baseline."""
        assert particles.site_scores is not None
        score_term: torch.Tensor | None = None
        fit: torch.Tensor | None = None
        for site in particles.site_scores:
            centred, squared_error = self._site_baselines.centre(site, self.options.baseline,
                                                                 self.options.baseline_decay)
            term = (objective.learning_signal(centred.detach()) * site.score).sum()
            score_term = term if score_term is None else score_term + term
            if squared_error is not None:
                error = squared_error.sum() / squared_error.shape[0]  # mean over particles, as Pyro's 1/K
                fit = error if fit is None else fit + error
        assert score_term is not None  # site_scores is not empty when score_log_prob is set
        extra = -score_term if fit is None else fit - score_term
        if not is_one(particles.data_scale):
            extra = extra * particles.data_scale
        return SurrogateLoss(surrogate=loss + extra / particles.num_examples, loss=loss.detach(), particles=particles)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"running_mean": self._running_mean}
        if self.options.rao_blackwellise:  # (a checkpoint without it is today's)
            state["site_baselines"] = self._site_baselines.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._running_mean = state.get("running_mean")
        self._site_baselines.load_state_dict(state.get("site_baselines") or {})
