r"""Convolutional encoder and decoder of the paper's image experiments.

Surendran, Godichon-Baggioni & Le Corff, "Theoretical Convergence Guarantees for Variational
Autoencoders", AISTATS 2025, trained Deep Gaussian VAEs on CelebA (64x64x3) and CIFAR-100
(32x32x3) with these networks (the authors' code):

- encoder: ``L`` convolutions, kernel 4, stride 2, padding 1, each halving height and width,
  ``C -> c_1 -> ... -> c_L``; flatten to ``c_L * (H / 2^L) * (W / 2^L)``; fully connected layers
  of widths ``hidden``; the mean and log-variance heads (built by the model plugin) follow;
- decoder, the mirror image: ``Linear`` latent -> hidden reversed -> flat size, reshape to
  ``(c_L, H / 2^L, W / 2^L)``, transposed convolutions (kernel 4, stride 2, padding 1, each
  doubling height and width) ``c_L -> ... -> c_1 -> C``; no activation on the last layer.

CelebA: channels [64, 128, 256, 512], hidden [1024], latent 100 (about 22.6M parameters);
CIFAR-100: channels [32, 64, 128], hidden [256], latent 100 (about 1.46M parameters).

The depth study (the paper's Figure 5) adds layers to this baseline: ``extra_conv_layers``
shape-keeping convolutions (kernel 3, stride 1, padding 1, ``c_L -> c_L``) at the deepest level
and ``extra_fc_layers`` fully connected layers of the width next to the latent code; both sit on
the latent side of their stack, in the encoder and, mirrored, in the decoder.

The activation (any :data:`~bbvi_kit.nn.mlp.ActivationSpec`, e.g. the paper's generalized
soft-clipping) follows every layer except the decoder's last. Both networks accept any number of
leading dims: they are flattened into one batch for the convolutions and restored afterwards, so
K particles drawn in one vectorised pass (``z`` of shape ``[K, B, latent]``) decode to
``[K, B, C, H, W]``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from bbvi_kit.nn.mlp import ActivationSpec, deepen, make_activation, mlp

KERNEL, STRIDE, PADDING = 4, 2, 1
"""Every resolution-changing (transposed) convolution: each halves (doubles) height and width."""


def conv_shape_problem(shape: Sequence[int], num_levels: int) -> str | None:
    """Why data of ``shape`` cannot go through ``num_levels`` stride-2 convolutions (``None``: it can).

    The networks need images ``(C, H, W)`` with ``H`` and ``W`` divisible by ``2^num_levels``, so
    every halving is exact and the decoder's doublings come back to ``(H, W)``.
    """
    factor = 2**num_levels
    need = f"images of shape (C, H, W) with H and W divisible by 2^{num_levels} = {factor}"
    if len(shape) != 3:
        return f"needs {need}, got data of shape {tuple(shape)}"
    _, height, width = shape
    if height % factor or width % factor:
        return f"needs {need}, got data of shape {tuple(shape)}"
    return None


def _check_shape(shape: Sequence[int], channels: Sequence[int]) -> tuple[int, int, int]:
    if not channels:
        raise ValueError("a convolutional network needs at least one entry in channels")
    problem = conv_shape_problem(shape, len(channels))
    if problem is not None:
        raise ValueError(f"{len(channels)} stride-2 convolutions {problem}")
    c, h, w = shape
    return int(c), int(h), int(w)


def deepest_shape(shape: Sequence[int], channels: Sequence[int]) -> tuple[int, int, int]:
    """``(c_L, H / 2^L, W / 2^L)``: the feature map after the last stride-2 convolution."""
    _, h, w = _check_shape(shape, channels)
    factor = 2 ** len(channels)
    return channels[-1], h // factor, w // factor


class ConvEncoder(nn.Module):
    r"""Image encoder of Surendran et al. (AISTATS 2025): stride-2 convolutions, then a fully
    connected stack; maps ``[..., C, H, W]`` to features ``[..., out_features]`` (the input of
    the mean and log-variance heads). Build it with :func:`conv_encoder`."""

    def __init__(self, event_shape: tuple[int, int, int], convs: nn.Sequential, fc: nn.Sequential,
                 out_features: int) -> None:
        super().__init__()
        self.event_shape = event_shape
        self.convs = convs
        self.fc = fc
        self.out_features = out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-3]
        h = self.convs(x.reshape(-1, *self.event_shape))
        h = self.fc(h.flatten(start_dim=1))
        return h.reshape(*lead, self.out_features)


class ConvDecoder(nn.Module):
    r"""Image decoder of Surendran et al. (AISTATS 2025), the mirror of :class:`ConvEncoder`:
    a fully connected stack to the flat deepest feature map, then transposed convolutions; maps
    ``[..., latent]`` to ``[..., C, H, W]`` (pre-sigmoid values: means before squashing, or
    Bernoulli logits). Build it with :func:`conv_decoder`."""

    def __init__(self, latent_dim: int, fc: nn.Sequential, deepest: tuple[int, int, int],
                 convs: nn.Sequential, event_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.fc = fc
        self.deepest = deepest
        self.convs = convs
        self.event_shape = event_shape

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        h = self.fc(z.reshape(-1, self.latent_dim))
        out = self.convs(h.reshape(-1, *self.deepest))
        return out.reshape(*lead, *self.event_shape)


def _extra_convs(channels: int, count: int, activation: ActivationSpec) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for _ in range(count):
        layers += [nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1), make_activation(activation)]
    return layers


def conv_encoder(
    event_shape: Sequence[int],
    channels: Sequence[int],
    hidden: Sequence[int],
    activation: ActivationSpec,
    *,
    extra_conv_layers: int = 0,
    extra_fc_layers: int = 0,
) -> ConvEncoder:
    r"""The paper's convolutional encoder body (Surendran et al., AISTATS 2025).

    ``Conv2d(k4, s2, p1)`` ``C -> channels[0] -> ... -> channels[-1]``, then ``extra_conv_layers``
    ``Conv2d(k3, s1, p1)`` at ``channels[-1]``, flatten (``channels[-1] H W / 4^L`` features),
    ``Linear`` through ``hidden`` and ``extra_fc_layers`` more of width ``hidden[-1]``, with
    ``activation`` after every layer. Its output (width ``hidden[-1]``, or the flat size when
    ``hidden`` is empty) feeds the heads of q(z|x).

    Raises:
        ValueError: ``event_shape`` is not ``(C, H, W)`` with H, W divisible by ``2^len(channels)``,
            or ``extra_fc_layers > 0`` with no ``hidden`` width to repeat.
    """
    c, h, w = _check_shape(event_shape, channels)
    layers: list[nn.Module] = []
    for n_in, n_out in zip([c, *channels[:-1]], channels):
        layers += [nn.Conv2d(n_in, n_out, KERNEL, STRIDE, PADDING), make_activation(activation)]
    layers += _extra_convs(channels[-1], extra_conv_layers, activation)
    flat = math.prod(deepest_shape(event_shape, channels))
    widths = [flat, *deepen(list(hidden), extra_fc_layers)]
    fc = mlp(widths, activation, final_activation=True)
    return ConvEncoder((c, h, w), nn.Sequential(*layers), fc, widths[-1])


def conv_decoder(
    latent_dim: int,
    event_shape: Sequence[int],
    channels: Sequence[int],
    hidden: Sequence[int],
    activation: ActivationSpec,
    *,
    extra_conv_layers: int = 0,
    extra_fc_layers: int = 0,
) -> ConvDecoder:
    r"""The paper's convolutional decoder (Surendran et al., AISTATS 2025), mirroring
    :func:`conv_encoder`; ``channels`` are given input side first, as for the encoder, and
    ``hidden`` latent side first (the encoder's ``hidden`` reversed for an exact mirror).

    ``Linear`` ``latent_dim -> hidden[0]``, ``extra_fc_layers`` more of width ``hidden[0]``, on
    through ``hidden`` to the flat size ``channels[-1] H W / 4^L``; reshape to
    ``(channels[-1], H / 2^L, W / 2^L)``; ``extra_conv_layers`` ``Conv2d(k3, s1, p1)``;
    ``ConvTranspose2d(k4, s2, p1)`` ``channels[-1] -> ... -> channels[0] -> C``. ``activation``
    follows every layer but the last, whose output is the pre-sigmoid image.

    Raises:
        ValueError: as :func:`conv_encoder`.
    """
    c, h, w = _check_shape(event_shape, channels)
    deepest = deepest_shape(event_shape, channels)
    fc = mlp([latent_dim, *deepen(list(hidden), extra_fc_layers, at_start=True), math.prod(deepest)],
             activation, final_activation=True)
    layers: list[nn.Module] = _extra_convs(channels[-1], extra_conv_layers, activation)
    outs = [*reversed(channels[:-1]), c]
    for i, (n_in, n_out) in enumerate(zip(reversed(channels), outs)):
        layers.append(nn.ConvTranspose2d(n_in, n_out, KERNEL, STRIDE, PADDING))
        if i < len(outs) - 1:
            layers.append(make_activation(activation))
    return ConvDecoder(latent_dim, fc, deepest, nn.Sequential(*layers), (c, h, w))
