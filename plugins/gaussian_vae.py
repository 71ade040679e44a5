"""The Deep Gaussian VAE with MLP or convolutional encoder and decoder."""

from __future__ import annotations

import math
from typing import Any, Literal

import pyro
import pyro.distributions as dist
import torch
from pydantic import Field, ValidationInfo, field_validator, model_validator
from torch import nn

from bbvi_kit import BBVIModel, DataInfo, PluginOptions, register_model
from bbvi_kit.errors import InputError
from bbvi_kit.nn import (
    ActivationSpec,
    check_activation,
    conv_decoder,
    conv_encoder,
    conv_shape_problem,
    deepen,
    mlp,
    soft_clip,
)
from bbvi_kit.plugin import NestedOptionsError


MAX_WIDTH = 100_000
"""Widest hidden layer or convolution (units or channels). Far wider than any VAE in the
literature; a single 100 000 x 100 000 layer is already 40 GB of float32 weights."""
MAX_LAYERS = 100
"""Most entries of ``hidden``, ``decoder_hidden`` and ``channels`` (``extra_*_layers`` add at most
100 more each): deeper than any published VAE, and each layer is a Python module to build."""
MAX_HIDDEN_WEIGHTS = 10**9
"""Most weights between hidden layers (encoder and decoder together, 4 GB in float32, about
16 GB with gradients and Adam's moments): within reach of one large GPU, and refused at
validation rather than failing, or swapping the machine to a halt, when the model is built."""


def _chain_weights(widths: list[int], per_pair: int = 1) -> int:
    return sum(a * b * per_pair for a, b in zip(widths[:-1], widths[1:]))


def hidden_weights(options: "GaussianVAEOptions") -> int:
    """Weights between consecutive hidden layers (and, for ``conv``, between convolutions: kernel
    4 x 4, extra ones 3 x 3), encoder and decoder; a lower bound of the model's size."""
    encoder = deepen(options.hidden, options.extra_fc_layers) if options.hidden else []
    decoder_widths = options.decoder_hidden if options.decoder_hidden is not None else options.hidden[::-1]
    decoder = deepen(decoder_widths, options.extra_fc_layers, at_start=True) if decoder_widths else []
    total = _chain_weights(encoder) + _chain_weights(decoder)
    if options.network == "conv":
        last = options.channels[-1]
        total += 2 * (_chain_weights(options.channels, 16) + options.extra_conv_layers * last * last * 9)
    return total


