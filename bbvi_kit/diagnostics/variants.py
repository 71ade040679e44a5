"""One gradient diagnostic measured under several estimators and numbers of particles K, on the
same parameters, the same mini-batch and (where the estimators draw alike) the same latent noise.

A run trains under one estimator and one K; whether another would give the encoder more signal
is a question about the *same* point of the trajectory, free of the differences between runs.
``snr`` and ``gradient_noise`` take ``estimators: [pathwise, stl, dreg]`` and ``num_particles:
[k1, k2, ...]``: after the run's own measurement, each variant is measured again from the same
random state inside :meth:`~bbvi_kit.diagnostics.training_state.TrainingState.measuring`, and
its columns get a suffix, ``_<estimator>`` and/or ``_K<k>`` (``snr_phi_dreg_K16``). The
reparameterised estimators draw eps in the same order, so their variants are compared on common
random numbers: the differences between them are the estimators', not the draws'.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from pydantic import ValidationError

from bbvi_kit.diagnostics.base import DiagnosticContext
from bbvi_kit.errors import InputError
from bbvi_kit.estimators.base import Estimator
from bbvi_kit.objectives.base import Objective
from bbvi_kit.plugin import validation_error_line
from bbvi_kit.registry import estimators as estimator_registry

Measure = Callable[[DiagnosticContext], dict[str, float]]


def build_estimators(names: Sequence[str], objective: Objective, key: str) -> list[tuple[str, Estimator]]:
    """The estimator plugins ``names`` with their default options, each checked against
    ``objective``; an unknown name or an estimator that cannot serve the objective is one
    :class:`InputError` line naming ``key`` (e.g. ``diagnostics.snr.estimators``)."""
    built = []
    for name in names:
        try:
            estimator = estimator_registry.get(name, key=key)()
        except ValidationError as exc:  # (split: its options have no defaults)
            problems = validation_error_line(exc)
            raise InputError(f"{key}: estimator {name} needs options ({problems}); name estimators that have defaults") \
                from None
        try:
            estimator.check(objective)
        except ValueError as exc:
            raise InputError(f"{key}: {exc}") from None
        built.append((name, estimator))
    return built


def measure_variants(context: DiagnosticContext, measure: Measure, *, estimators: Sequence[str] = (),
                     num_particles: Sequence[int] = (), keep: Callable[[str], bool] = lambda column: True,
                     key: str = "estimators") -> dict[str, float]:
    """``measure(context)`` for the run's own loss, then once per variant (each estimator of
    ``estimators`` with the run's K and with each K of ``num_particles``, and the run's estimator
    at each K), each from the random state the first one started from; the variants' columns that
    ``keep`` accepts are added with their suffix (module docstring)."""
    training = context.training
    cuda = [training.device.index or 0] if training.device.type == "cuda" else []
    start = torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in cuda]
    out = measure(context)
    built: list[tuple[str, Estimator | None]] = [("", None)]
    built += build_estimators(estimators, training.objective, key)
    for label, estimator in built:
        for k in [None, *num_particles]:
            if estimator is None and k is None:
                continue  # the run's own, measured above
            torch.set_rng_state(start[0])
            for device, state in zip(cuda, start[1]):
                torch.cuda.set_rng_state(state, device)
            with training.measuring(estimator=estimator, num_particles=k):
                values = measure(context)
            suffix = (f"_{label}" if label else "") + (f"_K{k}" if k is not None else "")
            out.update({f"{column}{suffix}": value for column, value in values.items() if keep(column)})
    return out
