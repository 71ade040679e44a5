"""The interface every objective plugin implements."""

from __future__ import annotations

import torch
from pydantic import Field

from bbvi_kit.plugin import Configurable, PluginOptions


class Objective(Configurable):
    """A bound to maximise, computed from the log weights ``log w[k, b]`` of K particles.

    Subclasses define three reductions of a ``[K, *batch]`` tensor of log weights:

    - :meth:`bound`: the per-example value (to maximise), shape ``[*batch]``;
    - :meth:`learning_signal`: the factor each particle's ``log q`` is multiplied by in the
      score-function estimator, shape ``[K, *batch]``;
    - :meth:`leave_one_out`: a baseline for that signal built from the other K-1 particles only,
      so subtracting it keeps the estimator unbiased.

    ``latent_scale`` multiplies the log densities of latent sites in model and guide (beta).

    ``linear_in_log_weights``: the bound is a mean of log weights (the ELBO, beta-ELBO). Then
    the direct gradient of ``-log q(z)`` at a sample held fixed has expectation zero, and the
    particle pass leaves it out (as Pyro's ``Trace_ELBO`` does for non-reparameterised sites):
    same expectation, less variance. For IWAE it does not vanish and is kept.
    """

    linear_in_log_weights: bool = False

    class Options(PluginOptions):
        num_particles: int = Field(1, ge=1, le=100_000, description="K, particles per example")

    options: Options

    @property
    def num_particles(self) -> int:
        return self.options.num_particles

    @property
    def latent_scale(self) -> float:
        return 1.0

    @property
    def scheduled(self) -> bool:
        """Whether :meth:`latent_scale_at` changes with the step (then ``metrics.csv`` records it)."""
        return False

    def latent_scale_at(self, step: int | None) -> float:
        """The latent scale at training step ``step`` (1-based); ``None``: the target value, used
        by evaluation."""
        return self.latent_scale

    @property
    def analytic_kl(self) -> bool:
        """Whether each latent site's log p(z) - log q(z) is replaced by -KL(q || p) in closed form."""
        return False

    def bound(self, log_weights: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def learning_signal(self, log_weights: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def leave_one_out(self, log_weights: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
