"""Activation plugins, including the paper's generalized soft-clipping."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from bbvi_kit.plugin import PluginOptions
from bbvi_kit.registry import register_activation


def soft_clip(x: torch.Tensor, low: float, high: float, sharpness: float) -> torch.Tensor:
    r"""Generalized soft-clipping of Surendran et al. (AISTATS 2025):

    .. math:: f(x) = \frac{1}{s}\log\frac{1 + e^{s(x - s_1)}}{1 + e^{s(x - s_2)}} + s_1
                   = \mathrm{softplus}_s(x - s_1) - \mathrm{softplus}_s(x - s_2) + s_1,

    with softplus_s(u) = log(1 + e^{su}) / s. Bounded in (s1, s2), 1-Lipschitz, |f''| <= s/4,
    and f -> clip(x, s1, s2) as s -> infinity.

    Evaluated without cancellation: since softplus_s(u) - softplus_s(-u) = u, the same function is
    s2 - (softplus_s(s2 - x) - softplus_s(s1 - x)); each side of the midpoint uses the form whose
    two softplus terms are small there, so the result stays inside [s1, s2] even for huge |x|.
    """

    def softplus(u: torch.Tensor) -> torch.Tensor:
        return F.softplus(u, beta=sharpness, threshold=20.0)

    lower = low + (softplus(x - low) - softplus(x - high))
    upper = high - (softplus(high - x) - softplus(low - x))
    return torch.where(x <= 0.5 * (low + high), lower, upper)


class _Activation(nn.Module):
    class Options(PluginOptions):
        pass

    options: PluginOptions

    def __init__(self, **options: object) -> None:
        super().__init__()
        self.options = self.Options(**options)


@register_activation("generalized_soft_clipping")
class GeneralizedSoftClipping(_Activation):
    """Smooth, bounded, 1-Lipschitz activation (see :func:`soft_clip`); paper defaults s1=0, s2=50, s=5."""

    class Options(PluginOptions):
        s1: float = Field(0.0, description="lower bound")
        s2: float = Field(50.0, description="upper bound")
        sharpness: float = Field(5.0, gt=0.0, le=1e4, description="s; larger is closer to hard clipping")

        @model_validator(mode="after")
        def _ordered(self) -> "GeneralizedSoftClipping.Options":
            if not self.s1 < self.s2:
                raise ValueError("s1 must be smaller than s2")
            return self

    options: Options

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = self.options
        return soft_clip(x, o.s1, o.s2, o.sharpness)


@register_activation("relu")
class ReLU(_Activation):
    """max(x, 0); not smooth, so outside the paper's assumptions (its baseline)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x)


@register_activation("softplus")
class Softplus(_Activation):
    """log(1 + e^{beta x}) / beta."""

    class Options(PluginOptions):
        beta: float = Field(1.0, gt=0.0, description="sharpness")

    options: Options

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softplus(x, beta=self.options.beta)


@register_activation("tanh")
class Tanh(_Activation):
    """tanh(x): smooth, bounded, 1-Lipschitz."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x)


@register_activation("elu")
class ELU(_Activation):
    """x for x > 0, alpha (e^x - 1) otherwise."""

    class Options(PluginOptions):
        alpha: float = Field(1.0, gt=0.0, description="value approached as x -> -infinity is -alpha")

    options: Options

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.elu(x, alpha=self.options.alpha)
