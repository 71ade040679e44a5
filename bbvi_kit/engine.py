"""The training loop: epochs of :class:`bbvi_kit.infer.BBVI` steps, with evaluation, diagnostics,
checkpoints and the progress bar.

One iteration n (1-based): draw a mini-batch and take one :meth:`BBVI.step` on it (surrogate
loss, backward, squared gradient norms before clipping, the finite-or-skip decision, the update);
record its loss and norms (:class:`bbvi_kit.step_log.StepLog`, which keeps the running average
(1/n) sum_k ||g_k||^2 — the quantity Surendran et al. (AISTATS 2025) bound by O(log n / sqrt n));
apply ``training.on_nonfinite``; every ``eval_every`` iterations (default: each epoch's end) and
at the end, evaluate on the test set; run the diagnostics that are due; write a checkpoint when
one is due.

Losses are negative bounds in nats per example (mean over the batch). Recorded values are kept as
tensors on the device and moved to the host in one transfer per flush, so the loop itself does
not synchronise with the host except for the finiteness check.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Mapping, Sequence, Sized, cast

import torch
from torch import nn
from torch.utils.data import Dataset

from bbvi_kit import distributed, rng_state
from bbvi_kit.checkpoint import Checkpoints
from bbvi_kit.config import TrainingOptions
from bbvi_kit.data.base import as_args, batch_loader
from bbvi_kit.data.finite import FiniteExamples
from bbvi_kit.devices import to_device, to_device_tree
from bbvi_kit.diagnostics.base import Diagnostic, TrainingState
from bbvi_kit.errors import InputError
from bbvi_kit.estimators._examples import ExamplesSpec
from bbvi_kit.estimators.base import Estimator
from bbvi_kit.infer.bbvi import BBVI
from bbvi_kit.objectives.base import Objective
from bbvi_kit.optim import OptimizerPlugin, Schedule
from bbvi_kit.parameters import GroupsFn
from bbvi_kit.runs import RunDirectory
from bbvi_kit.train import loop as train_loop
from bbvi_kit.train.callback import Callback
from bbvi_kit.train.callbacks import Checkpointing, Diagnostics, Evaluation, MetricsLog, ProgressBar
from bbvi_kit.train.history import History

__all__ = ["History", "Trainer", "TrainingOptions", "count_parameters"]


class Trainer:
    """Trains a Pyro model/guide pair by black-box variational inference.

    Args:
        model, guide: Pyro programs taking the batch tensors as positional arguments.
        objective: e.g. ``ELBO(num_particles=1)``, ``IWAE(num_particles=5)``, ``BetaELBO(beta=4)``.
        estimator: ``Pathwise()`` or ``ScoreFunction(baseline=...)``.
        optimizer: e.g. ``Adam(lr=1e-3)`` or ``SGD(lr=1e-2, momentum=0.9)``.
        schedule: step-size schedule (default constant).
        training: batch size, epochs, seed, device, recording and evaluation frequency.
        parameter_groups: optional callable returning named groups of parameters (e.g. a model
            plugin's ``parameter_groups``); by default the groups follow the traces on every step
            (see :mod:`bbvi_kit.parameters`): what the guide uses is ``phi``, what only the model
            uses ``theta``, and a parameter created after the first step joins the optimizer then.
        modules: ``nn.Module``s to move to the device and switch between train and eval mode
            (model/guide that are modules or bound methods of one are found automatically).
        max_plate_nesting: batch dims used by the model's plates; guessed when ``None``.
        examples: what per-example values divide by: ``None`` (the data plate, the outermost plate
            around every observed site), a plate name, or a number (see
            :mod:`bbvi_kit.estimators._examples`); written to ``run.json`` as ``examples``.
        reference: exact values of evaluation columns (e.g. ``{"train_loss": exact pPCA negative
            log-likelihood}``); each evaluation then also records ``<column>_gap`` = value - exact.
        diagnostics: named :class:`~bbvi_kit.diagnostics.Diagnostic` plugins, measured when due
            (see :mod:`bbvi_kit.diagnostics.base`); their rows go to ``History.diagnostics[name]``
            and ``diagnostics/<name>.csv`` of the run directory.

    Example::

        trainer = Trainer(model, guide, objective=ELBO(), estimator=Pathwise(),
                          optimizer=Adam(lr=1e-2), training=TrainingOptions(epochs=5))
        history = trainer.fit(train_dataset, test_dataset)
        history.metrics[-1]["minibatch_grad_norm_sq_avg"]
    """

    def __init__(
        self,
        model: Callable,
        guide: Callable,
        *,
        objective: Objective,
        estimator: Estimator,
        optimizer: OptimizerPlugin,
        schedule: Schedule | None = None,
        training: TrainingOptions | None = None,
        parameter_groups: GroupsFn | None = None,
        modules: Iterable[nn.Module] = (),
        max_plate_nesting: int | None = None,
        examples: ExamplesSpec = None,
        reference: Mapping[str, float] | None = None,
        diagnostics: Mapping[str, Diagnostic] | None = None,
    ) -> None:
        self.model = model
        self.guide = guide
        self.objective = objective
        self.estimator = estimator
        self.optimizer_plugin = optimizer
        self._training = training or TrainingOptions()
        self.reference = dict(reference or {})
        self.diagnostics = dict(diagnostics or {})
        for name, diagnostic in self.diagnostics.items():  # before any step (a recipe checked them when read)
            diagnostic.check(objective, f"diagnostics.{name}")
        opts = self._training
        self.bbvi = BBVI(model, guide, objective, estimator, optimizer, schedule=schedule, grad_clip=opts.grad_clip,
                         on_nonfinite=opts.on_nonfinite, nonfinite_check=opts.nonfinite_check, precision=opts.precision,
                         parameter_groups=parameter_groups, modules=modules, max_plate_nesting=max_plate_nesting,
                         examples=examples, device=opts.device)
        self.device = self.bbvi.device
        self.modules = self.bbvi.modules
        self.param_groups = self.bbvi.param_groups
        self.loss = self.bbvi.loss
        self.training_state = TrainingState(self.bbvi, opts)  # what diagnostics see

    @property
    def training(self) -> TrainingOptions:
        return self._training

    @training.setter
    def training(self, value: TrainingOptions) -> None:
        self._training = self.training_state.options = value

    # The step's state lives in :attr:`bbvi`; these read it (and let a test set it).
    @property
    def step(self) -> int:
        """The number of steps taken (n after step n)."""
        return self.bbvi.num_steps

    @step.setter
    def step(self, value: int) -> None:
        self.bbvi.num_steps = value

    @property
    def schedule(self) -> Schedule:
        return self.bbvi.schedule

    @schedule.setter
    def schedule(self, value: Schedule) -> None:
        self.bbvi.schedule = value

    @property
    def optimizer(self) -> torch.optim.Optimizer | None:
        return self.bbvi.optimizer

    @property
    def groups(self) -> dict[str, list[torch.Tensor]]:
        return self.bbvi.groups

    @groups.setter
    def groups(self, value: dict[str, list[torch.Tensor]]) -> None:
        self.bbvi.groups = value

    @property
    def parameters(self) -> list[torch.Tensor]:
        return self.bbvi.parameters

    @parameters.setter
    def parameters(self, value: list[torch.Tensor]) -> None:
        self.bbvi.parameters = value

    # -- evaluation -------------------------------------------------------------------------
    def evaluate(self, dataset: Dataset, seed: int, split: str = "test") -> dict[str, float]:
        """Negative ELBO (one particle) and negative training objective on ``dataset``, per example,
        as ``{split}_loss`` and ``{split}_objective_loss``.

        Runs in eval mode, without gradients, inside a forked RNG seeded with ``seed`` so that
        evaluating never shifts the training run's random stream. Examples with a non-finite value
        follow ``training.on_nonfinite`` (:mod:`bbvi_kit.data.finite`): a one-line error naming the
        split and the example, or left out, with their number in ``{split}_nonfinite_examples``.
        """
        for m in self.modules:
            m.eval()
        count = 0
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            torch.manual_seed(seed)
            sums = torch.zeros(2, device=self.device, dtype=torch.float64)
            loader = batch_loader(
                dataset, self.training.eval_batch_size, shuffle=False, num_workers=self.training.num_workers
            )
            finite = FiniteExamples(split, skip=self.training.on_nonfinite == "skip")
            for args in finite(to_device(as_args(batch), self.device) for batch in loader):
                n = len(args[0])
                sums[0] += self.bbvi.elbo_value(*args).loss.double() * n
                sums[1] += self.bbvi.objective_value(*args).loss.double() * n
                count += n
            values = (sums / count).tolist() if count else [math.nan, math.nan]
        for m in self.modules:
            m.train()
        row = {f"{split}_loss": values[0], f"{split}_objective_loss": values[1]}
        if finite.skip:
            row[f"{split}_nonfinite_examples"] = finite.left_out
        return row

    # -- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The step's state (:meth:`BBVI.state_dict`: step, parameters by key, buffers,
        optimizer and estimator), the diagnostics' state and every RNG state. :meth:`fit` adds
        the loop's position and running sums when it writes a checkpoint."""
        return {
            **self.bbvi.state_dict(),
            "diagnostics": {name: to_device_tree(d.state_dict(), torch.device("cpu"))
                            for name, d in self.diagnostics.items()},
            "rng": rng_state.capture(),
        }

    def restore(self, state: Mapping[str, Any], train_data: Dataset) -> None:
        """Restore a checkpoint's :meth:`state_dict` before :meth:`fit` resumes from it (``fit``
        calls this itself when it was not done); passes over the training batches (in data order)
        create the parameters. A state that does not fit this model is an :class:`InputError`."""
        self.load_state_dict(state, train_loop.batches_in_data_order(train_data, self.training.batch_size))

    def load_state_dict(self, state: Mapping[str, Any], batches: Iterable[tuple]) -> None:
        """Restore :meth:`state_dict`: the step's state from passes over ``batches``
        (:meth:`BBVI.load_state_dict`; a run whose first batch in data order holds a NaN, skipped
        under ``on_nonfinite: skip``, resumes), then the diagnostics' and the RNG states. A state
        that does not fit this run is an :class:`InputError`."""
        self.bbvi.load_state_dict(state, batches)
        try:
            saved_diagnostics = state["diagnostics"]
            if set(saved_diagnostics) != set(self.diagnostics):
                raise ValueError("the recipe's diagnostics differ from the checkpoint's")
            for name, diagnostic in self.diagnostics.items():
                diagnostic.load_state_dict(to_device_tree(saved_diagnostics[name], self.device), self.training_state)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise InputError(f"the checkpoint does not fit this run: {type(exc).__name__}: {exc}") from None
        rng_state.restore(state["rng"])

    # -- the loop ---------------------------------------------------------------------------
    def fit(
        self,
        train_data: Dataset,
        test_data: Dataset | None = None,
        run: RunDirectory | None = None,
        *,
        resume: Mapping[str, Any] | None = None,
        history: History | None = None,
        callbacks: Sequence[Callback] = (),
    ) -> History:
        """Train; returns the recorded :class:`History` (and streams it into ``run`` if given).

        The loop is :func:`bbvi_kit.train.fit` with these callbacks, in order: the metrics log,
        the progress bar, evaluation, diagnostics, then ``callbacks`` (yours: see
        :class:`bbvi_kit.train.Callback`), then checkpoints. With a run directory, checkpoints
        are written into it (``training.checkpoint_every``, ``keep_checkpoints``; see
        :mod:`bbvi_kit.checkpoint`). ``resume`` is a checkpoint's state: training goes on from
        there exactly as the uninterrupted run would have, and ``history`` holds the rows
        recorded before it (the run's CSV files cut back to the checkpoint, see
        :meth:`RunDirectory.restore_logs`).

        Inside :func:`bbvi_kit.interrupts.handling_signals` (the ``bbvi-kit`` command's, or your
        own around ``fit``), a SIGTERM or SIGINT ends the step in progress, writes its rows and a
        checkpoint, and raises :class:`bbvi_kit.interrupts.Interrupted`.
        """
        opts = self.training
        parallel = distributed.current()
        if parallel is not None and opts.batch_size < parallel.world:
            raise InputError(f"training.batch_size {opts.batch_size} is smaller than the {parallel.world} "
                             "data-parallel processes that share each batch")
        writes = parallel is None or parallel.writes
        history = history if history is not None else History()
        history.run_dir = str(run.path) if run else None
        metrics = MetricsLog(self.bbvi, opts, history, run, writes_info=writes)
        parts: list[Callback] = [metrics, ProgressBar(metrics, enabled=opts.progress and writes)]
        if writes:
            evaluation = Evaluation(self.evaluate, train_data, test_data, opts, history, run, self.reference)
            parts += [evaluation, Diagnostics(self.diagnostics, self.training_state, train_data, test_data,
                                              opts.seed, history, run, evaluation)]
        parts += callbacks
        if run is not None and opts.keep_checkpoints:
            parts.append(Checkpointing(Checkpoints(run.path, opts.keep_checkpoints), run, self.state_dict,
                                       opts.checkpoint_every))
        train_loop.fit(
            self.bbvi, train_data, opts, parts, resume=resume,
            restore=lambda state: self.restore(state, train_data),
            step=distributed.data_parallel_step(self.bbvi, len(cast(Sized, train_data)), opts.batch_size) if parallel else None,
            seed_offset=parallel.rank * distributed.RANK_SEED_STRIDE if parallel else 0,
            shard=(parallel.rank, parallel.world) if parallel else None,
        )
        return history


def count_parameters(params: Sequence[torch.Tensor]) -> int:
    """Number of scalar parameters (d* in the paper's bounds)."""
    return sum(math.prod(p.shape) for p in params)
