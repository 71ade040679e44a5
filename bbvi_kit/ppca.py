r"""Closed-form probabilistic PCA: the exact reference a Linear VAE is tested against.

Probabilistic PCA [1] is the linear-Gaussian latent variable model

.. math::

    z \sim \mathcal N(0, I_q), \qquad x \mid z \sim \mathcal N(W z + \mu, \sigma^2 I_d),

so that marginally :math:`x \sim \mathcal N(\mu, C)` with :math:`C = W W^\top + \sigma^2 I_d`.
Its maximum-likelihood estimate has a closed form [1, section 3.2]. Let

.. math::

    \bar x = \frac1n \sum_i x_i, \qquad
    S = \frac1n \sum_i (x_i - \bar x)(x_i - \bar x)^\top = U \Lambda U^\top,

with eigenvalues :math:`\lambda_1 \ge \dots \ge \lambda_d` (note the 1/n, not 1/(n-1): it is the
maximum-likelihood covariance). Then

.. math::

    \hat\mu = \bar x, \qquad
    \hat\sigma^2 = \frac{1}{d - q} \sum_{i = q + 1}^{d} \lambda_i, \qquad
    \hat W = U_q (\Lambda_q - \hat\sigma^2 I_q)^{1/2} R,

for any orthogonal :math:`R` (here :math:`R = I`), where :math:`U_q, \Lambda_q` hold the q
leading eigenvectors and eigenvalues. At the optimum :math:`\hat C` has eigenvalues
:math:`\lambda_1, \dots, \lambda_q, \hat\sigma^2, \dots, \hat\sigma^2` and
:math:`\operatorname{tr}(\hat C^{-1} S) = d`, so the minimal mean negative log-likelihood is

.. math::

    \min_{\mu, W, \sigma^2} -\frac1n \sum_i \log \mathcal N(x_i; \mu, C)
    = \frac12 \Big( d \log 2\pi + \sum_{i \le q} \log \lambda_i + (d - q) \log \hat\sigma^2 + d \Big).

The Linear VAE (Lucas et al. [2]: the decoder above with the encoder
:math:`q(z|x) = \mathcal N(V (x - \mu), D)`, D diagonal) attains this value at its global optimum:
there the encoder equals the exact posterior, the ELBO gap :math:`\mathrm{KL}(q \| p(z|x))` is
zero and the one-sample ELBO estimate has zero variance. Surendran et al. (AISTATS 2025) list the
Linear VAE among the models their convergence guarantees cover.

All computations run in float64 whatever the input dtype.

References:
    [1] M. E. Tipping and C. M. Bishop, "Probabilistic principal component analysis",
        Journal of the Royal Statistical Society B 61(3):611-622, 1999.
    [2] J. Lucas, G. Tucker, R. Grosse and M. Norouzi, "Don't blame the ELBO! A linear VAE
        perspective on posterior collapse", NeurIPS 2019.
    [3] A. Björck and G. H. Golub, "Numerical methods for computing angles between linear
        subspaces", Mathematics of Computation 27(123):579-594, 1973.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["PPCAFit", "fit_ppca", "ppca_max_nll", "ppca_nll", "subspace_distance"]

_LOG_2PI = math.log(2.0 * math.pi)


@dataclass(frozen=True)
class PPCAFit:
    r"""The maximum-likelihood pPCA parameters of a data set (float64 tensors).

    Attributes:
        mean: :math:`\hat\mu`, the sample mean, shape ``[d]``.
        W: :math:`\hat W = U_q (\Lambda_q - \hat\sigma^2 I)^{1/2}`, shape ``[d, q]``; its columns
            are orthogonal, ordered by decreasing norm, each defined up to sign.
        sigma2: :math:`\hat\sigma^2`, the mean of the ``d - q`` smallest eigenvalues of S.
        eigenvalues: all d eigenvalues of the sample covariance S (1/n normalisation), in
            descending order, round-off negatives clamped to 0; shape ``[d]``.
    """

    mean: Tensor
    W: Tensor
    sigma2: float
    eigenvalues: Tensor

    @property
    def data_dim(self) -> int:
        """d, the dimension of x."""
        return int(self.W.shape[0])

    @property
    def latent_dim(self) -> int:
        """q, the dimension of z."""
        return int(self.W.shape[1])

    def covariance(self) -> Tensor:
        r"""The model's marginal covariance :math:`C = W W^\top + \sigma^2 I_d`, shape ``[d, d]``."""
        eye = torch.eye(self.data_dim, dtype=self.W.dtype, device=self.W.device)
        return self.W @ self.W.T + self.sigma2 * eye


