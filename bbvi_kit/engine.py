"""The training loop: any Pyro model/guide pair, any objective, estimator, optimizer and schedule.

One iteration n (1-based):

1. draw a mini-batch; K particles in one vectorised pass give the surrogate loss;
2. ``backward``;
3. record the squared global gradient norm ||g_n||^2 (all trainable parameters, and per group
   phi / theta) *before* clipping and the step, and its running average (1/n) sum_k ||g_k||^2 —
   the quantity Surendran et al. (AISTATS 2025) bound by O(log n / sqrt n);
4. stop on a non-finite loss or gradient, naming the step;
5. clip (optional), set lr_n = lr * schedule(n, epoch), optimizer step;
6. every ``eval_every`` iterations (default: each epoch's end) and at the end, evaluate on the
   test set.

Losses are negative bounds in nats per example (mean over the batch). Recorded values are kept as
tensors on the device and moved to the host in one transfer per flush, so the loop itself does
not synchronise with the host except for the finiteness check.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import time
import zlib
from dataclasses import dataclass, field
from typing import Annotated, Any, Callable, Iterable, Literal, Mapping, Sequence

import pyro
import torch
from pydantic import Field, field_validator
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from bbvi_kit.checkpoint import Checkpoints
from bbvi_kit.data.base import as_args, batch_loader, skip_next_epoch
from bbvi_kit.data.finite import FiniteExamples
from bbvi_kit.diagnostics.base import Diagnostic, DiagnosticContext, run_diagnostic
from bbvi_kit.diagnostics.gradients import squared_grad_norms
from bbvi_kit.errors import BBVIError, InputError, OutputError, TrainingError
from bbvi_kit.estimators._examples import ExamplesSpec
from bbvi_kit.estimators.auto import Auto
from bbvi_kit.estimators.base import Estimator
from bbvi_kit.loss import BBVILoss
from bbvi_kit.objectives.base import Objective
from bbvi_kit.objectives.elbo import ELBO
from bbvi_kit.optim import Constant, OptimizerPlugin, Schedule
from bbvi_kit.parameters import GroupsFn, ParameterGroups
from bbvi_kit.pass_state import PassState
from bbvi_kit.plugin import PluginOptions
from bbvi_kit.runs import RunDirectory
from bbvi_kit.step_log import NonFiniteAtFlush, StepLog, StepResult, nonfinite_message
from bbvi_kit import distributed, interrupts, rng_state


class TrainingOptions(PluginOptions):
    """The ``training:`` section of a recipe (also usable from Python)."""

    batch_size: int = Field(128, ge=1, le=10_000_000, description="examples per mini-batch (B)")
    epochs: int = Field(10, ge=1, le=1_000_000, description="passes over the training set")
    iterations: int | None = Field(
        None, ge=1, le=10**10, description="stop after this many updates even if epochs remain"
    )
    seed: int = Field(0, ge=0, le=2**63 - 1, description="seeds torch, numpy, random and data order")
    seeds: list[Annotated[int, Field(ge=0, le=2**63 - 1)]] | None = Field(
        None, min_length=1, max_length=10_000,
        description="run once per seed (a sweep of independent runs); null: one run with `seed`",
    )
    device: str = Field("auto", description="'auto' (CUDA when present), 'cpu', 'cuda', 'cuda:1', ...")
    record_every: int = Field(1, ge=1, le=10**10, description="write a metrics row every this many iterations")
    eval_every: int | None = Field(
        None, ge=1, le=10**10, description="evaluate every this many iterations; null: at each epoch's end"
    )
    eval_batch_size: int = Field(512, ge=1, le=10_000_000, description="batch size of evaluation passes")
    eval_train: bool = Field(
        False, description="also evaluate on the whole training set (train_loss, train_objective_loss)"
    )
    num_workers: int = Field(
        0, ge=0, le=256, description="data-loading worker processes for datasets decoded per example"
    )
    grad_clip: float | None = Field(
        None, gt=0.0, description="clip the global gradient norm to this (after it is recorded)"
    )
    flush_every: int = Field(50, ge=1, le=10**10, description="move recorded values to disk every this many iterations")
    checkpoint_every: int | None = Field(
        None, ge=1, le=10**10, description="write a checkpoint every this many iterations (and at the end); null: at each epoch's end"
    )
    keep_checkpoints: int = Field(
        2, ge=0, le=1000, description="how many of the newest checkpoints to keep; 0: write none"
    )
    on_nonfinite: Literal["stop", "skip"] = Field(
        "stop", description="a non-finite loss or gradient (or a distribution refusing a NaN value): stop "
        "the run, or skip that step's update",
    )
    max_nonfinite_skips: int = Field(
        100, ge=0, le=10**10, description="with on_nonfinite: skip, stop once more steps than this were skipped"
    )
    warn_skipped_fraction: float = Field(
        0.1, ge=0.0, le=1.0, description="with on_nonfinite: skip, a run that skipped more than this share of "
        "its steps ends with a warning (in run.json, the sweep's summary.csv and on the terminal)",
    )
    nonfinite_check: Literal["auto", "every_step", "at_flush"] = Field(
        "auto",
        description="when a step's finiteness is read back: every_step, before its update (a host "
        "synchronisation per step); at_flush, with the update skipped on the device by the fused "
        "optimizer and the policy applied at the next flush; auto: at_flush on CUDA with adam, adamw "
        "or sgd, else every_step",
    )
    validation: Literal["first_step", "every_step"] = Field(
        "first_step",
        description="Pyro's and torch's argument and support checks in training steps (each a host "
        "synchronisation): on the first step of a run only, or on every step",
    )
    progress: bool = Field(True, description="show a progress bar with the current loss")

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        if device == "auto":
            return device
        try:
            torch.device(device)
        except (RuntimeError, ValueError):
            raise ValueError(f"{device!r} is not a device: use 'auto', 'cpu', 'cuda', 'cuda:1', ...") from None
        return device

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int] | None) -> list[int] | None:
        if seeds is not None and len(set(seeds)) != len(seeds):
            raise ValueError("seeds must be distinct")
        return seeds


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else CPU; anything else goes to ``torch.device``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _to_device(args: tuple, device: torch.device) -> tuple:
    return tuple(a.to(device, non_blocking=True) if isinstance(a, torch.Tensor) else a for a in args)


def _owner_module(fn: Any) -> nn.Module | None:
    if isinstance(fn, nn.Module):
        return fn
    owner = getattr(fn, "__self__", None)
    return owner if isinstance(owner, nn.Module) else None


@dataclass
class History:
    """What a run recorded: the rows of ``metrics.csv`` and ``eval.csv`` as dicts."""

    metrics: list[dict[str, float]] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)
    diagnostics: dict[str, list[dict[str, float]]] = field(default_factory=dict)  # name -> rows
    run_dir: str | None = None
    warning: str | None = None  # what a completed run's results should be read with (see runner)


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
        self.schedule = schedule or Constant()
        self.training = training or TrainingOptions()
        self.device = resolve_device(self.training.device)
        self.reference = dict(reference or {})
        self.diagnostics = dict(diagnostics or {})
        self.modules: list[nn.Module] = list(modules)
        for fn in (model, guide):
            owner = _owner_module(fn)
            if owner is not None and all(owner is not m for m in self.modules):
                self.modules.append(owner)
        self.param_groups = ParameterGroups(self.modules, parameter_groups)
        self.loss = BBVILoss(model, guide, objective, estimator, max_plate_nesting, examples)
        # Evaluation needs values only (it runs without gradients): the auto estimator serves any
        # guide, discrete latents and point estimates included.
        self.eval_loss = BBVILoss(model, guide, ELBO(num_particles=1), Auto(), max_plate_nesting, examples)
        self.eval_objective = BBVILoss(model, guide, objective, Auto(), max_plate_nesting, examples)
        self._check_at_flush = self._decide_check(self.training.nonfinite_check)
        self.optimizer: torch.optim.Optimizer | None = None
        self.groups: dict[str, list[torch.Tensor]] = {}
        self.parameters: list[torch.Tensor] = []  # all of ``groups``, set on the first step
        self.step = 0

    def _decide_check(self, mode: str) -> bool:
        """Whether non-finite steps are checked at flush (on the device) rather than each step."""
        # (a plugin that overrides build without the fused keyword cannot give a fused optimizer)
        fused = self.optimizer_plugin.supports_fused and "fused" in inspect.signature(self.optimizer_plugin.build).parameters
        if mode == "at_flush" and not fused:
            raise InputError(
                f"training.nonfinite_check: at_flush needs an optimizer with a fused implementation "
                f"(adam, adamw, sgd); {type(self.optimizer_plugin).__name__} has none"
            )
        return mode == "at_flush" or (mode == "auto" and fused and self.device.type == "cuda")

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
            for args in finite(_to_device(as_args(batch), self.device) for batch in loader):
                n = len(args[0])
                sums[0] += self.eval_loss(*args).loss.double() * n
                sums[1] += self.eval_objective(*args).loss.double() * n
                count += n
            values = (sums / count).tolist() if count else [math.nan, math.nan]
        for m in self.modules:
            m.train()
        row = {f"{split}_loss": values[0], f"{split}_objective_loss": values[1]}
        if finite.skip:
            row[f"{split}_nonfinite_examples"] = finite.left_out
        return row

    # -- training ---------------------------------------------------------------------------
    def _step_loss(self, args: tuple, epoch: int) -> Any:
        """The surrogate loss of one step; a failure inside model or guide names the step.

        Non-finite values typically surface here first, as a distribution refusing a NaN
        argument or observation, before the loss itself can be checked: that failure is a
        :class:`RefusedValueError`, which ``training.on_nonfinite: skip`` treats as a non-finite
        step.
        """
        try:
            return self.loss(*args)
        except BBVIError:
            raise
        except Exception as exc:
            error = _failed_at(self.step, epoch, "model or guide", exc)
            if isinstance(exc, ValueError) and _REFUSED_VALUE in str(exc):
                raise RefusedValueError(str(error)) from exc
            raise error from exc

    def _setup_parameters(self, result: Any) -> None:
        """Find the parameter groups from the first step's traces and build the optimizer."""
        self.param_groups.update(result.particles.model_trace, result.particles.guide_trace)
        self.groups = self.param_groups.groups
        self.parameters = self.param_groups.parameters
        self.optimizer = self._build_optimizer(self.parameters)

    def _build_optimizer(self, params: list[torch.Tensor]) -> torch.optim.Optimizer:
        if self._check_at_flush:
            return self.optimizer_plugin.build(params, fused=True)
        return self.optimizer_plugin.build(params)

    def _join_new_parameters(self, result: Any) -> None:
        """Parameters this step's traces use for the first time join their group and the
        optimizer (as a new parameter group with the optimizer's defaults)."""
        assert self.optimizer is not None
        new = self.param_groups.update(result.particles.model_trace, result.particles.guide_trace)
        if new:
            self.optimizer.add_param_group({"params": new})
            self.parameters.extend(new)

    def _train_step(self, args: tuple, epoch: int, *, validate: bool, share: float | None = None) -> StepResult:
        """One update on the batch ``args`` (already on the device): surrogate loss, backward,
        squared gradient norms (before clipping), then the optimizer step with the scheduled step
        size, unless the loss or gradient is not finite.

        A non-finite step does not update, and with ``training.on_nonfinite: skip`` the score
        baseline and module buffers it moved are put back (:class:`PassState`). With the check
        at flush (``training.nonfinite_check``) this happens on the device (the fused
        optimizer's ``found_inf``, a ``torch.where`` for the state) and the step's finiteness
        stays there (:attr:`StepResult.finite`); otherwise it is read back before the update and
        :attr:`StepResult.problem` says what went wrong. ``validate: False`` switches Pyro's and
        torch's argument checks off for the step (``True`` leaves them as Pyro's global setting
        has them): each is a host synchronisation, and NaNs are caught by the finiteness check
        anyway. Nothing of the step's traces outlives the call.

        ``share`` (data-parallel training, :mod:`bbvi_kit.distributed`) is this rank's part
        n_r / n of the global batch: the surrogate is weighted by it, and the gradients and the
        loss are summed over the ranks before the norms are taken, so that every rank holds the
        global gradient and makes the same update.
        """
        opts = self.training
        at_flush = self._check_at_flush and self.optimizer is not None
        before = PassState(self) if opts.on_nonfinite == "skip" else None
        refused: RefusedValueError | None = None
        result = None
        if share != 0.0:  # (an empty shard of a last, small batch computes nothing)
            try:
                with contextlib.nullcontext() if validate else pyro.validation_enabled(False), \
                        distributed.step_reductions(share is not None):
                    result = self._step_loss(args, epoch)
            except RefusedValueError as exc:
                if opts.on_nonfinite == "stop":
                    raise
                refused = exc
        if self.optimizer is None:  # the first step: its traces name the parameters, even when skipped
            if result is None and refused is not None:
                with pyro.validation_enabled(False):
                    self._setup_parameters(self._step_loss(args, epoch))
            else:
                self._setup_parameters(result)
        elif result is not None:
            self._join_new_parameters(result)
        assert self.optimizer is not None
        self.optimizer.zero_grad(set_to_none=True)
        if result is not None:
            (result.surrogate if share is None else result.surrogate * share).backward()
            loss = result.loss.detach()
            del result  # the traces and their tensors, before the next step allocates its own
        else:  # refused, or an empty shard: no loss (NaN when refused), no gradient
            loss = torch.full((), math.nan if refused is not None else 0.0, device=self.device)
        if share is not None:
            loss = self._sum_over_ranks(loss * share)
        norms = squared_grad_norms(self.groups) if refused is None or share is not None else \
            {g: loss for g in ("total", *self.groups)}
        lr = self.optimizer_plugin.lr * self.schedule.factor(self.step, epoch)
        finite = torch.isfinite(loss) & torch.isfinite(norms["total"])
        if at_flush and refused is None:
            self._update(lr, skip_if=~finite)
            if before is not None:
                before.keep_if(finite)
            return StepResult(loss, norms, lr, finite=finite)
        if refused is None and bool(finite):
            self._update(lr)
            return StepResult(loss, norms, lr)
        problem = str(refused) if refused is not None else (
            nonfinite_message(self.step, epoch, loss.item(), norms["total"].item()))
        self.optimizer.zero_grad(set_to_none=True)  # the update is skipped
        if before is not None:
            before.restore()
        return StepResult(loss, norms, lr, problem)

    def _sum_over_ranks(self, loss: torch.Tensor) -> torch.Tensor:
        """Sum every gradient (missing ones as zeros) and ``loss`` over the ranks, in place."""
        for p in self.parameters:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        total = loss.reshape(1).clone()
        distributed.all_reduce_sum([*(p.grad for p in self.parameters), total])
        return total[0]

    def _update(self, lr: float, skip_if: torch.Tensor | None = None) -> None:
        """Clip (``training.grad_clip``), set the step size and step; ``skip_if`` (a 0-d bool
        tensor) makes the fused optimizer skip the whole update on the device when true."""
        assert self.optimizer is not None
        if self.training.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.parameters, self.training.grad_clip)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if skip_if is None:
            self.optimizer.step()
            return
        self.optimizer.found_inf = skip_if.to(torch.float32)
        try:
            self.optimizer.step()
        finally:
            self.optimizer.found_inf = None

    # -- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The trainer's own state: parameters by key (see :mod:`bbvi_kit.parameters`) with the
        keys of each group and of each optimizer parameter group, module buffers, optimizer,
        estimator and diagnostic state, every RNG state and the step. :meth:`fit` adds the loop's
        position and running sums when it writes a checkpoint."""
        assert self.optimizer is not None, "state_dict before the first step"
        keys = self.param_groups.keys
        return {
            "step": self.step,
            "parameter_keys": self.param_groups.key_lists(),
            "optimizer_keys": [[keys[id(p)] for p in g["params"]] for g in self.optimizer.param_groups],
            "parameters": {keys[id(p)]: p.detach().cpu().clone() for p in self.parameters},
            "buffers": [{k: b.detach().cpu().clone() for k, b in m.named_buffers()} for m in self.modules],
            "optimizer": self.optimizer.state_dict(),
            "estimator": _to_device_tree(self.loss.estimator.state_dict(), torch.device("cpu")),
            "diagnostics": {name: _to_device_tree(d.state_dict(), torch.device("cpu"))
                            for name, d in self.diagnostics.items()},
            "rng": rng_state.capture(),
        }

    def restore(self, state: Mapping[str, Any], train_data: Dataset) -> None:
        """Restore a checkpoint's :meth:`state_dict` before :meth:`fit` resumes from it (``fit``
        calls this itself when it was not done); passes over the training batches (in data order)
        create the parameters. A state that does not fit this model is an :class:`InputError`."""
        for m in self.modules:  # the optimizer's state is loaded onto the parameters' device
            m.to(self.device)
        batches = (as_args(b) for b in batch_loader(train_data, self.training.batch_size, shuffle=False))
        self.load_state_dict(state, batches)

    def load_state_dict(self, state: Mapping[str, Any], batches: Iterable[tuple]) -> None:
        """Restore :meth:`state_dict`. The parameters are created first by passes of the loss on
        ``batches`` (Pyro creates ``pyro.param`` sites lazily): one, or as many as it takes for
        every parameter of the checkpoint to exist (a per-item parameter appears with its item).
        They run without Pyro's argument checks, and a pass that fails (a batch whose NaN breaks
        a sampler) is passed over, since only their traces count: a run whose first batch in data
        order holds a NaN (skipped under ``on_nonfinite: skip``) resumes. Those passes' random
        draws and side effects are then overwritten. A state that does not
        fit this model is an :class:`InputError`."""
        saved_groups: dict[str, list[str]] = state.get("parameter_keys") or {}
        wanted = {k for keys in saved_groups.values() for k in keys}
        failed: TrainingError | None = None
        traced = False
        with pyro.validation_enabled(False):  # only the traces count: a NaN example must not stop them
            for args in batches:
                try:
                    result = self._step_loss(_to_device(args, self.device), 0)
                except TrainingError as exc:  # e.g. a batch whose NaN breaks sampling: try the next one
                    failed = failed or exc
                    continue
                if not traced:
                    self._setup_parameters(result)
                    traced = True
                else:
                    self.param_groups.update(result.particles.model_trace, result.particles.guide_trace)
                del result
                if wanted <= set(self.param_groups.keys.values()):
                    break
        if not traced:
            raise InputError(f"cannot rebuild the parameters to resume: {failed or 'the training set is empty'}")
        by_key = {self.param_groups.keys[id(p)]: p for p in self.param_groups.parameters}
        if "parameter_keys" not in state:
            state, saved_groups = self._keyed(state), self.param_groups.key_lists()
        found = {name: set(keys) for name, keys in self.param_groups.key_lists().items()}
        if found != {name: set(keys) for name, keys in saved_groups.items()}:
            raise InputError("the checkpoint's parameters do not match this model (different groups or parameters)")
        try:
            for name, keys in saved_groups.items():  # the checkpoint's order: the run's order of appearance
                self.groups[name][:] = [by_key[k] for k in keys]
            self.parameters = self.param_groups.parameters
            optimizer_keys = state["optimizer_keys"]
            self.optimizer = self._build_optimizer([by_key[k] for k in optimizer_keys[0]])
            for keys in optimizer_keys[1:]:
                self.optimizer.add_param_group({"params": [by_key[k] for k in keys]})
            with torch.no_grad():
                for key, saved in state["parameters"].items():
                    if by_key[key].shape != saved.shape:
                        raise ValueError(f"parameter {key} has shape {list(saved.shape)} in the checkpoint, "
                                         f"{list(by_key[key].shape)} here")
                    by_key[key].copy_(saved)
                for m, buffers in zip(self.modules, state["buffers"], strict=True):
                    own = dict(m.named_buffers())
                    if set(own) != set(buffers):
                        raise ValueError("module buffers differ")
                    for k, b in buffers.items():
                        own[k].copy_(b)
            self.optimizer.load_state_dict(state["optimizer"])
            self.loss.estimator.load_state_dict(_to_device_tree(state["estimator"], self.device))
            saved_diagnostics = state["diagnostics"]
            if set(saved_diagnostics) != set(self.diagnostics):
                raise ValueError("the recipe's diagnostics differ from the checkpoint's")
            for name, diagnostic in self.diagnostics.items():
                diagnostic.load_state_dict(_to_device_tree(saved_diagnostics[name], self.device), self)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise InputError(f"the checkpoint does not fit this run: {type(exc).__name__}: {exc}") from None
        self.optimizer.zero_grad(set_to_none=True)
        self.step = int(state["step"])
        rng_state.restore(state["rng"])

    def _keyed(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """A checkpoint of bbvi-kit 0.1 (parameters as one list in group order, one optimizer
        parameter group) in today's keyed form, if its groups have this model's shapes."""
        keys = self.param_groups.key_lists()
        sizes = {name: [list(p.shape) for p in params] for name, params in self.groups.items()}
        if state.get("group_sizes") != sizes:
            raise InputError("the checkpoint's parameters do not match this model (different groups or shapes)")
        order = [k for group in keys.values() for k in group]
        return {**state, "parameter_keys": keys, "optimizer_keys": [order],
                "parameters": dict(zip(order, state["parameters"], strict=True))}

    # -- the loop ---------------------------------------------------------------------------
    def fit(
        self,
        train_data: Dataset,
        test_data: Dataset | None = None,
        run: RunDirectory | None = None,
        *,
        resume: Mapping[str, Any] | None = None,
        history: History | None = None,
    ) -> History:
        """Train; returns the recorded :class:`History` (and streams it into ``run`` if given).

        With a run directory, checkpoints are written into it (``training.checkpoint_every``,
        ``keep_checkpoints``; see :mod:`bbvi_kit.checkpoint`). ``resume`` is a checkpoint's
        state: training goes on from there exactly as the uninterrupted run would have, and
        ``history`` holds the rows recorded before it (the run's CSV files cut back to the
        checkpoint, see :meth:`RunDirectory.restore_logs`).

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
        pyro.set_rng_seed(opts.seed + (parallel.rank * distributed.RANK_SEED_STRIDE if parallel else 0))
        for m in self.modules:
            m.to(self.device)
            m.train()
        generator = torch.Generator().manual_seed(opts.seed)  # the batch order: the same on every rank
        loader = batch_loader(train_data, opts.batch_size, shuffle=True, generator=generator,
                              num_workers=opts.num_workers, pin_memory=self.device.type == "cuda",
                              shard=(parallel.rank, parallel.world) if parallel else None)
        per_epoch = len(loader)
        if per_epoch == 0:
            raise TrainingError("the training set is empty")
        total = per_epoch * opts.epochs
        if opts.iterations is not None:
            total = min(total, opts.iterations)
        history = history if history is not None else History()
        history.run_dir = str(run.path) if run else None
        checkpoints = Checkpoints(run.path, opts.keep_checkpoints) if run is not None and opts.keep_checkpoints else None
        log = StepLog(self.device, list(self.groups), stop_on_nonfinite=opts.on_nonfinite == "stop",
                      max_skips=opts.max_nonfinite_skips)
        eval_every = opts.eval_every
        last_eval_step = -1
        epoch, batch_index, elapsed = 0, 0, 0.0
        if resume is not None:
            if self.optimizer is None or self.step != resume["step"]:
                self.restore(resume, train_data)
            rng_state.restore(resume["rng"])  # after the modules moved to the device (above)
            log.groups[:] = list(self.groups)
            loop = resume["loop"]
            epoch, batch_index, elapsed = int(loop["epoch"]), int(loop["batch_index"]), float(loop["elapsed"])
            generator.set_state(loop["epoch_generator"])
            skip_next_epoch(loader, batch_index)
            log.load_state(loop)
            last_eval_step = int(loop["last_eval_step"])
        start = time.perf_counter() - elapsed

        def write(rows: list[dict[str, float]]) -> None:
            if not rows:
                return
            history.metrics.extend(rows)
            if run is not None:
                run.metrics.write(rows)
            bar.set_postfix(loss=f"{rows[-1]['loss']:.4g}", refresh=False)

        def flush() -> None:
            """Read the recorded values back and write them (a non-finite step found here
            raises after the rows before it are written)."""
            try:
                rows = log.flush()
            except NonFiniteAtFlush as exc:
                write(exc.rows)
                raise
            write(rows)

        def do_eval(epoch: int) -> None:
            nonlocal last_eval_step
            if test_data is None or last_eval_step == self.step or not writes:
                return
            flush()
            row = {"step": self.step, "epoch": epoch, **self.evaluate(test_data, seed=opts.seed + self.step)}
            if opts.eval_train:
                row.update(self.evaluate(train_data, seed=opts.seed + self.step, split="train"))
            for column, exact in self.reference.items():
                if column in row:
                    row[f"{column}_gap"] = row[column] - exact
            row["time"] = time.perf_counter() - start
            history.evals.append(row)
            if run is not None:
                run.evals.write([row])
            last_eval_step = self.step
            diagnose(epoch, evaluating=True)

        def diagnose(epoch: int, evaluating: bool) -> None:
            due = [(name, d) for name, d in self.diagnostics.items() if writes and d.due(
                self.step, evaluating=evaluating, total=total, seed=opts.seed * 1_000_003 + zlib.crc32(name.encode()))]
            if due:
                flush()  # a step found non-finite at flush stops the run before anything measures it
            for name, diagnostic in due:
                block = diagnostic.block(self.step, total)
                context = DiagnosticContext(self, train_data, test_data, self.step, epoch, block)
                seed = (opts.seed * 1_000_003 + self.step * 7_919 + zlib.crc32(name.encode())) % 2**63
                try:
                    values = run_diagnostic(diagnostic, context, seed)
                except BBVIError:
                    raise
                except Exception as exc:
                    raise _failed_at(self.step, epoch, f"diagnostic {name}", exc) from exc
                where = {"block_start": block[0], "block_end": block[1]} if block is not None else {}
                row = {"step": self.step, "epoch": epoch, **where, **values, "time": time.perf_counter() - start}
                history.diagnostics.setdefault(name, []).append(row)
                if run is not None:
                    run.diagnostic_log(name).write([row])

        def checkpoint(epoch: int, batch_index: int, epoch_generator: torch.Tensor) -> None:
            nonlocal last_checkpoint_step
            assert checkpoints is not None and run is not None
            flush()
            state = self.state_dict()
            state["loop"] = {
                "epoch": epoch, "batch_index": batch_index, "epoch_generator": epoch_generator,
                **log.state(), "last_eval_step": last_eval_step, "elapsed": time.perf_counter() - start,
            }
            state["logs"] = run.log_sizes()
            state["identity"] = run.identity()
            checkpoints.save(state, self.step)
            last_checkpoint_step = self.step

        def stop_for_signal(signum: int, epoch: int, batch_index: int, epoch_generator: torch.Tensor) -> None:
            """A SIGTERM or SIGINT arrived during the step just finished: write the rows and a
            checkpoint at this step boundary, then stop (:mod:`bbvi_kit.interrupts`)."""
            if checkpoints is not None and last_checkpoint_step != self.step:
                checkpoint(epoch, batch_index, epoch_generator)
            else:
                flush()
            saved = f"; checkpoint at step {self.step}" if checkpoints is not None else "; no checkpoint (none kept)"
            raise interrupts.Interrupted(signum, f"stopped by {interrupts.signal_name(signum)} after step "
                                                 f"{self.step} (epoch {epoch}){saved}")

        bar = tqdm(total=total, initial=self.step, disable=not (opts.progress and writes), unit="it",
                   dynamic_ncols=True, leave=True)
        resuming = resume is not None
        first_step = True
        last_checkpoint_step = -1
        try:
            with interrupts.deferring(parallel is None):
                while self.step < total:
                    if resuming:  # the position was restored above, mid-epoch or at its end
                        resuming = False
                        epoch_generator = resume["loop"]["epoch_generator"]
                    else:
                        epoch_generator, batch_index = generator.get_state(), 0
                    for batch in loader:
                        if self.step >= total:
                            break
                        self.step += 1
                        batch_index += 1
                        args = _to_device(as_args(batch), self.device)
                        share = None
                        if parallel is not None:  # this rank's part of the global batch
                            global_size = min(opts.batch_size, len(train_data) - (batch_index - 1) * opts.batch_size)
                            share = len(args[0]) / global_size
                        step = self._train_step(args, epoch, validate=opts.validation == "every_step" or first_step,
                                                share=share)
                        if first_step and run is not None and writes and self.loss.examples is not None:
                            run.update_info(examples=self.loss.examples.as_dict())
                        first_step = False
                        if not log.groups:
                            log.groups[:] = list(self.groups)
                        log.add(self.step, epoch, step)
                        bar.update(1)
                        if self.step % opts.record_every == 0 or self.step == total:
                            log.record({"step": self.step, "epoch": epoch, "lr": step.lr,
                                        "time": time.perf_counter() - start}, step)
                        if self.step % opts.flush_every == 0:
                            flush()
                        epoch_end = batch_index == per_epoch
                        if (eval_every is not None and self.step % eval_every == 0) or (
                                eval_every is None and epoch_end) or self.step == total:
                            do_eval(epoch)
                        diagnose(epoch, evaluating=False)
                        if checkpoints is not None and (
                            (opts.checkpoint_every is not None and self.step % opts.checkpoint_every == 0)
                            or (opts.checkpoint_every is None and epoch_end) or self.step == total
                        ):
                            checkpoint(epoch, batch_index, epoch_generator)
                        signum = interrupts.requested()
                        if signum is not None and self.step < total:  # at the last step the run just ends
                            stop_for_signal(signum, epoch, batch_index, epoch_generator)
                    epoch += 1
                flush()
        except BaseException as exc:
            # Keep every row already computed (Ctrl-C, a failing step); the original error wins.
            try:
                flush()
            except Exception:  # noqa: BLE001
                pass
            if isinstance(exc, TrainingError) and checkpoints is not None:
                where = f"step {self.step} (epoch {epoch}): " if isinstance(exc, OutputError) else ""
                raise type(exc)(f"{where}{exc}; {checkpoints.describe_latest()}") from exc
            raise
        finally:
            bar.close()
        return history


