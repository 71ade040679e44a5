"""The linear VAE, whose optimum is probabilistic PCA's maximum likelihood."""

from __future__ import annotations

import math
from typing import Any, Sized, cast

import pyro
import pyro.distributions as dist
import torch
from pydantic import Field
from torch import nn

from torch.utils.data import Dataset

from bbvi_kit import BBVIModel, DataInfo, DataSplits, PluginOptions, register_model
from bbvi_kit.data import as_args, batch_loader
from bbvi_kit.ppca import fit_ppca, ppca_nll


MAX_REFERENCE_DIM = 4096  # the reference needs the d x d sample covariance and its eigenvectors


def _as_matrix(dataset: Dataset) -> torch.Tensor:
    """The first tensor of every example of ``dataset``, flattened: ``[n, d]``."""
    rows = [as_args(batch)[0] for batch in batch_loader(dataset, 4096, shuffle=False)]
    return torch.cat(rows).flatten(start_dim=1)


@register_model("linear_vae")
class LinearVAE(BBVIModel):
    r"""Linear VAE in the standard form of Lucas et al. (NeurIPS 2019):

    - p(z) = N(0, I),  p(x|z) = N(W z + mu, sigma^2 I) with sigma learnable;
    - q(z|x) = N(V (x - mu), D) with D diagonal.

    Its global optimum matches probabilistic PCA's maximum likelihood (Tipping & Bishop 1999),
    which has a closed form: :meth:`reference_losses` gives it, so every evaluation records the
    gap between the Linear VAE's negative ELBO and the exact optimum (``train_loss_gap`` with
    ``training.eval_train``, and ``test_loss_gap``). Parameter groups: ``theta`` = (W, mu,
    log sigma), ``phi`` = (V, log D); mu is shared and counted in theta.
    """

    class Options(PluginOptions):
        latent_dim: int = Field(4, ge=1, le=100_000, description="dimension of z")
        init_scale: float = Field(0.1, gt=0.0, description="std of the initial W and V entries")
        init_sigma: float = Field(1.0, gt=0.0, description="initial decoder std sigma")
        ppca_reference: bool = Field(
            True, description=f"record the gap to the exact pPCA optimum (for data of at most {MAX_REFERENCE_DIM} dims)"
        )

    options: Options

    def __init__(self, data: DataInfo, **options: Any) -> None:
        super().__init__(data, **options)
        o = self.options
        self.event_shape = tuple(data.shape)
        size = math.prod(self.event_shape)
        self.W = nn.Parameter(o.init_scale * torch.randn(size, o.latent_dim))
        self.mu = nn.Parameter(torch.zeros(size))
        self.log_sigma = nn.Parameter(torch.tensor(math.log(o.init_sigma)))
        self.V = nn.Parameter(o.init_scale * torch.randn(o.latent_dim, size))
        self.log_D = nn.Parameter(torch.zeros(o.latent_dim))

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(start_dim=x.dim() - len(self.event_shape))

    def model(self, x: torch.Tensor) -> None:
        x = self._flat(x)
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], self.options.latent_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T + self.mu, self.log_sigma.exp()).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        x = self._flat(x)
        with pyro.plate("data", x.shape[0], dim=-1):
            loc = (x - self.mu) @ self.V.T
            pyro.sample("z", dist.Normal(loc, (0.5 * self.log_D).exp()).to_event(1))

    def reference_losses(self, data: DataSplits) -> dict[str, float]:
        r"""The exact optimum: ``train_loss`` = min over pPCA parameters of the training set's mean
        negative log-likelihood (no Linear VAE's training negative ELBO can be lower), and
        ``test_loss`` = the test set's mean negative log-likelihood under that maximum-likelihood
        fit, in nats per example (:mod:`bbvi_kit.ppca`). Empty when ``ppca_reference`` is off,
        the data has more than ``MAX_REFERENCE_DIM`` dims, or the fit is degenerate.
        """
        size = math.prod(self.event_shape)
        if not self.options.ppca_reference or size > MAX_REFERENCE_DIM:
            return {}
        train = _as_matrix(data.train)
        try:
            fit = fit_ppca(train, self.options.latent_dim)
        except ValueError:  # q >= d, or data spanning at most q dims: no finite optimum
            return {}
        out = {"train_loss": ppca_nll(fit, train)}
        if len(cast(Sized, data.test)) > 0:
            out["test_loss"] = ppca_nll(fit, _as_matrix(data.test))
        return out

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"phi": [self.V, self.log_D], "theta": [self.W, self.mu, self.log_sigma]}