def _as_data_matrix(x: Tensor, name: str = "x") -> Tensor:
    """``x`` as a float64 ``[n, d]`` matrix, with its shape and values checked."""
    if not isinstance(x, Tensor):
        x = torch.as_tensor(x)
    if x.dim() != 2:
        raise ValueError(f"{name} must be a matrix [n, d] of n examples, got shape {tuple(x.shape)}")
    x = x.to(torch.float64)
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} has non-finite values (NaN or inf)")
    return x


def _sample_moments(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(mean [d], eigenvalues [d], eigenvectors [d, d])`` of the 1/n sample covariance of ``x``:
    eigenvalues in descending order with round-off negatives clamped to 0, eigenvectors as
    columns in the same order."""
    n = x.shape[0]
    mean = x.mean(dim=0)
    centred = x - mean
    cov = centred.T @ centred / n
    cov = 0.5 * (cov + cov.T)
    eigenvalues, eigenvectors = torch.linalg.eigh(cov)  # ascending
    eigenvalues = eigenvalues.flip(0).clamp_min(0.0)
    eigenvectors = eigenvectors.flip(1)
    return mean, eigenvalues, eigenvectors


def _check_dims(n: int, d: int, latent_dim: int) -> int:
    """``latent_dim`` as an int, after checking ``0 <= q < d`` and ``n >= 2``."""
    if isinstance(latent_dim, bool):
        raise ValueError(f"latent_dim must be an integer, got {latent_dim!r}")
    try:
        latent_dim = operator.index(latent_dim)
    except TypeError:
        raise ValueError(f"latent_dim must be an integer, got {latent_dim!r}") from None
    if not 0 <= latent_dim < d:
        raise ValueError(
            f"latent_dim q must satisfy 0 <= q < d = {d} (the data dimension), got q = {latent_dim}: "
            "pPCA needs at least one noise direction to estimate sigma^2"
        )
    if n < 2:
        raise ValueError(f"pPCA needs at least 2 examples to estimate a covariance, got n = {n}")
    return latent_dim


def _noise_variance(eigenvalues: Tensor, latent_dim: int) -> float:
    r""":math:`\hat\sigma^2`, the mean of the trailing eigenvalues; an error when it is zero."""
    sigma2 = float(eigenvalues[latent_dim:].mean())
    # Round-off leaves ~eps * lambda_1 in eigenvalues that are exactly zero in exact arithmetic.
    floor = eigenvalues.numel() * torch.finfo(torch.float64).eps * max(float(eigenvalues[0]), 1e-300)
    if sigma2 <= floor:
        raise ValueError(
            f"the data span at most {latent_dim} dimensions after centring (the d - q = "
            f"{eigenvalues.numel() - latent_dim} smallest eigenvalues of the sample covariance are 0), "
            "so sigma^2 = 0 and the pPCA likelihood is unbounded; use fewer latent dimensions, "
            "more examples (n > q + 1) or data with noise"
        )
    return sigma2


def fit_ppca(x: Tensor, latent_dim: int) -> PPCAFit:
    r"""Maximum-likelihood probabilistic PCA of ``x`` (Tipping & Bishop 1999, eqs. 7-8).

    .. math::

        \hat\mu = \bar x, \quad
        \hat\sigma^2 = \frac{1}{d-q}\sum_{i>q}\lambda_i, \quad
        \hat W = U_q(\Lambda_q - \hat\sigma^2 I)^{1/2},

    with :math:`\lambda_i, U` the eigen-decomposition of :math:`S = \frac1n\sum_i (x_i-\bar x)
    (x_i-\bar x)^\top`. When :math:`\lambda_q = \lambda_{q+1}` the last columns of
    :math:`\hat W` are 0 (the likelihood is then flat in their directions).

    Args:
        x: data, shape ``[n, d]`` (any float dtype; computed in float64).
        latent_dim: q, with ``0 <= q < d``.

    Returns:
        A :class:`PPCAFit` of float64 tensors on ``x``'s device.

    Raises:
        ValueError: ``x`` is not a finite ``[n, d]`` matrix, ``n < 2``, ``q`` is outside
            ``[0, d)``, or the centred data span at most q dimensions (then
            :math:`\hat\sigma^2 = 0` and the likelihood is unbounded).

    Example::

        fit = fit_ppca(x, latent_dim=4)
        fit.W.shape, fit.sigma2      # (torch.Size([d, 4]), 0.25...)
    """
    x = _as_data_matrix(x)
    n, d = x.shape
    latent_dim = _check_dims(n, d, latent_dim)
    mean, eigenvalues, eigenvectors = _sample_moments(x)
    sigma2 = _noise_variance(eigenvalues, latent_dim)
    scales = (eigenvalues[:latent_dim] - sigma2).clamp_min(0.0).sqrt()
    W = eigenvectors[:, :latent_dim] * scales
    return PPCAFit(mean=mean, W=W, sigma2=sigma2, eigenvalues=eigenvalues)


def ppca_nll(fit: PPCAFit, x: Tensor) -> float:
    r"""Mean negative log-likelihood of the rows of ``x`` under :math:`\mathcal N(\mu, W W^\top + \sigma^2 I)`.

    In nats per example, computed in float64 by the Woodbury identity with
    :math:`M = W^\top W + \sigma^2 I_q` (a q x q matrix, factored by Cholesky), r = x - mu:

    .. math::

        \log|C| = (d - q)\log\sigma^2 + \log|M|, \qquad
        r^\top C^{-1} r = \big(\|r\|^2 - r^\top W M^{-1} W^\top r\big) / \sigma^2,

        \mathrm{NLL} = \frac1n \sum_i \tfrac12\big(d\log 2\pi + \log|C| + r_i^\top C^{-1} r_i\big).

    This costs O(n d q) and never forms the d x d matrix C.

    Args:
        fit: the parameters; any :class:`PPCAFit` (not only a maximum-likelihood one), with
            ``sigma2 > 0``.
        x: data, shape ``[n, d]`` with d = ``fit.data_dim``.

    Returns:
        The mean negative log-likelihood, a Python float.
    """
    x = _as_data_matrix(x)
    W = fit.W.to(device=x.device, dtype=torch.float64)
    mean = fit.mean.to(device=x.device, dtype=torch.float64)
    sigma2 = float(fit.sigma2)
    d, q = W.shape
    if x.shape[1] != d or mean.shape != (d,):
        raise ValueError(
            f"x has {x.shape[1]} columns but the fit has W of shape {tuple(W.shape)} and mean of "
            f"shape {tuple(mean.shape)}"
        )
    if not sigma2 > 0.0 or not math.isfinite(sigma2):
        raise ValueError(f"sigma2 must be positive and finite, got {sigma2}")
    r = x - mean
    M = W.T @ W + sigma2 * torch.eye(q, dtype=torch.float64, device=x.device)
    L = torch.linalg.cholesky(M)
    # y = L^{-1} W^T r, so r^T W M^{-1} W^T r = ||y||^2.
    y = torch.linalg.solve_triangular(L, (r @ W).T, upper=False)
    quad = ((r * r).sum(dim=1) - (y * y).sum(dim=0)) / sigma2
    logdet = (d - q) * math.log(sigma2) + 2.0 * float(torch.log(torch.diagonal(L)).sum())
    return float(0.5 * (d * _LOG_2PI + logdet + quad.mean()))


def ppca_max_nll(x: Tensor, latent_dim: int) -> float:
    r"""The smallest mean negative log-likelihood any pPCA model with q latents gives ``x``.

    .. math::

        \frac12\Big(d\log 2\pi + \sum_{i\le q}\log\lambda_i + (d-q)\log\hat\sigma^2 + d\Big),

    the value at the maximum-likelihood estimate (Tipping & Bishop 1999, eq. 4 at eqs. 7-8),
    from the eigenvalues of the sample covariance alone; equal to
    ``ppca_nll(fit_ppca(x, latent_dim), x)``. This is a lower bound on the training-set negative
    ELBO of any Linear VAE with q latents, reached at the VAE's global optimum.

    Args:
        x: data, shape ``[n, d]``.
        latent_dim: q, with ``0 <= q < d``.

    Returns:
        Nats per example, a Python float.

    Raises:
        ValueError: as :func:`fit_ppca`.
    """
    x = _as_data_matrix(x)
    n, d = x.shape
    latent_dim = _check_dims(n, d, latent_dim)
    _, eigenvalues, _ = _sample_moments(x)
    sigma2 = _noise_variance(eigenvalues, latent_dim)
    logdet = float(torch.log(eigenvalues[:latent_dim]).sum()) + (d - latent_dim) * math.log(sigma2)
    return 0.5 * (d * _LOG_2PI + logdet + d)


def _orthonormal_basis(A: Tensor, name: str) -> Tensor:
    """Orthonormal columns spanning the columns of ``A`` (thin QR), which must be independent."""
    if not isinstance(A, Tensor):
        A = torch.as_tensor(A)
    if A.dim() != 2 or A.shape[1] == 0 or A.shape[1] > A.shape[0]:
        raise ValueError(f"{name} must be a [d, k] matrix with 1 <= k <= d, got shape {tuple(A.shape)}")
    A = A.to(torch.float64)
    if not bool(torch.isfinite(A).all()):
        raise ValueError(f"{name} has non-finite values (NaN or inf)")
    Q, R = torch.linalg.qr(A, mode="reduced")
    # R has A's singular values: a rank-deficient A has no k-dimensional column space.
    s = torch.linalg.svdvals(R)
    if not float(s[-1]) > max(A.shape) * torch.finfo(torch.float64).eps * float(s[0]):
        raise ValueError(f"the columns of {name} are linearly dependent (rank < {A.shape[1]})")
    return Q


def subspace_distance(A: Tensor, B: Tensor) -> float:
    r"""Sine of the largest principal angle between the column spaces of ``A`` and ``B``.

    With orthonormal bases :math:`Q_A, Q_B` (thin QR) and :math:`\dim A \ge \dim B`,

    .. math::

        \sin\theta_{\max} = \big\| (I - Q_A Q_A^\top) Q_B \big\|_2,

    the largest singular value of the part of :math:`Q_B` outside span(A) (Björck & Golub 1973).
    This form is accurate for small angles, where :math:`\sqrt{1 - \cos^2\theta}` from the
    singular values of :math:`Q_A^\top Q_B` would lose half the digits. The value lies in
    [0, 1]: 0 when the subspaces coincide (or the smaller lies in the larger), 1 when some
    direction of the smaller is orthogonal to the larger. It depends on the column spaces only:
    invariant to any invertible change of basis, column scaling included, and symmetric in A, B.

    Args:
        A, B: matrices ``[d, k_A]`` and ``[d, k_B]`` with linearly independent columns.

    Returns:
        A Python float in [0, 1].

    Example::

        subspace_distance(learned_W, true_W) < 0.05   # the same subspace, to ~3 degrees
    """
    QA = _orthonormal_basis(A, "A")
    QB = _orthonormal_basis(B, "B").to(QA.device)
    if QA.shape[0] != QB.shape[0]:
        raise ValueError(f"A and B must have the same number of rows, got {QA.shape[0]} and {QB.shape[0]}")
    if QA.shape[1] < QB.shape[1]:
        QA, QB = QB, QA
    residual = QB - QA @ (QA.T @ QB)
    return min(1.0, float(torch.linalg.matrix_norm(residual, ord=2)))
