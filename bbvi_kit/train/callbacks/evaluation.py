"""Periodic evaluation: the test set's negative ELBO and negative training objective.

Every ``training.eval_every`` steps (default: at each epoch's end) and after the last step, the
metrics are flushed and ``evaluate(dataset, seed, split)`` gives ``test_loss`` and
``test_objective_loss`` (with ``training.eval_train``, the training set's too), evaluated in a
forked random stream seeded with ``training.seed + step`` so that evaluating never shifts the
training run. ``reference`` values (e.g. an exact pPCA negative log-likelihood) add a
``<column>_gap`` column. Rows go to ``History.evals`` and ``eval.csv``.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from torch.utils.data import Dataset

from bbvi_kit.config import TrainingOptions
from bbvi_kit.infer.bbvi import StepResult
from bbvi_kit.runs import RunDirectory
from bbvi_kit.train.callback import Callback, LoopState
from bbvi_kit.train.history import History

Evaluate = Callable[..., dict[str, float]]
"""``evaluate(dataset, seed=..., split=...)``: one evaluation row's values (see
:meth:`bbvi_kit.engine.Trainer.evaluate`)."""


class Evaluation(Callback):
    """Evaluates on ``test`` (and ``train`` with ``eval_train``) when due; :attr:`evaluated_now`
    says whether it did after the step just taken (diagnostics with ``every: null`` follow it)."""

    def __init__(self, evaluate: Evaluate, train: Dataset, test: Dataset | None, options: TrainingOptions,
                 history: History, run: RunDirectory | None, reference: Mapping[str, float] | None = None) -> None:
        self.evaluate = evaluate
        self.train = train
        self.test = test
        self.options = options
        self.history = history
        self.run = run
        self.reference = dict(reference or {})
        self.last_eval_step = -1
        self.evaluated_now = False

    def on_step(self, loop: LoopState, result: StepResult) -> None:
        every = self.options.eval_every
        self.evaluated_now = False
        if (every is not None and loop.step % every == 0) or (every is None and loop.epoch_end) or loop.last:
            self._evaluate(loop)

    def _evaluate(self, loop: LoopState) -> None:
        if self.test is None or self.last_eval_step == loop.step:
            return
        loop.flush()
        seed = self.options.seed + loop.step
        row: dict[str, float] = {"step": loop.step, "epoch": loop.epoch, **self.evaluate(self.test, seed=seed)}
        if self.options.eval_train:
            row.update(self.evaluate(self.train, seed=seed, split="train"))
        for column, exact in self.reference.items():
            if column in row:
                row[f"{column}_gap"] = row[column] - exact
        row["time"] = loop.elapsed()
        self.history.evals.append(row)
        if self.run is not None:
            self.run.evals.write([row])
        self.last_eval_step = loop.step
        self.evaluated_now = True

    def state_dict(self) -> dict[str, Any]:
        return {"last_eval_step": self.last_eval_step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.last_eval_step = int(state["last_eval_step"])
