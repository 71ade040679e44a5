r"""Data drawn from a known probabilistic PCA model: a synthetic set whose optimum is exact.

.. math::

    x = W z + \mu + \sigma\varepsilon, \qquad z \sim \mathcal N(0, I_q), \quad
    \varepsilon \sim \mathcal N(0, I_d),

so :math:`x \sim \mathcal N(\mu, W W^\top + \sigma^2 I_d)`. A Linear VAE trained on it should
approach the closed-form maximum likelihood of :mod:`bbvi_kit.ppca` (Tipping & Bishop 1999) and
recover the span of the true W.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field, model_validator
from torch.utils.data import TensorDataset

from bbvi_kit.data.base import DataInfo, DatasetPlugin, DataSplits
from bbvi_kit.plugin import PluginOptions
from bbvi_kit.registry import register_dataset

__all__ = ["SyntheticPPCA", "true_parameters"]


def _generator(seed: int, stream: int) -> torch.Generator:
    """An independent torch generator for one stream (0: parameters, 1: train, 2: test) of ``seed``."""
    state = np.random.SeedSequence(seed).spawn(3)[stream].generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & (2**63 - 1))


def true_parameters(
    data_dim: int, latent_dim: int, noise_std: float, seed: int, max_scale: float = 3.0, min_scale: float = 1.0
) -> dict[str, torch.Tensor]:
    r"""The true pPCA parameters of ``synthetic_ppca`` for these options (float32).

    :math:`W = Q\,\mathrm{diag}(s_1, \dots, s_q)` with Q the orthonormal factor of the thin QR
    decomposition of a d x q matrix of iid N(0, 1) entries (signs fixed so that diag(R) > 0) and
    scales :math:`s_k` evenly spaced from ``max_scale`` down to ``min_scale``. The columns of W
    are therefore orthogonal, :math:`W^\top W = \mathrm{diag}(s_k^2)`, and the model covariance
    :math:`W W^\top + \sigma^2 I` has eigenvalues :math:`s_k^2 + \sigma^2` along the columns and
    :math:`\sigma^2` elsewhere: with ``min_scale > 0`` the subspace span(W) is identifiable, and
    with distinct scales so is each column, up to sign. :math:`\mu` has iid N(0, 1) entries.

    Returns:
        ``{"W": [d, q], "mu": [d], "sigma": []}``.
    """
    g = _generator(seed, 0)
    gauss = torch.randn(data_dim, latent_dim, generator=g, dtype=torch.float64)
    Q, R = torch.linalg.qr(gauss, mode="reduced")
    Q = Q * torch.sign(torch.diagonal(R))
    scales = torch.linspace(max_scale, min_scale, latent_dim, dtype=torch.float64)
    mu = torch.randn(data_dim, generator=g, dtype=torch.float64)
    return {
        "W": (Q * scales).to(torch.float32),
        "mu": mu.to(torch.float32),
        "sigma": torch.tensor(noise_std, dtype=torch.float32),
    }


@register_dataset("synthetic_ppca")
class SyntheticPPCA(DatasetPlugin):
    r"""Examples :math:`x = W z + \mu + \sigma\varepsilon` of a known pPCA model, as float32 ``[d]`` vectors.

    The true parameters (see :func:`true_parameters`: W with orthonormal columns scaled from
    ``max_scale`` down to ``min_scale``, mu ~ N(0, I)) are returned in ``DataSplits.truth`` as
    ``{"W", "mu", "sigma"}``. ``seed`` fixes the parameters and both samples, independently of
    the training seed; the parameters, the training set and the test set come from three
    independent random streams, so changing ``num_test`` leaves the training set unchanged and
    vice versa.
    """

    class Options(PluginOptions):
        data_dim: int = Field(20, ge=2, le=100_000, description="d, the dimension of x")
        latent_dim: int = Field(4, ge=1, le=100_000, description="q, the dimension of z (q < d)")
        num_train: int = Field(5000, ge=2, le=100_000_000, description="number of training examples")
        num_test: int = Field(1000, ge=1, le=100_000_000, description="number of test examples")
        noise_std: float = Field(0.5, gt=0.0, description="sigma, the std of the isotropic observation noise")
        max_scale: float = Field(3.0, gt=0.0, description="norm of the first (largest) column of the true W")
        min_scale: float = Field(1.0, gt=0.0, description="norm of the last (smallest) column of the true W")
        seed: int = Field(0, ge=0, le=2**63 - 1, description="seed of the true parameters and of the samples")

        @model_validator(mode="after")
        def _consistent(self) -> "SyntheticPPCA.Options":
            if self.latent_dim >= self.data_dim:
                raise ValueError(f"latent_dim ({self.latent_dim}) must be smaller than data_dim ({self.data_dim})")
            if self.min_scale > self.max_scale:
                raise ValueError(f"min_scale ({self.min_scale}) must not exceed max_scale ({self.max_scale})")
            return self

    options: Options

    def load(self) -> DataSplits:
        o = self.options
        truth = true_parameters(o.data_dim, o.latent_dim, o.noise_std, o.seed, o.max_scale, o.min_scale)

        def sample(n: int, stream: int) -> torch.Tensor:
            g = _generator(o.seed, stream)
            z = torch.randn(n, o.latent_dim, generator=g)
            eps = torch.randn(n, o.data_dim, generator=g)
            return z @ truth["W"].T + truth["mu"] + truth["sigma"] * eps

        info = DataInfo(name="synthetic_ppca", shape=(o.data_dim,), num_train=o.num_train, num_test=o.num_test)
        return DataSplits(
            train=TensorDataset(sample(o.num_train, 1)),
            test=TensorDataset(sample(o.num_test, 2)),
            info=info,
            truth=truth,
        )
