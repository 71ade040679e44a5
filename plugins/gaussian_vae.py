"""The Deep Gaussian VAE with MLP encoder and decoder."""

from __future__ import annotations

import math
from typing import Any, Literal

import pyro
import pyro.distributions as dist
import torch
from pydantic import Field, field_validator
from torch import nn

from bbvi_kit import BBVIModel, DataInfo, PluginOptions, register_model
from bbvi_kit.nn import ActivationSpec, check_activation, mlp, soft_clip


class GaussianVAEOptions(PluginOptions):
    latent_dim: int = Field(16, ge=1, le=100_000, description="dimension of z")
    hidden: list[int] = Field([256, 128], description="encoder hidden widths, input side first")
    decoder_hidden: list[int] | None = Field(None, description="decoder hidden widths; null mirrors `hidden`")
    activation: ActivationSpec = Field("tanh", description="activation plugin between hidden layers")
    likelihood: Literal["gaussian", "bernoulli"] = Field("gaussian", description="p(x|z)")
    decoder_scale: float = Field(0.1, gt=0.0, description="c, the fixed std of the Gaussian decoder")
    decoder_output: Literal["sigmoid", "identity"] = Field(
        "sigmoid", description="squashing of the Gaussian decoder mean (sigmoid keeps it bounded)"
    )
    mean_bound: float = Field(50.0, gt=0.0, description="encoder mean soft-clipped to [-b, b]")
    logvar_bound: float = Field(20.0, gt=0.0, description="encoder log-variance soft-clipped to [-b, b]")

    @field_validator("hidden", "decoder_hidden")
    @classmethod
    def _positive_widths(cls, widths: list[int] | None) -> list[int] | None:
        if widths is not None and any(w < 1 or w > 1_000_000 for w in widths):
            raise ValueError("layer widths must lie in 1..1000000")
        return widths

    _activation = field_validator("activation")(lambda cls, v: check_activation(v))


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
    convergence theorems assume. Parameter groups: ``phi`` = encoder, ``theta`` = decoder.
    """

    Options = GaussianVAEOptions

    def __init__(self, data: DataInfo, **options: Any) -> None:
        super().__init__(data, **options)
        o = self.options
        self.event_shape = tuple(data.shape)
        size = math.prod(self.event_shape)
        dec_hidden = list(reversed(o.hidden)) if o.decoder_hidden is None else o.decoder_hidden
        self.encoder = mlp([size, *o.hidden], o.activation, final_activation=True)
        enc_out = o.hidden[-1] if o.hidden else size
        self.loc_head = nn.Linear(enc_out, o.latent_dim)
        self.logvar_head = nn.Linear(enc_out, o.latent_dim)
        self.decoder = mlp([o.latent_dim, *dec_hidden, size], o.activation)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation of q(z|x) for a batch ``[..., *event_shape]``."""
        h = self.encoder(x.flatten(start_dim=x.dim() - len(self.event_shape)))
        o = self.options
        loc = soft_clip(self.loc_head(h), -o.mean_bound, o.mean_bound, 5.0)
        logvar = soft_clip(self.logvar_head(h), -o.logvar_bound, o.logvar_bound, 5.0)
        return loc, torch.exp(0.5 * logvar)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder output for ``z`` of shape ``[..., latent_dim]``: ``[..., *event_shape]``."""
        out = self.decoder(z)
        return out.reshape(out.shape[:-1] + self.event_shape)

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