def _to_device_tree(value: Any, device: torch.device) -> Any:
    """``value`` with every tensor in its dicts, lists and tuples moved to ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to_device_tree(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_device_tree(v, device) for v in value)
    return value


_REFUSED_VALUE = "but found invalid values"
"""What torch.distributions says when a distribution's argument or observed value is outside its
constraint (a NaN loc, a non-positive scale) under argument validation."""


class RefusedValueError(TrainingError):
    """A distribution in the model or guide refused a NaN or out-of-support value at a step: a
    non-finite step for ``training.on_nonfinite``."""


def _failed_at(step: int, epoch: int, what: str, exc: Exception) -> TrainingError:
    """A one-line error naming the step and what failed. Only the head of the original message
    is kept: torch and Pyro append tensor dumps and trace shapes. Pyro words a failing site as
    ``Error while computing log_prob at site 'x':`` with the cause on the next line; that line
    is kept too."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()] or [""]
    head = lines[0]
    if head.endswith(":") and len(lines) > 1 and not lines[1].startswith("tensor("):
        head = f"{head} {lines[1]}"
    return TrainingError(f"step {step} (epoch {epoch}): {what} failed: {type(exc).__name__}: {head.rstrip(':')}")


def count_parameters(params: Sequence[torch.Tensor]) -> int:
    """Number of scalar parameters (d* in the paper's bounds)."""
    return sum(math.prod(p.shape) for p in params)
