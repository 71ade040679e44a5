"""The conjugate Gaussian model of the estimator and objective tests.

Model z ~ N(mu0, 1), x | z ~ N(z, 1); guide q(z) = N(m, s^2). Closed forms: log p(x) =
log N(x; mu0, 2) and ELBO = -log 2pi - ((x - m)^2 + s^2)/2 - ((m - mu0)^2 + s^2)/2 + log(2 pi e s^2)/2.
The objective tests also use a guide with known particles, m + s * eps for fixed eps.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import pyro
import pyro.distributions as dist
import torch

from bbvi_kit import BBVILoss

F64 = torch.float64
X_OBS = 1.5


class Conjugate:
    """The conjugate Gaussian model with float64 parameters theta = mu0, phi = (m, log s)."""

    def __init__(self, mu0: float = 0.3, m: float = 0.2, s: float = 0.8, x: float = X_OBS) -> None:
        self.x = x
        self.mu0 = torch.tensor(mu0, dtype=torch.float64, requires_grad=True)
        self.m = torch.tensor(m, dtype=torch.float64, requires_grad=True)
        self.log_s = torch.tensor(math.log(s), dtype=torch.float64, requires_grad=True)
        self.params = [self.mu0, self.m, self.log_s]
        self.model_calls = 0
        self.guide_calls = 0

    def model(self, x: torch.Tensor) -> None:
        self.model_calls += 1
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(self.mu0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        self.guide_calls += 1
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.Normal(self.m, self.log_s.exp()))

    def log_weight(self, z: torch.Tensor) -> torch.Tensor:
        s = self.log_s.exp()
        return (
            dist.Normal(z, 1.0).log_prob(torch.tensor(self.x, dtype=torch.float64))
            + dist.Normal(self.mu0, 1.0).log_prob(z)
            - dist.Normal(self.m, s).log_prob(z)
        )

    def exact_elbo(self) -> torch.Tensor:
        s = self.log_s.exp()
        return (
            -math.log(2 * math.pi)
            - 0.5 * ((self.x - self.m) ** 2 + s**2)
            - 0.5 * ((self.m - self.mu0) ** 2 + s**2)
            + 0.5 * torch.log(2 * math.pi * math.e * s**2)
        )

    def quadrature_iwae2(self, nodes: int = 80) -> torch.Tensor:
        eps, weights = np.polynomial.hermite_e.hermegauss(nodes)
        eps = torch.tensor(eps, dtype=torch.float64)
        weights = torch.tensor(weights / math.sqrt(2 * math.pi), dtype=torch.float64)
        z = self.m + self.log_s.exp() * eps
        lw = self.log_weight(z)
        pair = torch.logaddexp(lw[:, None], lw[None, :]) - math.log(2)
        return (weights[:, None] * weights[None, :] * pair).sum()

    def log_evidence(self) -> torch.Tensor:
        """log p(x) = log N(x; mu0, 2)."""
        return dist.Normal(self.mu0, math.sqrt(2.0)).log_prob(torch.tensor(self.x, dtype=torch.float64))

    def exact_grad(self, value: torch.Tensor) -> torch.Tensor:
        return torch.stack(torch.autograd.grad(value, self.params))


def closed_form_elbo(x: float, m: float, s: float) -> float:
    """The ELBO of :class:`Conjugate` with mu0 = 0."""
    return Conjugate(0.0, m, s, x=x).exact_elbo().item()


def log_evidence(x: float) -> float:
    """log p(x) of :class:`Conjugate` with mu0 = 0."""
    return Conjugate(0.0, x=x).log_evidence().item()


def log_weight(z: torch.Tensor, x: float, m: float, s: float) -> torch.Tensor:
    """log p(x, z) - log q(z) of :class:`Conjugate` with mu0 = 0, by torch.distributions."""
    return Conjugate(0.0, m, s, x=x).log_weight(z).detach()


model = Conjugate(0.0).model
"""The model with mu0 = 0."""


def fixed_guide(m: float, s: float, eps: torch.Tensor) -> Callable[[torch.Tensor], None]:
    """The guide q(z) = N(m, s^2) whose draws are m + s * ``eps`` (broadcast to the sample's
    shape: particles first, then the batch)."""

    class FixedNormal(dist.Normal):
        def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
            shape = self._extended_shape(sample_shape)
            return self.loc.expand(shape) + self.scale.expand(shape) * eps.to(F64).expand(shape)

    def guide(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", FixedNormal(torch.tensor(m, dtype=F64), torch.tensor(s, dtype=F64)))

    return guide


REPLICATES = 4000  # independent examples per pass (same x), averaged by the per-example loss
PASSES = 16  # independent passes; their spread gives the Monte Carlo standard error


def estimate_gradient(problem: Conjugate, objective: Any, estimator: Any,
                      passes: int = PASSES) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error over passes of the gradient of the (per-example) loss."""
    loss_fn = BBVILoss(problem.model, problem.guide, objective, estimator, max_plate_nesting=1)
    x = torch.full((REPLICATES,), X_OBS, dtype=torch.float64)
    grads = []
    for _ in range(passes):
        for p in problem.params:
            p.grad = None
        loss_fn(x).surrogate.backward()
        grads.append(torch.stack([-p.grad for p in problem.params]).numpy())  # gradient of the bound
    grads = np.array(grads)
    return grads.mean(0), grads.std(0, ddof=1) / math.sqrt(passes)


def loss_and_gradients(problem: Conjugate, objective: Any, estimator: Any, x: torch.Tensor,
                       seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass at ``seed``: the reported loss and the gradient of the surrogate in
    ``problem.params`` (mu0, m, log s)."""
    loss_fn = BBVILoss(problem.model, problem.guide, objective, estimator, max_plate_nesting=1)
    pyro.set_rng_seed(seed)
    result = loss_fn(x)
    for p in problem.params:
        p.grad = None
    result.surrogate.backward()
    return result.loss, torch.stack([p.grad.clone() for p in problem.params])


def two_level_model(x: torch.Tensor) -> None:
    """a ~ N(0, 1), z_b | a ~ N(a, 1), x_b | z_b ~ N(z_b, 1): a prior computed from a latent."""
    a = pyro.sample("a", dist.Normal(0.0, 1.0))
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(a, 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)
