"""Diagnostics when due: the recipe's diagnostic plugins, measured between steps.

After each step (and after each evaluation, for diagnostics with ``every: null``) every
diagnostic that is due (:meth:`bbvi_kit.diagnostics.Diagnostic.due`) measures the training state
through its narrow view (:class:`bbvi_kit.diagnostics.TrainingState`) inside a forked random
stream seeded from the run's seed, the step and its name, so it never shifts the trajectory
(:func:`bbvi_kit.diagnostics.run_diagnostic`). The metrics are flushed first, so that a step found
non-finite at flush stops the run before anything measures it. Rows go to
``History.diagnostics[name]`` and ``diagnostics/<name>.csv``. A diagnostic's own state (carried
from one measurement to the next) is saved by the trainer with the step's state.
"""

from __future__ import annotations

import zlib
from typing import Mapping

from torch.utils.data import Dataset

from bbvi_kit.diagnostics.base import Diagnostic, DiagnosticContext, TrainingState, run_diagnostic
from bbvi_kit.errors import BBVIError
from bbvi_kit.infer.bbvi import StepResult
from bbvi_kit.infer.failures import failed_at
from bbvi_kit.runs import RunDirectory
from bbvi_kit.train.callback import Callback, LoopState
from bbvi_kit.train.history import History
from bbvi_kit.train.callbacks.evaluation import Evaluation


class Diagnostics(Callback):
    """Runs ``diagnostics`` (name -> plugin) when due, seeded from ``seed`` (the run's)."""

    def __init__(self, diagnostics: Mapping[str, Diagnostic], training: TrainingState, train: Dataset,
                 test: Dataset | None, seed: int, history: History, run: RunDirectory | None,
                 evaluation: Evaluation | None = None) -> None:
        self.diagnostics = dict(diagnostics)
        self.training = training
        self.train = train
        self.test = test
        self.seed = seed
        self.history = history
        self.run = run
        self.evaluation = evaluation

    def on_step(self, loop: LoopState, result: StepResult) -> None:
        if self.evaluation is not None and self.evaluation.evaluated_now:
            self._measure_due(loop, evaluating=True)
        self._measure_due(loop, evaluating=False)

    def _measure_due(self, loop: LoopState, evaluating: bool) -> None:
        due = [(name, d) for name, d in self.diagnostics.items() if d.due(
            loop.step, evaluating=evaluating, total=loop.total, seed=self.seed * 1_000_003 + zlib.crc32(name.encode()))]
        if due:
            loop.flush()  # a step found non-finite at flush stops the run before anything measures it
        for name, diagnostic in due:
            block = diagnostic.block(loop.step, loop.total)
            context = DiagnosticContext(self.training, self.train, self.test, loop.step, loop.epoch, block)
            seed = (self.seed * 1_000_003 + loop.step * 7_919 + zlib.crc32(name.encode())) % 2**63
            try:
                values = run_diagnostic(diagnostic, context, seed)
            except BBVIError:
                raise
            except Exception as exc:
                raise failed_at(loop.step, loop.epoch, f"diagnostic {name}", exc) from exc
            where = {"block_start": block[0], "block_end": block[1]} if block is not None else {}
            row = {"step": loop.step, "epoch": loop.epoch, **where, **values, "time": loop.elapsed()}
            self.history.diagnostics.setdefault(name, []).append(row)
            if self.run is not None:
                self.run.diagnostic_log(name).write([row])
