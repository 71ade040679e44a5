"""The public black-box VI step, used as :class:`pyro.infer.SVI` is.

::

    bbvi = BBVI(model, guide, ELBO(num_particles=1), Pathwise(), Adam(lr=1e-3))
    for x in batches:
        result = bbvi.step(x)          # loss, squared gradient norms per group, skipped or not
    bbvi.evaluate_loss(x_test)         # the objective's negative bound, without gradients

One step n (1-based, :attr:`BBVI.num_steps` after the call):

1. K particles of the guide and the replayed model in one vectorised pass give the surrogate
   loss of the objective under the estimator (:class:`bbvi_kit.loss.BBVILoss`); the loss is the
   negative bound in nats per example (mean over the batch);
2. ``backward``;
3. the squared global gradient norm ||g_n||^2 over all trainable parameters and per group
   (``phi``: what the guide uses; ``theta``: what only the model uses;
   :mod:`bbvi_kit.parameters`), *before* clipping and the update — the quantity whose running
   average Surendran et al. (AISTATS 2025) bound by O(log n / sqrt n);
4. a non-finite loss or gradient makes no update (the finite-or-skip decision);
5. clip (optional), lr_n = lr * schedule(n, epoch), optimizer step.

A scheduled objective (beta warm-up, :class:`bbvi_kit.objectives.beta.BetaELBO`) uses its value
at step n in the step and reports it (:attr:`StepResult.beta`); evaluation uses its target.
With ``precision="fp16"`` the surrogate is scaled by ``torch.amp``'s gradient scaler before 2 and
the gradient unscaled before 3; a step whose loss is finite but whose gradient overflowed float16
makes no update and lowers the scale (:attr:`StepResult.overflow`), as ``torch.amp`` does.

Unlike ``SVI``, the optimizer is a plain ``torch.optim`` optimizer built from the parameters the
first step's traces name (later ones join it when they first appear), and the gradient norms are
part of every step's result. :class:`bbvi_kit.engine.Trainer` drives this step through epochs,
evaluation, diagnostics and checkpoints.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Literal, Mapping, cast

import pyro
import torch
from torch import nn

from bbvi_kit import distributed
from bbvi_kit.devices import resolve_device, to_device, to_device_tree
from bbvi_kit.diagnostics.gradients import squared_grad_norms
from bbvi_kit.errors import BBVIError, InputError, TrainingError
from bbvi_kit.estimators._examples import ExamplesSpec
from bbvi_kit.estimators.auto import Auto
from bbvi_kit.estimators.base import Estimator
from bbvi_kit.infer.failures import RefusedValueError, failed_at
from bbvi_kit.loss import BBVILoss
from bbvi_kit.objectives.base import Objective
from bbvi_kit.objectives.elbo import ELBO
from bbvi_kit.optim import Constant, OptimizerPlugin, Schedule
from bbvi_kit.parameters import GroupsFn, ParameterGroups
from bbvi_kit.pass_state import PassState
from bbvi_kit.precision import NetworkAutocast, Precision


@dataclass
class StepResult:
    """What one step leaves: 0-d tensors on the device, read back only when asked for."""

    loss: torch.Tensor  # the negative bound, nats per example (NaN when a value was refused)
    norms: dict[str, torch.Tensor]  # squared gradient norms, "total" and one per group, before clipping
    lr: float  # the step size of this step (scheduled)
    problem: str | None = None  # known on the host: why the update was not made
    finite: torch.Tensor | None = None  # nonfinite_check at_flush: whether the update was made, on the device
    beta: float | None = None  # a scheduled objective's latent scale at this step (beta warm-up); else None
    overflow: bool = False  # fp16: the loss was finite, the gradient overflowed; the scaler skipped the update

    @property
    def skipped(self) -> bool:
        """Whether the update was skipped as non-finite (under ``at_flush`` this reads the flag
        back from the device)."""
        if self.problem is not None or self.overflow:
            return True
        return self.finite is not None and not bool(self.finite)


def owner_module(fn: Any) -> nn.Module | None:
    """The ``nn.Module`` that ``fn`` is, or whose bound method it is; else ``None``."""
    if isinstance(fn, nn.Module):
        return fn
    owner = getattr(fn, "__self__", None)
    return owner if isinstance(owner, nn.Module) else None


class BBVI:
    """Black-box variational inference on a Pyro model/guide pair, one step at a time.

    Args:
        model, guide: Pyro programs taking the batch tensors as positional arguments.
        objective: e.g. ``ELBO(num_particles=1)``, ``IWAE(num_particles=5)``, ``BetaELBO(beta=4)``.
        estimator: ``Pathwise()`` or ``ScoreFunction(baseline=...)``.
        optimizer: e.g. ``Adam(lr=1e-3)`` or ``SGD(lr=1e-2, momentum=0.9)``.
        schedule: step-size factor per step and epoch (default constant).
        grad_clip: clip the global gradient norm to this, after it is recorded.
        on_nonfinite: ``"stop"`` (a distribution refusing a NaN value raises at once; a
            non-finite loss or gradient is returned in :attr:`StepResult.problem` for the caller
            to stop on) or ``"skip"`` (both make no update, and the estimator state and module
            buffers the pass moved are put back; :class:`bbvi_kit.pass_state.PassState`).
        nonfinite_check: ``"every_step"`` reads each step's finiteness back before its update;
            ``"at_flush"`` lets the fused optimizer skip the update on the device
            (:attr:`StepResult.finite`); ``"auto"``: at_flush on CUDA with a fused optimizer.
        parameter_groups: named groups of parameters (e.g. a model plugin's
            ``parameter_groups``); by default they follow the traces (:mod:`bbvi_kit.parameters`).
        modules: ``nn.Module``s to move to the device (model/guide that are modules or bound
            methods of one are found).
        max_plate_nesting, examples: see :class:`bbvi_kit.loss.BBVILoss`.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda:1"``, ...; batches are moved there.
        precision: ``"fp32"``; ``"bf16"`` or ``"fp16"``: the networks of ``modules`` (their
            direct children) run under autocast in that type, everything else in float32
            (:mod:`bbvi_kit.precision`); ``fp16`` also scales the loss with a gradient scaler
            (:attr:`scaler`): a step whose gradient overflows is skipped by it
            (:attr:`StepResult.overflow`), not counted as non-finite.
    """

    def __init__(
        self,
        model: Callable,
        guide: Callable,
        objective: Objective,
        estimator: Estimator,
        optimizer: OptimizerPlugin,
        *,
        schedule: Schedule | None = None,
        grad_clip: float | None = None,
        on_nonfinite: Literal["stop", "skip"] = "stop",
        nonfinite_check: Literal["auto", "every_step", "at_flush"] = "auto",
        parameter_groups: GroupsFn | None = None,
        modules: Iterable[nn.Module] = (),
        max_plate_nesting: int | None = None,
        examples: ExamplesSpec = None,
        device: str | torch.device = "auto",
        precision: Precision = "fp32",
    ) -> None:
        self.model = model
        self.guide = guide
        self.objective = objective
        self.optimizer_plugin = optimizer
        self.schedule = schedule or Constant()
        self.grad_clip = grad_clip
        self.on_nonfinite = on_nonfinite
        self.device = resolve_device(device)
        self.modules: list[nn.Module] = list(modules)
        for fn in (model, guide):
            owner = owner_module(fn)
            if owner is not None and all(owner is not m for m in self.modules):
                self.modules.append(owner)
        self.param_groups = ParameterGroups(self.modules, parameter_groups)
        self.precision = precision
        self.autocast = NetworkAutocast(self.modules, self.device.type, precision) if precision != "fp32" else None
        self.scaler = torch.amp.GradScaler(self.device.type) if precision == "fp16" else None
        self._scaled = False  # this step's gradient went through the scaler (unscaled before its norms)
        self.loss = BBVILoss(model, guide, objective, estimator, max_plate_nesting, examples)
        # Values only (no gradients): the auto estimator serves any guide, discrete latents and
        # point estimates included.
        self.elbo_value = BBVILoss(model, guide, ELBO(num_particles=1), Auto(), max_plate_nesting, examples)
        self.objective_value = BBVILoss(model, guide, objective, Auto(), max_plate_nesting, examples)
        self.check_at_flush = self._decide_check(nonfinite_check)
        self.optimizer: torch.optim.Optimizer | None = None  # built on the first step
        self.groups: dict[str, list[torch.Tensor]] = {}
        self.parameters: list[torch.Tensor] = []  # all of ``groups``, set on the first step
        self.num_steps = 0

    @property
    def estimator(self) -> Estimator:
        return self.loss.estimator

    def _decide_check(self, mode: str) -> bool:
        """Whether non-finite steps are checked on the device (at flush) rather than each step."""
        # (a plugin that overrides build without the fused keyword cannot give a fused optimizer)
        plugin = self.optimizer_plugin
        fused = plugin.supports_fused and "fused" in inspect.signature(plugin.build).parameters
        if self.scaler is not None:  # its scale and skips are decided on the host, step by step
            if mode == "at_flush":
                raise InputError("training.nonfinite_check: at_flush cannot be used with training.precision: fp16 "
                                 "(its gradient scaler decides each step on the host); use every_step or auto")
            return False
        if mode == "at_flush" and not fused:
            raise InputError(
                f"training.nonfinite_check: at_flush needs an optimizer with a fused implementation "
                f"(adam, adamw, sgd); {type(plugin).__name__} has none"
            )
        return mode == "at_flush" or (mode == "auto" and fused and self.device.type == "cuda")

    # -- the step -----------------------------------------------------------------------------
    def step(self, *batch: Any, epoch: int = 0, validate: bool = True, share: float | None = None) -> StepResult:
        """One update on ``batch`` (moved to the device): surrogate loss, backward, squared
        gradient norms (before clipping), then the optimizer step with the scheduled step size,
        unless the loss or gradient is not finite.

        A non-finite step does not update, and with ``on_nonfinite="skip"`` the score baseline
        and module buffers it moved are put back. With the check at flush this happens on the
        device (the fused optimizer's ``found_inf``, a ``torch.where`` for the state) and the
        step's finiteness stays there (:attr:`StepResult.finite`); otherwise it is read back
        before the update and :attr:`StepResult.problem` says what went wrong. ``epoch`` feeds
        the schedule and error messages. ``validate=False`` switches Pyro's and torch's argument
        checks off for the step (``True`` leaves them as Pyro's global setting has them): each is
        a host synchronisation, and NaNs are caught by the finiteness check anyway. Nothing of
        the step's traces outlives the call.

        ``share`` (data-parallel training, :mod:`bbvi_kit.distributed`) is this rank's part
        n_r / n of the global batch: the surrogate is weighted by it, and the gradients and the
        loss are summed over the ranks before the norms are taken, so that every rank holds the
        global gradient and makes the same update.
        """
        if self.optimizer is None:
            for m in self.modules:
                m.to(self.device)
        self.num_steps += 1
        self.loss.step = self.num_steps
        beta = self.objective.latent_scale_at(self.num_steps) if self.objective.scheduled else None
        args = to_device(batch, self.device)
        at_flush = self.check_at_flush and self.optimizer is not None
        before = PassState(self) if self.on_nonfinite == "skip" else None
        refused: RefusedValueError | None = None
        result = None
        if share != 0.0:  # (an empty shard of a last, small batch computes nothing)
            try:
                with contextlib.nullcontext() if validate else pyro.validation_enabled(False), \
                        distributed.step_reductions(share is not None):
                    result = self._surrogate(args, epoch)
            except RefusedValueError as exc:
                if self.on_nonfinite == "stop":
                    raise
                refused = exc
        if self.optimizer is None:  # the first step: its traces name the parameters, even when skipped
            if result is None and refused is not None:
                with pyro.validation_enabled(False):
                    self._setup_parameters(self._surrogate(args, epoch))
            else:
                self._setup_parameters(result)
        elif result is not None:
            self._join_new_parameters(result)
        assert self.optimizer is not None
        self.optimizer.zero_grad(set_to_none=True)
        if result is not None:
            surrogate = result.surrogate if share is None else result.surrogate * share
            (surrogate if self.scaler is None else self.scaler.scale(surrogate)).backward()
            loss = result.loss.detach()
            del result  # the traces and their tensors, before the next step allocates its own
        else:  # refused, or an empty shard: no loss (NaN when refused), no gradient
            loss = torch.full((), math.nan if refused is not None else 0.0, device=self.device)
        if share is not None:
            loss = self._sum_over_ranks(loss * share)
        self._scaled = self.scaler is not None and any(p.grad is not None for p in self.parameters)
        if self._scaled:
            self.scaler.unscale_(self.optimizer)  # type: ignore[union-attr]  # the norms, clipping and update see the true gradient
        norms = squared_grad_norms(self.groups) if refused is None or share is not None else \
            {g: loss for g in ("total", *self.groups)}
        lr = self.optimizer_plugin.lr * self.schedule.factor(self.num_steps, epoch)
        finite = torch.isfinite(loss) & torch.isfinite(norms["total"])
        if at_flush and refused is None:
            self._update(lr, skip_if=~finite)
            if before is not None:
                before.keep_if(finite)
            return StepResult(loss, norms, lr, finite=finite, beta=beta)
        if refused is None and bool(finite):
            self._update(lr)
            return StepResult(loss, norms, lr, beta=beta)
        if self.scaler is not None and self._scaled:
            self.scaler.update()  # an overflow lowers the scale
            if refused is None and bool(torch.isfinite(loss)):  # fp16 overflow: skipped as torch.amp skips it
                self.optimizer.zero_grad(set_to_none=True)
                if before is not None:
                    before.restore()
                return StepResult(loss, norms, lr, beta=beta, overflow=True)
        problem = str(refused) if refused is not None else (
            nonfinite_message(self.num_steps, epoch, loss.item(), norms["total"].item()))
        self.optimizer.zero_grad(set_to_none=True)  # the update is skipped
        if before is not None:
            before.restore()
        return StepResult(loss, norms, lr, problem, beta=beta)

    def evaluate_loss(self, *batch: Any) -> float:
        """The objective's negative bound on ``batch`` in nats per example, without gradients
        and without changing any parameter (as :meth:`pyro.infer.SVI.evaluate_loss`)."""
        with torch.no_grad():
            return self.objective_value(*to_device(batch, self.device)).loss.item()

    def _surrogate(self, args: tuple, epoch: int) -> Any:
        """The surrogate loss of the step; a failure inside model or guide names the step.

        Non-finite values typically surface here first, as a distribution refusing a NaN
        argument or observation, before the loss itself can be checked: that failure is a
        :class:`RefusedValueError`, which ``on_nonfinite="skip"`` treats as a non-finite step.
        """
        try:
            return self.loss(*args)
        except BBVIError:
            raise
        except Exception as exc:
            raise failed_at(self.num_steps, epoch, "model or guide", exc) from exc

    # -- parameters and the optimizer ---------------------------------------------------------
    def _setup_parameters(self, result: Any) -> None:
        """Find the parameter groups from the first step's traces and build the optimizer."""
        self.param_groups.update(result.particles.model_trace, result.particles.guide_trace)
        self.groups = self.param_groups.groups
        self.parameters = self.param_groups.parameters
        self.optimizer = self._build_optimizer(self.parameters)

    def _build_optimizer(self, params: list[torch.Tensor]) -> torch.optim.Optimizer:
        if self.check_at_flush:
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

    def _sum_over_ranks(self, loss: torch.Tensor) -> torch.Tensor:
        """Sum every gradient (missing ones as zeros) and ``loss`` over the ranks, in place."""
        for p in self.parameters:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        total = loss.reshape(1).clone()
        distributed.all_reduce_sum([*(cast(torch.Tensor, p.grad) for p in self.parameters), total])  # set above
        return total[0]

    def _update(self, lr: float, skip_if: torch.Tensor | None = None) -> None:
        """Clip (``grad_clip``), set the step size and step; ``skip_if`` (a 0-d bool tensor)
        makes the fused optimizer skip the whole update on the device when true."""
        assert self.optimizer is not None
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.parameters, self.grad_clip)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if skip_if is None:
            if self.scaler is None or not self._scaled:  # (no gradient at all: nothing for the scaler to check)
                self.optimizer.step()
            else:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            return
        fused: Any = self.optimizer  # a fused optimizer reads found_inf, which Optimizer does not declare
        fused.found_inf = skip_if.to(torch.float32)
        try:
            fused.step()
        finally:
            fused.found_inf = None

    # -- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The step count, parameters by key (see :mod:`bbvi_kit.parameters`) with the keys of
        each group and of each optimizer parameter group, module buffers, optimizer and
        estimator state. Parameters, buffers and estimator state are copies on the CPU; the
        optimizer's state shares its tensors with the live optimizer, as ``torch.optim``'s
        ``state_dict`` does: save it (``torch.save``) or deep-copy it before the next step."""
        assert self.optimizer is not None, "state_dict before the first step"
        keys = self.param_groups.keys
        return {
            "step": self.num_steps,
            "parameter_keys": self.param_groups.key_lists(),
            "optimizer_keys": [[keys[id(p)] for p in g["params"]] for g in self.optimizer.param_groups],
            "parameters": {keys[id(p)]: p.detach().cpu().clone() for p in self.parameters},
            "buffers": [{k: b.detach().cpu().clone() for k, b in m.named_buffers()} for m in self.modules],
            "optimizer": self.optimizer.state_dict(),
            "estimator": to_device_tree(self.estimator.state_dict(), torch.device("cpu")),
            **({"scaler": self.scaler.state_dict()} if self.scaler is not None else {}),
        }

    def load_state_dict(self, state: Mapping[str, Any], batches: Iterable[tuple]) -> None:
        """Restore :meth:`state_dict`. The parameters are created first by passes of the loss on
        ``batches`` (Pyro creates ``pyro.param`` sites lazily): one, or as many as it takes for
        every parameter of the state to exist (a per-item parameter appears with its item).
        They run without Pyro's argument checks, and a pass that fails (a batch whose NaN breaks
        a sampler) is passed over, since only their traces count. Those passes' random draws and
        side effects are then overwritten. A state that does not fit this model is an
        :class:`InputError`."""
        for m in self.modules:  # the optimizer's state is loaded onto the parameters' device
            m.to(self.device)
        saved_groups: dict[str, list[str]] = state.get("parameter_keys") or {}
        wanted = {k for keys in saved_groups.values() for k in keys}
        failed: TrainingError | None = None
        traced = False
        with pyro.validation_enabled(False):  # only the traces count: a NaN example must not stop them
            for args in batches:
                try:
                    result = self._surrogate(to_device(args, self.device), 0)
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
            for name, keys in saved_groups.items():  # the saved order: the run's order of appearance
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
            self.estimator.load_state_dict(to_device_tree(state["estimator"], self.device))
            if self.scaler is not None and "scaler" in state:
                self.scaler.load_state_dict(state["scaler"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise InputError(f"the checkpoint does not fit this run: {type(exc).__name__}: {exc}") from None
        self.optimizer.zero_grad(set_to_none=True)
        self.num_steps = int(state["step"])

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


def nonfinite_message(step: int, epoch: int, loss: float, minibatch_grad_norm_sq: float) -> str:
    """Why step ``step`` made no update, in one line."""
    return (f"non-finite loss or gradient at step {step} (epoch {epoch}): "
            f"loss={loss:.6g}, minibatch_grad_norm_sq={minibatch_grad_norm_sq:.6g}")
