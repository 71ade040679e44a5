"""Diagnostic plugins: measurements taken along the training trajectory, outside the step.

A recipe switches them on in its ``diagnostics:`` list, each with its own frequency::

    diagnostics:
      - {name: heldout_iwae, num_samples: 1000}      # every: null -> at each evaluation
      - {name: full_gradient, every: 200}            # at n = 200, 400, ... and the last n
      - {name: full_gradient, every: 200, schedule: stratified}  # one uniform n in each block of 200

Two schedules with ``every`` set (:meth:`Diagnostic.due`):

- ``grid`` (default): after iterations every, 2 every, ... and after the last one.
- ``stratified``: the iterations 1..T are cut into blocks whose widths double from 1 until they
  reach ``every`` (1, 1, 2, 4, ..., every, every, ...; :func:`stratified_block`), so the early
  transient, where the measured curve changes fastest, is sampled densely for log2(every) + 1
  extra measurements; one iteration τ_j is drawn uniformly in each block (from the run's seed, the diagnostic's
  name and j, so a resumed run draws the same ones). The row carries ``block_start`` and
  ``block_end``. A value measured at τ_j, times the block's width, is then an unbiased estimate
  of the block's sum along the trajectory (E_τ f(τ_j) = mean of f over the block), which a grid
  never is for a curve that changes within a block: this is how the average over iterations that
  the theorems bound is estimated without bias (:mod:`bbvi_kit.diagnostics.full_gradient`).

At iteration n (after the optimizer step of n) the engine calls ``measure(context)`` of every
diagnostic that is due, inside a forked random stream seeded from the run's seed, n and the
diagnostic's name, so a diagnostic never shifts the training trajectory; gradients it leaves
behind are cleared. Each diagnostic's rows go to ``diagnostics/<name>.csv`` in the run directory
(columns ``step``, ``epoch``, the values it returns, ``time``). A diagnostic costs nothing
unless it is listed; each documents its cost.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Literal, Sequence

import torch
from pydantic import Field, model_validator
from torch.utils.data import Dataset

from bbvi_kit.data.base import as_args, batch_loader
from bbvi_kit.data.finite import FiniteExamples
from bbvi_kit.diagnostics.training_state import TrainingState, preserved_training_state
from bbvi_kit.plugin import Configurable, PluginOptions

if TYPE_CHECKING:  # pragma: no cover
    from bbvi_kit.findings import Finding
    from bbvi_kit.objectives.base import Objective
    from bbvi_kit.results import Group, Run, Table

__all__ = ["Diagnostic", "DiagnosticContext", "DiagnosticOptions", "TrainingState", "preserved_training_state",
           "run_diagnostic", "stratified_block"]


class DiagnosticOptions(PluginOptions):
    """Options every diagnostic has."""

    every: int | None = Field(
        None, ge=1, le=10**10,
        description="run every this many iterations (grid: and at the end; stratified: once in each block of this "
        "many); null: at each evaluation"
    )
    schedule: Literal["grid", "stratified"] = Field(
        "grid", description="grid: at every, 2 every, ... and the end; stratified: at one uniformly random "
        "iteration in each block of `every` iterations"
    )

    @model_validator(mode="after")
    def _stratified_needs_every(self) -> "DiagnosticOptions":
        if self.schedule == "stratified" and self.every is None:
            raise ValueError("schedule: stratified needs `every` (the width of each block of iterations)")
        return self


@dataclass
class DiagnosticContext:
    """What a diagnostic may look at: the training state (:class:`TrainingState`: the loss, the
    parameter groups, the modules, the device, the batch sizes, and :meth:`~TrainingState.isolated`),
    the data, and where training is."""

    training: TrainingState
    train: Dataset
    test: Dataset | None
    step: int
    epoch: int
    block: tuple[int, int] | None = None  # stratified schedule: the block (first, last iteration) measured

    @property
    def device(self) -> torch.device:
        return self.training.device

    def batches(self, dataset: Dataset, batch_size: int, *, shuffle: bool = False,
                generator: torch.Generator | None = None) -> Iterator[tuple]:
        """Mini-batches of ``dataset`` as model arguments on the training device. Examples with a
        non-finite value follow ``training.on_nonfinite`` (:mod:`bbvi_kit.data.finite`): a one-line
        error naming the split and the example, or left out (the evaluation rows count them)."""
        split = "test" if dataset is self.test else "train" if dataset is self.train else "given"
        finite = FiniteExamples(split, skip=self.training.on_nonfinite == "skip",
                                shuffled_from=dataset if shuffle else None)
        loader = batch_loader(dataset, batch_size, shuffle=shuffle, generator=generator)
        yield from finite(tuple(a.to(self.device) if isinstance(a, torch.Tensor) else a for a in as_args(batch))
                          for batch in loader)


class Diagnostic(Configurable):
    """A measurement of the training state; subclass, give ``Options`` (a subclass of
    :class:`DiagnosticOptions`) and register with ``@register_diagnostic("name")``.

    ``measure`` returns ``{column: value}``; columns are fixed for a diagnostic (the first row
    sets them). It may run forward and backward passes; it must not step the optimizer.
    """

    Options = DiagnosticOptions
    options: DiagnosticOptions

    def measure(self, context: DiagnosticContext) -> dict[str, float]:
        raise NotImplementedError

    def check(self, objective: "Objective", key: str) -> None:
        """Raise :class:`bbvi_kit.errors.InputError` (naming ``key``, the recipe's
        ``diagnostics.<i>``) when the options cannot serve the run's ``objective``; called when a
        recipe is read, so that a run does not fail at its first measurement. Default: nothing."""

    def state_dict(self) -> dict[str, Any]:
        """What this diagnostic carries from one measurement to the next (tensors, numbers,
        lists and dicts only), saved in checkpoints; most diagnostics carry nothing."""
        return {}

    def load_state_dict(self, state: dict[str, Any], training: TrainingState) -> None:
        """Restore :meth:`state_dict` for a resumed run whose training state is ``training``."""

    def block(self, step: int, total: int) -> tuple[int, int] | None:
        """Under ``schedule: stratified``, the block of iterations (first, last) holding ``step``
        of a run of ``total`` iterations; ``None`` under the other schedules."""
        every = self.options.every
        if self.options.schedule != "stratified" or every is None:
            return None
        return stratified_block(step, total, every)

    def due(self, step: int, *, evaluating: bool, total: int, seed: int) -> bool:
        """Whether to measure after iteration ``step`` of ``total``, in the engine's pass after an
        evaluation (``evaluating``) or after the step: ``every: null`` at each evaluation; the
        ``grid`` schedule every ``every`` iterations and at the last; the ``stratified`` one at
        the iteration drawn for the step's block with ``seed`` (module docstring)."""
        every = self.options.every
        if every is None or evaluating:
            return every is None and evaluating
        block = self.block(step, total)
        if block is None:
            return step % every == 0 or step == total
        first, last = block
        cached = getattr(self, "_drawn", None)  # (seed, first, drawn): one draw per block, not per step
        if cached is None or cached[:2] != (seed, first):
            cached = self._drawn = (seed, first, random.Random(f"{seed}:{first}").randint(first, last))
        return step == cached[2]


    # -- what the report says about this diagnostic's rows (bbvi_kit.report) ------------------
    @classmethod
    def headline(cls, table: "Table") -> str | None:
        """The column of ``diagnostics/<name>.csv`` whose first and last values the report states
        in one sentence: the class's ``headline_column`` when ``table`` has it; ``None`` (the
        report then takes the first value column) otherwise."""
        column = getattr(cls, "headline_column", None)
        return column if column is not None and column in table.columns else None

    @classmethod
    def findings(cls, table: "Table", run: "Run", label: str = "") -> list["Finding"]:
        """Sentences about one run's rows ``table`` of this diagnostic, beyond the report's generic
        ones (the headline's trend, values that are not finite). ``run``: the run directory as
        read (recipe, ``run.json``, ``metrics.csv``, ...); ``label``: what to start each sentence
        with (``"point K=1"``; empty for the run of a run report). Default: none."""
        return []

    @classmethod
    def sweep_findings(cls, name: str, groups: Sequence["Group"]) -> list["Finding"]:
        """Sentences about the runs of a sweep that recorded diagnostic ``name``, listed with its
        per-point final values; ``groups``: the sweep's points, each with its runs. Default: none."""
        return []

    @classmethod
    def comparison_findings(cls, name: str, groups: Sequence["Group"]) -> list["Finding"]:
        """Sentences comparing the points of a sweep (e.g. a trend against K), listed after
        every diagnostic's own. Default: none."""
        return []


def stratified_block(step: int, total: int, every: int) -> tuple[int, int]:
    """The block (first, last iteration) holding ``step`` (1 ≤ step ≤ total) when 1..total is cut
    into blocks of widths 1, 1, 2, 4, ... doubling up to ``every``, then ``every`` each (the last
    one cut at ``total``): block k + 1 starts after e_k and is min(every, max(1, e_k)) wide."""
    end = 0
    while True:
        width = min(every, max(1, end))
        if width == every:  # from here on, blocks of ``every``
            first = end + 1 + (step - end - 1) // every * every
            return first, min(first + every - 1, total)
        if step <= end + width:
            return end + 1, min(end + width, total)
        end += width


def run_diagnostic(diagnostic: Diagnostic, context: DiagnosticContext, seed: int) -> dict[str, Any]:
    """``diagnostic.measure(context)`` inside :meth:`TrainingState.isolated` (a forked random
    stream seeded with ``seed``; afterwards every gradient it left is cleared, and the modules'
    training mode and buffers and the estimator's state are as before); values as numbers."""
    with context.training.isolated(seed):
        values = diagnostic.measure(context)
    return {k: v if isinstance(v, int) and not isinstance(v, bool) else float(v) for k, v in values.items()}
