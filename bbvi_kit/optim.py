"""Optimizers (thin plugins over ``torch.optim``) and step-size schedules.

A schedule is a pure function of the iteration n (1-based: the n-th update) and the epoch e
(0-based) returning a factor; the learning rate of update n is ``lr * factor(n, e)``. Being pure,
it needs no state of its own to checkpoint.

The convergence theorems of Surendran et al. (AISTATS 2025) take gamma_n = gamma_0 / sqrt(n) per
iteration; the authors' code decays per epoch, gamma_0 / sqrt(e + 1). Both are here.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Literal

import torch
from pydantic import Field, model_validator

from bbvi_kit.plugin import Configurable, PluginOptions
from bbvi_kit.registry import register_optimizer, register_schedule

Params = Iterable[torch.Tensor]


class OptimizerPlugin(Configurable):
    """Builds a ``torch.optim.Optimizer`` over parameters; ``lr`` is the base step size gamma_0.

    Option names are the keyword arguments of ``torch_class``, so :meth:`build` passes them on
    as they are; a subclass names its class and declares its options.
    """

    torch_class: type[torch.optim.Optimizer]
    supports_fused: bool = False
    """Whether ``torch_class`` has a fused implementation on CPU and CUDA, which can skip an
    update on the device (``found_inf``) without reading anything back to the host."""

    class Options(PluginOptions):
        lr: float = Field(1e-3, gt=0.0, le=1e3, description="base step size gamma_0")
        weight_decay: float = Field(0.0, ge=0.0, description="L2 penalty added to the gradient")

    options: Options

    @property
    def lr(self) -> float:
        return float(self.options.lr)

    def build(self, params: Params, *, fused: bool = False) -> torch.optim.Optimizer:
        """The optimizer over ``params``; ``fused`` picks the fused implementation (the plugin
        must support it)."""
        extra: dict[str, Any] = {"fused": True} if fused else {}
        return self.torch_class(params, **self.options.model_dump(), **extra)


@register_optimizer("sgd")
class SGD(OptimizerPlugin):
    """Stochastic gradient descent, optionally with (Nesterov) momentum: ``torch.optim.SGD``."""

    torch_class = torch.optim.SGD
    supports_fused = True

    class Options(OptimizerPlugin.Options):
        momentum: float = Field(0.0, ge=0.0, lt=1.0, description="heavy-ball momentum (0: plain SGD)")
        dampening: float = Field(0.0, ge=0.0, le=1.0, description="dampening of the momentum buffer")
        nesterov: bool = Field(False, description="Nesterov momentum (needs momentum > 0, dampening 0)")

        @model_validator(mode="after")
        def _nesterov_needs_momentum(self) -> "SGD.Options":
            if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
                raise ValueError("nesterov needs momentum > 0 and dampening = 0")
            return self


class _AdamOptions(OptimizerPlugin.Options):
    betas: tuple[float, float] = Field((0.9, 0.999), description="(beta1, beta2); theory: beta1 < sqrt(beta2)")
    eps: float = Field(1e-8, gt=0.0, description="added to the denominator")
    amsgrad: bool = Field(False, description="use the AMSGrad maximum of second moments")

    @model_validator(mode="after")
    def _betas_in_range(self) -> "_AdamOptions":
        b1, b2 = self.betas
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ValueError("betas must lie in [0, 1)")
        return self


@register_optimizer("adam")
class Adam(OptimizerPlugin):
    """Adam (Kingma & Ba 2015): ``torch.optim.Adam``; weight decay is L2 added to the gradient.

    The convergence guarantee of Surendran et al. (2025) assumes beta1 < sqrt(beta2) < 1.
    """

    torch_class = torch.optim.Adam
    supports_fused = True
    Options = _AdamOptions


@register_optimizer("adamw")
class AdamW(OptimizerPlugin):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019): ``torch.optim.AdamW``."""

    torch_class = torch.optim.AdamW
    supports_fused = True
    Options = _AdamOptions


@register_optimizer("rmsprop")
class RMSprop(OptimizerPlugin):
    """RMSprop (Tieleman & Hinton 2012): ``torch.optim.RMSprop``."""

    torch_class = torch.optim.RMSprop

    class Options(OptimizerPlugin.Options):
        alpha: float = Field(0.99, gt=0.0, lt=1.0, description="smoothing of the squared-gradient average")
        eps: float = Field(1e-8, gt=0.0, description="added to the denominator")
        momentum: float = Field(0.0, ge=0.0, lt=1.0, description="momentum")


@register_optimizer("adagrad")
class Adagrad(OptimizerPlugin):
    """Adagrad (Duchi et al. 2011): ``torch.optim.Adagrad``."""

    torch_class = torch.optim.Adagrad

    class Options(OptimizerPlugin.Options):
        eps: float = Field(1e-10, gt=0.0, description="added to the denominator")


class Schedule(Configurable):
    """Step-size factor of update n (1-based) in epoch e (0-based): lr_n = lr * factor(n, e)."""

    def factor(self, iteration: int, epoch: int) -> float:
        raise NotImplementedError


@register_schedule("constant")
class Constant(Schedule):
    """gamma_n = gamma_0."""

    def factor(self, iteration: int, epoch: int) -> float:
        return 1.0


@register_schedule("inv_sqrt_iteration")
class InverseSqrtIteration(Schedule):
    """gamma_n = gamma_0 / sqrt(n), the step size of the convergence theorems (per iteration)."""

    def factor(self, iteration: int, epoch: int) -> float:
        return 1.0 / math.sqrt(max(iteration, 1))


@register_schedule("inv_sqrt_epoch")
class InverseSqrtEpoch(Schedule):
    """gamma_n = gamma_0 / sqrt(e + 1) in epoch e, as the paper authors' code does."""

    def factor(self, iteration: int, epoch: int) -> float:
        return 1.0 / math.sqrt(epoch + 1)


@register_schedule("warmup")
class Warmup(Schedule):
    """Linear warm-up over ``warmup_iterations`` updates, then constant or gamma_0 / sqrt(n / W).

    factor(n) = n / W for n < W; afterwards 1 (``then: constant``) or sqrt(W / n)
    (``then: inv_sqrt_iteration``), which joins the warm-up continuously at n = W.
    """

    class Options(PluginOptions):
        warmup_iterations: int = Field(100, ge=1, le=10**10, description="W, updates of linear warm-up")
        then: Literal["constant", "inv_sqrt_iteration"] = Field("constant", description="what follows the warm-up")

    options: Options

    def factor(self, iteration: int, epoch: int) -> float:
        w = self.options.warmup_iterations
        if iteration < w:
            return iteration / w
        return 1.0 if self.options.then == "constant" else math.sqrt(w / iteration)