class GaussianVAEOptions(PluginOptions):
    latent_dim: int = Field(16, ge=1, le=100_000, description="dimension of z")
    hidden: list[int] = Field(
        [256, 128], max_length=MAX_LAYERS,
        description="encoder hidden widths, input side first (conv: after flattening)",
    )
    decoder_hidden: list[int] | None = Field(
        None, max_length=MAX_LAYERS, description="decoder hidden widths; null mirrors `hidden`"
    )
    network: Literal["mlp", "conv"] = Field(
        "mlp", description="mlp: fully connected on the flattened data; conv: the paper's image networks"
    )
    channels: list[int] = Field(
        [64, 128, 256, 512],
        min_length=1,
        max_length=MAX_LAYERS,
        description="conv: channels of the stride-2 convolutions (kernel 4, padding 1), input side first",
    )
    extra_fc_layers: int = Field(
        0, ge=0, le=100, description="extra fully connected layers of width hidden[-1] (mirrored in the decoder)"
    )
    extra_conv_layers: int = Field(
        0, ge=0, le=100, description="conv: extra kernel-3 stride-1 convolutions at the deepest level (mirrored)"
    )
    activation: ActivationSpec = Field("tanh", description="activation plugin between hidden layers")
    likelihood: Literal["gaussian", "bernoulli"] = Field("gaussian", description="p(x|z)")
    decoder_scale: float = Field(0.1, gt=0.0, description="c, the fixed std of the Gaussian decoder")
    decoder_output: Literal["sigmoid", "identity"] = Field(
        "sigmoid", description="squashing of the Gaussian decoder mean (sigmoid keeps it bounded)"
    )
    mean_bound: float = Field(50.0, gt=0.0, description="encoder mean soft-clipped to [-b, b]")
    logvar_bound: float = Field(20.0, gt=0.0, description="encoder log-variance soft-clipped to [-b, b]")

    @field_validator("hidden", "decoder_hidden", "channels")
    @classmethod
    def _positive_widths(cls, widths: list[int] | None) -> list[int] | None:
        if widths is not None and any(w < 1 or w > MAX_WIDTH for w in widths):
            raise ValueError(f"layer widths must lie in 1..{MAX_WIDTH}")
        return widths

    @field_validator("extra_fc_layers")
    @classmethod
    def _widths_to_repeat(cls, extra: int, info: ValidationInfo) -> int:
        if extra > 0 and (info.data.get("hidden") == [] or info.data.get("decoder_hidden") == []):
            raise ValueError("extra layers repeat the width hidden[-1] (decoder_hidden[0]), so those must not be empty")
        return extra

    @field_validator("extra_conv_layers")
    @classmethod
    def _conv_only(cls, extra: int, info: ValidationInfo) -> int:
        if extra > 0 and info.data.get("network") == "mlp":
            raise ValueError("extra convolutional layers need network: conv (the mlp network has no convolutions)")
        return extra

    _activation = field_validator("activation")(lambda cls, v: check_activation(v))

    @model_validator(mode="after")
    def _fits_in_memory(self) -> "GaussianVAEOptions":
        """Refuse networks whose hidden layers alone hold more than :data:`MAX_HIDDEN_WEIGHTS`
        weights, before anything tries to allocate them (the layers next to the data and the
        latent space depend on the data and are not counted)."""
        count = hidden_weights(self)
        if count > MAX_HIDDEN_WEIGHTS:
            conv_heavy = self.network == "conv" and _chain_weights(self.channels, 16) > _chain_weights(self.hidden)
            raise NestedOptionsError([(
                "channels" if conv_heavy else "hidden",
                f"the hidden layers would hold {count:.3g} weights, more than the {MAX_HIDDEN_WEIGHTS:.0e} allowed",
            )])
        return self


