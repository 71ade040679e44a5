"""What a diagnostic sees of training: a narrow, read-mostly view of the step, not the trainer.

A diagnostic measures the training state between two steps (gradient noise, the full-data
gradient, held-out bounds). It needs the loss it may evaluate and differentiate, the parameter
groups, the modules, the device and a few sizes; and it must leave no trace on the run. The view
gives exactly that, and :meth:`TrainingState.isolated` is the no-trace guarantee: a forked random
stream, the estimator state (running baselines) and module buffers (batch-norm statistics) put
back, training modes restored, gradients cleared.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator

import torch
from torch import nn

from bbvi_kit.pass_state import PassState

if TYPE_CHECKING:  # pragma: no cover
    from bbvi_kit.config import TrainingOptions
    from bbvi_kit.estimators.base import Estimator
    from bbvi_kit.infer.bbvi import BBVI
    from bbvi_kit.loss import BBVILoss
    from bbvi_kit.objectives.base import Objective
    from bbvi_kit.parameters import GroupsFn


class TrainingState:
    """The training state a diagnostic may look at, read live from the :class:`BBVI` step.

    Attributes (properties): ``loss`` (:class:`bbvi_kit.loss.BBVILoss`: the training objective
    with its K particles under its estimator; a diagnostic may call and differentiate it),
    ``objective``, ``model``, ``guide``, ``groups`` (name -> parameters; empty before the first
    step), ``parameters``, ``declared_groups`` (the plugin's ``parameter_groups``, or ``None``),
    ``modules``, ``device``; and the options ``batch_size``, ``eval_batch_size`` and
    ``on_nonfinite`` of the run.
    """

    def __init__(self, bbvi: "BBVI", options: "TrainingOptions") -> None:
        self._bbvi = bbvi
        self.options = options  # (the trainer replaces it when its options are replaced)

    @property
    def batch_size(self) -> int:
        return self.options.batch_size

    @property
    def eval_batch_size(self) -> int:
        return self.options.eval_batch_size

    @property
    def on_nonfinite(self) -> str:
        return self.options.on_nonfinite

    @property
    def loss(self) -> "BBVILoss":
        return self._bbvi.loss

    @property
    def objective(self) -> "Objective":
        return self._bbvi.loss.objective

    @property
    def model(self) -> Callable:
        return self._bbvi.model

    @property
    def guide(self) -> Callable:
        return self._bbvi.guide

    @property
    def groups(self) -> dict[str, list[torch.Tensor]]:
        return self._bbvi.groups

    @property
    def parameters(self) -> list[torch.Tensor]:
        return self._bbvi.parameters

    @property
    def declared_groups(self) -> GroupsFn | None:
        return self._bbvi.param_groups.declared

    @property
    def modules(self) -> list[nn.Module]:
        return self._bbvi.modules

    @property
    def device(self) -> torch.device:
        return self._bbvi.device

    @contextmanager
    def measuring(self, *, estimator: "Estimator | None" = None, num_particles: int | None = None) -> Iterator[None]:
        """Inside, :attr:`loss` is the training loss with ``estimator`` in place of the run's
        and/or K = ``num_particles`` in place of the objective's (the same model, guide, plates
        and step), so that a diagnostic can compare estimators or K on the same parameters and
        batch; the run's own loss is back on exit. A new estimator is checked against the
        objective (``ValueError``), and its first pass makes the shape and site checks of a
        first training step (refusing, in one line naming the site, what it cannot serve)."""
        from bbvi_kit.loss import BBVILoss

        bbvi = self._bbvi
        original = bbvi.loss
        objective = original.objective
        if num_particles is not None:
            objective = type(objective)(**{**objective.options.model_dump(), "num_particles": num_particles})
        if estimator is None and original.parts is None:
            swapped = copy.copy(original)  # the checks made, the model's broadcasting found
            swapped.objective = objective
        else:  # (estimator split: its parts are built for the objective)
            estimator = estimator or original.estimator
            estimator.check(objective)
            swapped = BBVILoss(original.model, original.guide, objective, estimator, original.max_plate_nesting,
                               original.examples_spec)
            swapped.step = original.step
        bbvi.loss = swapped
        try:
            yield
        finally:
            bbvi.loss = original

    @contextmanager
    def isolated(self, seed: int) -> Iterator[dict[str, Any]]:
        """Passes inside leave no trace on the run: the random streams are forked and seeded
        with ``seed``; the estimator state and module buffers are saved and put back
        (:func:`preserved_training_state`, whose saved estimator state this yields); the
        modules' training modes are restored and every gradient left is cleared."""
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        modes = [m.training for m in self.modules]
        try:
            with torch.random.fork_rng(devices=devices), preserved_training_state(self) as saved:
                torch.manual_seed(seed)
                yield saved
        finally:
            for p in self.parameters:
                p.grad = None
            for m, mode in zip(self.modules, modes):
                m.train(mode)


@contextmanager
def preserved_training_state(state: Any) -> Iterator[dict]:
    """Run forward/backward passes of the training objective without changing the run.

    ``state`` is anything with ``loss`` and ``modules`` (a :class:`TrainingState`, a
    :class:`BBVI` step). Saves the estimator's state (e.g. the score-function ``running_mean``
    baseline, which every call of ``state.loss`` would otherwise advance) and the modules'
    buffers (batch-norm running statistics, updated by every forward pass in train mode), and
    restores both on exit. Yields the saved estimator state, which
    :func:`bbvi_kit.diagnostics.gradients.batch_gradient` reloads before each pass so that every
    pass inside a diagnostic uses the training run's current baseline, not one moved by the
    diagnostic's own earlier passes (that would correlate the passes).
    """
    saved = PassState(state)
    try:
        yield saved.estimator_state
    finally:
        saved.restore()
