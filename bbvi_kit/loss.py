"""One callable that turns a model/guide pair, an objective and an estimator into a loss."""

from __future__ import annotations

from typing import Any, Callable

from bbvi_kit.estimators._particles import guess_max_plate_nesting, trace_particles
from bbvi_kit.estimators.base import Estimator, SurrogateLoss
from bbvi_kit.objectives.base import Objective


class BBVILoss:
    """``BBVILoss(model, guide, objective, estimator)(*batch) -> SurrogateLoss``.

    Each call draws K = ``objective.num_particles`` particles in one vectorised pass, computes
    the per-example log weights and lets the estimator build the surrogate. The loss it reports
    is the negative bound in nats per example (the sum over the batch divided by the number of
    examples), so values and gradient norms are comparable across batch sizes; Pyro's own
    ``Trace_ELBO`` reports the sum over the batch instead.

    ``max_plate_nesting`` is guessed from one trace of model and guide on the first call unless
    given (the guess does not consume the random stream).
    """

    def __init__(
        self,
        model: Callable,
        guide: Callable,
        objective: Objective,
        estimator: Estimator,
        max_plate_nesting: int | None = None,
    ) -> None:
        estimator.check(objective)
        self.model = model
        self.guide = guide
        self.objective = objective
        self.estimator = estimator
        self.max_plate_nesting = max_plate_nesting

    def __call__(self, *args: Any, **kwargs: Any) -> SurrogateLoss:
        if self.max_plate_nesting is None:
            self.max_plate_nesting = guess_max_plate_nesting(self.model, self.guide, args, kwargs)
        particles = trace_particles(
            self.model,
            self.guide,
            args,
            kwargs,
            num_particles=self.objective.num_particles,
            max_plate_nesting=self.max_plate_nesting,
            latent_scale=self.objective.latent_scale,
            detach_samples=not self.estimator.reparameterized,
        )
        return self.estimator.surrogate(self.objective, particles)
