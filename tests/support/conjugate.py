"""The conjugate Gaussian model of the objective tests, with known particles.

Model z ~ N(0, 1), x | z ~ N(z, 1); guide q(z) = N(m, s^2) whose reparameterised draws are
m + s * eps for fixed ``eps``. Closed forms: log p(x) = log N(x; 0, 2) and
ELBO = -log 2pi - ((x - m)^2 + s^2)/2 - (m^2 + s^2)/2 + log(2 pi e s^2)/2.
"""

from __future__ import annotations

import math
from typing import Callable

import pyro
import pyro.distributions as dist
import torch

F64 = torch.float64


def closed_form_elbo(x: float, m: float, s: float) -> float:
    return -math.log(2 * math.pi) - 0.5 * ((x - m) ** 2 + s**2) - 0.5 * (m**2 + s**2) + 0.5 * math.log(2 * math.pi * math.e * s**2)


def log_evidence(x: float) -> float:
    """log p(x) = log N(x; 0, 2)."""
    return -0.5 * math.log(2 * math.pi * 2) - x**2 / 4


def normal(loc: object, scale: float) -> torch.distributions.Normal:
    return torch.distributions.Normal(torch.as_tensor(loc, dtype=F64), torch.tensor(scale, dtype=F64))


def log_weight(z: torch.Tensor, x: float, m: float, s: float) -> torch.Tensor:
    """log p(x, z) - log q(z), by torch.distributions (not by Pyro)."""
    return normal(z, 1.0).log_prob(torch.tensor(x, dtype=F64)) + normal(0.0, 1.0).log_prob(z) - normal(m, s).log_prob(z)


def model(x: torch.Tensor) -> None:
    with pyro.plate("data", x.shape[0], dim=-1):
        z = pyro.sample("z", dist.Normal(torch.zeros((), dtype=F64), 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


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
