"""The interface every gradient estimator plugin implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from bbvi_kit.estimators._particles import Particles
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


class Estimator(Configurable):
    """Turns particles and an objective into a surrogate loss.

    ``reparameterized`` says whether latent samples carry a gradient path (pathwise) or are drawn
    detached (score function). Estimators with state (running baselines) expose it through
    :meth:`state_dict` / :meth:`load_state_dict`.
    """

    reparameterized: bool = True

    def check(self, objective: Objective) -> None:
        """Raise ``ValueError`` when this estimator cannot serve ``objective``."""

    def surrogate(self, objective: Objective, particles: Particles) -> SurrogateLoss:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
