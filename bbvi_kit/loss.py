"""One callable that turns a model/guide pair, an objective and an estimator into a loss."""

from __future__ import annotations

import warnings
from typing import Any, Callable

from bbvi_kit import rng_state
from bbvi_kit.errors import InputError
from bbvi_kit.estimators._examples import Examples, ExamplesSpec, warn_if_per_batch
from bbvi_kit.estimators._particles import Particles, first_line, guess_max_plate_nesting, trace_particles
from bbvi_kit.estimators.base import Estimator, SurrogateLoss
from bbvi_kit.estimators.split import PerGroup
from bbvi_kit.objectives.base import Objective


class BBVILoss:
    """``BBVILoss(model, guide, objective, estimator)(*batch) -> SurrogateLoss``.

    Each call draws K = ``objective.num_particles`` particles in one vectorised pass, computes
    the per-example log weights and lets the estimator build the surrogate. The loss it reports
    is the negative bound in nats per example (the sum over the batch divided by the number of
    examples, see :mod:`bbvi_kit.estimators._examples`), so values and gradient norms are
    comparable across batch sizes; Pyro's own ``Trace_ELBO`` reports the sum over the batch.

    The first call checks the pair as Pyro's ELBOs do under validation (model and guide shapes
    agree at every site; each site's shape matches its plates), refuses what the estimator cannot
    serve in one line naming the site, and finds out whether the model broadcasts over the
    leftmost particle dimension; where it does not, the K particles are drawn in a loop of K
    passes from then on (a warning names the site). ``max_plate_nesting`` is guessed on that
    call unless given (the guess does not consume the random stream).

    ``step`` (set by :class:`bbvi_kit.infer.bbvi.BBVI` before each training step) is the step whose
    latent scale a scheduled objective uses (beta warm-up); ``None`` gives the objective's target.

    Estimator ``split`` (:class:`bbvi_kit.estimators.split.PerGroup`) draws two passes, one per
    parameter group, each a loss of its own (:attr:`parts`), and combines their gradients.

    ``examples`` chooses the divisor: ``None`` (the data plate, found), a plate name or a number.
    """

    def __init__(
        self,
        model: Callable,
        guide: Callable,
        objective: Objective,
        estimator: Estimator,
        max_plate_nesting: int | None = None,
        examples: ExamplesSpec = None,
    ) -> None:
        estimator.check(objective)
        self.model = model
        self.guide = guide
        self.objective = objective
        self.estimator = estimator
        self.max_plate_nesting = max_plate_nesting
        self.examples_spec = examples
        self.examples: Examples | None = None  # found on the first call
        self.vectorise = True
        self._checked = False
        self.step: int | None = None  # the training step, for a scheduled objective; None: its target
        self.parts: tuple[BBVILoss, BBVILoss] | None = None  # estimator split: the phi and theta passes
        if isinstance(estimator, PerGroup):
            self.parts = (BBVILoss(model, guide, estimator.phi_objective(objective), estimator.phi, max_plate_nesting,
                                   examples),
                          BBVILoss(model, guide, objective, estimator.theta, max_plate_nesting, examples))

    def particles(self, *args: Any, **kwargs: Any) -> Particles:
        """The particles of one pass (checked on the first call; see the class docstring); with
        estimator ``split``, those of the theta pass."""
        if self.parts is not None:
            return self._part(1, args, kwargs).particles
        if self.max_plate_nesting is None:
            self.max_plate_nesting = guess_max_plate_nesting(self.model, self.guide, args, kwargs)
        options: dict[str, Any] = dict(num_particles=self.objective.num_particles, max_plate_nesting=self.max_plate_nesting,
                       policy=self.estimator.site_policy(), latent_scale=self.objective.latent_scale_at(self.step),
                       examples=self.examples_spec, held_log_q_in_bound=not self.objective.linear_in_log_weights,
                       analytic_kl=self.objective.analytic_kl, **self.estimator.particle_options())
        if self._checked:
            return trace_particles(self.model, self.guide, args, kwargs, vectorise=self.vectorise, **options)
        start = rng_state.capture()
        try:
            particles = trace_particles(self.model, self.guide, args, kwargs, check=True, **options)
        except (InputError, RuntimeError, ValueError) as vectorised_error:
            if self.objective.num_particles == 1:
                raise
            # Does one particle work? Then the model cannot broadcast over the particle dim.
            rng_state.restore(start)
            trace_particles(self.model, self.guide, args, kwargs, check=True, **dict(options, num_particles=1))
            rng_state.restore(start)  # the loop draws what Pyro's sequential particles would
            particles = trace_particles(self.model, self.guide, args, kwargs, vectorise=False, **options)
            self.vectorise = False
            warnings.warn(
                "bbvi-kit: the model does not broadcast over a leftmost particle dimension "
                f"({first_line(vectorised_error)}); its {self.objective.num_particles} particles are drawn in a loop "
                "of single-particle passes (that many times the cost of one). Let every tensor op accept "
                "extra leading batch dims (e.g. x @ w.T -> (x @ w.transpose(-1, -2)), .t() -> .transpose(-1, -2))",
                UserWarning, stacklevel=2,
            )
        self.examples = particles.examples
        warn_if_per_batch(particles.examples, self.examples_spec)
        self._checked = True
        return particles

    def __call__(self, *args: Any, **kwargs: Any) -> SurrogateLoss:
        if self.parts is not None:
            assert isinstance(self.estimator, PerGroup)
            phi = self.estimator.guide_gradient(self._part(0, args, kwargs))
            return self.estimator.combine(phi, self._part(1, args, kwargs))
        return self.estimator.surrogate(self.objective, self.particles(*args, **kwargs))

    def _part(self, index: int, args: tuple, kwargs: dict) -> SurrogateLoss:
        """Pass ``index`` of estimator split (0: phi's, 1: theta's) at this loss's step."""
        assert self.parts is not None
        part = self.parts[index]
        part.step = self.step
        result = part(*args, **kwargs)
        if index == 1:
            self.examples, self.max_plate_nesting = part.examples, part.max_plate_nesting
        return result