@register_model("gaussian_vae")
class GaussianVAE(BBVIModel):
    r"""Deep Gaussian VAE (Kingma & Welling 2014), as analysed by Surendran et al. (AISTATS 2025).

    - prior p(z) = N(0, I);
    - decoder p(x|z) = N(G_theta(z), c^2 I) with fixed c (``likelihood: gaussian``; G ends in a
      sigmoid unless ``decoder_output: identity``) or Bernoulli(logits = G_theta(z))
      (``likelihood: bernoulli``, the authors' code; fractional pixels in [0, 1] are scored by
      the same cross-entropy formula, so its values are not normalised densities);
    - encoder q(z|x) = N(mu_phi(x), diag sigma_phi^2(x)), z = mu + sigma * eps.

    The encoder heads are soft-clipped (generalized soft-clipping, sharpness 5): the mean to
    [-mean_bound, mean_bound] and the log-variance to [-logvar_bound, logvar_bound], so the
    covariance stays positive definite with eigenvalues >= exp(-logvar_bound), as the
    convergence theorems assume. Parameter groups: ``phi`` = encoder and heads, ``theta`` = decoder.

    Networks (``network``):

    - ``mlp`` (default, for small data): fully connected on the flattened data, widths
      ``hidden`` (encoder) and ``decoder_hidden`` (decoder; the mirror of ``hidden`` by default);
    - ``conv``: the paper's image networks (:func:`bbvi_kit.nn.conv_encoder` /
      :func:`bbvi_kit.nn.conv_decoder`): stride-2 convolutions through ``channels``, then fully
      connected layers ``hidden``; the decoder mirrors them with transposed convolutions. Needs data
      ``(C, H, W)`` with H and W divisible by ``2^len(channels)``. CelebA: ``channels
      [64, 128, 256, 512]``, ``hidden [1024]`` (22.6M parameters at latent 100); CIFAR-100:
      ``channels [32, 64, 128]``, ``hidden [256]`` (1.46M).

    The depth study of the paper (Figure 5) adds ``extra_fc_layers`` fully connected layers of
    width ``hidden[-1]`` (both networks) and ``extra_conv_layers`` kernel-3 convolutions at the
    deepest level (``conv`` only), each on the latent side of the encoder and mirrored in the decoder.
    """

    Options = GaussianVAEOptions
    options: GaussianVAEOptions

    def __init__(self, data: DataInfo, **options: Any) -> None:
        super().__init__(data, **options)
        o = self.options
        self.event_shape = tuple(data.shape)
        if o.network == "conv":
            problem = conv_shape_problem(self.event_shape, len(o.channels))
            if problem is not None:
                raise InputError(
                    f"model.channels: network conv with {len(o.channels)} stride-2 convolutions {problem} "
                    f"(dataset {data.name!r})"
                )
        # Built in this order (encoder, heads, decoder) so that seeded initialisations are stable.
        self.encoder, enc_out = self._build_encoder()
        self.loc_head = nn.Linear(enc_out, o.latent_dim)
        self.logvar_head = nn.Linear(enc_out, o.latent_dim)
        self.decoder = self._build_decoder()

    def _build_encoder(self) -> tuple[nn.Module, int]:
        """The encoder body (everything before the heads) and the width of its output."""
        o = self.options
        if o.network == "conv":
            encoder = conv_encoder(self.event_shape, o.channels, o.hidden, o.activation,
                                   extra_conv_layers=o.extra_conv_layers, extra_fc_layers=o.extra_fc_layers)
            return encoder, encoder.out_features
        widths = [math.prod(self.event_shape), *deepen(o.hidden, o.extra_fc_layers)]
        return mlp(widths, o.activation, final_activation=True), widths[-1]

    def _build_decoder(self) -> nn.Module:
        """G_theta without its final squashing: ``[..., latent_dim]`` to the pre-sigmoid output."""
        o = self.options
        hidden = list(reversed(o.hidden)) if o.decoder_hidden is None else o.decoder_hidden
        if o.network == "conv":
            return conv_decoder(o.latent_dim, self.event_shape, o.channels, hidden, o.activation,
                                extra_conv_layers=o.extra_conv_layers, extra_fc_layers=o.extra_fc_layers)
        widths = [o.latent_dim, *deepen(hidden, o.extra_fc_layers, at_start=True), math.prod(self.event_shape)]
        return mlp(widths, o.activation)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation of q(z|x) for a batch ``[..., *event_shape]``."""
        if self.options.network == "mlp":
            x = x.flatten(start_dim=x.dim() - len(self.event_shape))
        h = self.encoder(x)
        o = self.options
        loc = soft_clip(self.loc_head(h), -o.mean_bound, o.mean_bound, 5.0)
        logvar = soft_clip(self.logvar_head(h), -o.logvar_bound, o.logvar_bound, 5.0)
        return loc, torch.exp(0.5 * logvar)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder output G_theta(z) before the sigmoid (means or logits) for ``z`` of shape
        ``[..., latent_dim]``: ``[..., *event_shape]``."""
        out = self.decoder(z)
        if self.options.network == "mlp":
            out = out.reshape(out.shape[:-1] + self.event_shape)
        return out

    def model(self, x: torch.Tensor) -> None:
        o = self.options
        with pyro.plate("data", x.shape[0], dim=-1):
            prior = dist.Normal(x.new_zeros(x.shape[0], o.latent_dim), 1.0).to_event(1)
            z = pyro.sample("z", prior)
            out = self.decode(z)
            n_event = len(self.event_shape)
            if o.likelihood == "bernoulli":
                likelihood = dist.Bernoulli(logits=out, validate_args=False).to_event(n_event)
            else:
                mean = torch.sigmoid(out) if o.decoder_output == "sigmoid" else out
                likelihood = dist.Normal(mean, o.decoder_scale).to_event(n_event)
            pyro.sample("x", likelihood, obs=x)

    def guide(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0], dim=-1):
            loc, scale = self.encode(x)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        phi = [*self.encoder.parameters(), *self.loc_head.parameters(), *self.logvar_head.parameters()]
        return {"phi": phi, "theta": list(self.decoder.parameters())}
