"""The interface every gradient estimator plugin implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from bbvi_kit.estimators._particles import Particles, is_one
from bbvi_kit.estimators._sites import SiteModePolicy, auto_mode
from bbvi_kit.objectives.base import Objective
from bbvi_kit.plugin import Configurable


@dataclass
class SurrogateLoss:
    """What one estimator pass returns.

    Attributes:
        surrogate: the scalar to call ``backward()`` on; its gradient is the estimator's
            (unbiased) estimate of the gradient of ``loss``.
        loss: the negative bound in nats per example (mean over the batch), detached.
        particles: the traces and log weights it came from.
    """

    surrogate: torch.Tensor
    loss: torch.Tensor
    particles: Particles


def negative_bound(objective: Objective, particles: Particles) -> torch.Tensor:
    r"""-(N/B) \sum_b bound_b / n: the negative bound per example, with the kept data plate's
    subsampling scale N/B applied outside the per-example bound and n the number of examples."""
    total = objective.bound(particles.log_weights).sum()
    if not is_one(particles.data_scale):
        total = total * particles.data_scale
    return -total / particles.num_examples


class Estimator(Configurable):
    """Turns particles and an objective into a surrogate loss.

    :meth:`site_policy` says how each latent site is drawn: ``reparam`` (with a gradient path)
    or ``score`` (held fixed, with a score-function term); it refuses, in one line naming the
    site, a site the estimator cannot serve (see :mod:`bbvi_kit.estimators._sites`). Estimators
    with state (running baselines) expose it through :meth:`state_dict` / :meth:`load_state_dict`.
    """

    def site_policy(self) -> SiteModePolicy:
        return auto_mode

    def check(self, objective: Objective) -> None:
        """Raise ``ValueError`` when this estimator cannot serve ``objective``."""

    def particle_options(self) -> dict[str, Any]:
        """Extra options of the particle pass (:func:`bbvi_kit.estimators._particles.trace_particles`):
        the path-only estimators stop the guide's parameters in ``log q``."""
        return {}

    def surrogate(self, objective: Objective, particles: Particles) -> SurrogateLoss:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
