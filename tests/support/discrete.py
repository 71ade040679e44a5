"""Small models with discrete latents for the Rao-Blackwellised score-function tests.

Parameters live in Pyro's param store (Pyro's ``TraceGraph_ELBO`` differentiates only when a
trace holds ``param`` sites), so each test clears it first (:func:`fresh`).

- :func:`plate_model` / :func:`plate_guide`: a global Bernoulli g and B independent Bernoulli
  latents z_b in a vectorised plate, one observation x_b ~ N(3 z_b - 1.5 + g / 2, 1) each; its
  ELBO is a finite sum (:func:`plate_exact_elbo`).
- :func:`chain_model` / :func:`chain_guide`: z_0 -> z_1 -> z_2, a chain of Bernoulli latents
  outside any plate, each observed through x_t ~ N(2 z_t - 1, 1).
- :func:`mixed_model` / :func:`mixed_guide`: a reparameterised Normal a and Bernoulli c_b in a
  plate whose guide depends on a.
"""

from __future__ import annotations

import itertools
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints

B = 6
X_PLATE = torch.tensor([1.4, -1.2, 0.3, 2.0, -0.6, -1.9])
X_CHAIN = torch.tensor([0.8, -0.4, 1.3])
Q_Z = [0.4, -0.2, 0.1, 0.9, -0.7, -1.1]


def fresh() -> None:
    """An empty param store (each model creates its parameters on first use)."""
    pyro.clear_param_store()


def param_grads() -> dict[str, torch.Tensor]:
    """The gradient of every parameter of the param store (unconstrained), by name."""
    store = pyro.get_param_store()
    return {name: store.get_param(name).unconstrained().grad.clone() for name in sorted(store.keys())
            if not name.startswith("__")}


def zero_grads() -> None:
    store = pyro.get_param_store()
    for name in store.keys():
        store.get_param(name).unconstrained().grad = None


def flat(grads: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for _, g in sorted(grads.items())])


def plate_model(x: torch.Tensor) -> None:
    g = pyro.sample("g", dist.Bernoulli(logits=pyro.param("prior_g", torch.tensor(0.2))))
    with pyro.plate("data", len(x), dim=-1):
        z = pyro.sample("z", dist.Bernoulli(logits=pyro.param("prior_z", torch.tensor(-0.3))))
        pyro.sample("x", dist.Normal(3.0 * z - 1.5 + 0.5 * g, 1.0), obs=x)


def plate_guide(x: torch.Tensor, z_infer: dict[str, Any] | None = None) -> None:
    pyro.sample("g", dist.Bernoulli(logits=pyro.param("q_g", torch.tensor(0.1))))
    with pyro.plate("data", len(x), dim=-1):
        pyro.sample("z", dist.Bernoulli(logits=pyro.param("q_z", torch.tensor(Q_Z[: len(x)]))),
                    infer=z_infer or {})


def plate_exact_elbo(x: torch.Tensor) -> torch.Tensor:
    """The ELBO of the plate model, summed over g and each z_b in {0, 1} (the param store's values)."""
    prior_g, prior_z = pyro.param("prior_g"), pyro.param("prior_z")
    q_g, q_z = pyro.param("q_g"), pyro.param("q_z")
    total = torch.zeros(())
    for g in (0.0, 1.0):
        gt = torch.tensor(g)
        weight_g = dist.Bernoulli(logits=q_g).log_prob(gt).exp()
        inner = dist.Bernoulli(logits=prior_g).log_prob(gt) - dist.Bernoulli(logits=q_g).log_prob(gt)
        for z in (0.0, 1.0):
            zt = torch.full_like(x, z)
            log_q = dist.Bernoulli(logits=q_z).log_prob(zt)
            term = dist.Bernoulli(logits=prior_z).log_prob(zt) + dist.Normal(3.0 * zt - 1.5 + 0.5 * g, 1.0).log_prob(x)
            inner = inner + (log_q.exp() * (term - log_q)).sum()
        total = total + weight_g * inner
    return total


def chain_model(x: torch.Tensor) -> None:
    a = pyro.param("chain_a", torch.tensor([0.3, -0.2, 0.5]))
    w = pyro.param("chain_w", torch.tensor(1.2))
    previous: Any = 0.0
    for t in range(len(x)):
        z = pyro.sample(f"z{t}", dist.Bernoulli(logits=a[t] + w * previous))
        pyro.sample(f"x{t}", dist.Normal(2.0 * z - 1.0, 1.0), obs=x[t])
        previous = z


def chain_guide(x: torch.Tensor) -> None:
    b = pyro.param("chain_b", torch.tensor([-0.1, 0.4, 0.2]))
    v = pyro.param("chain_v", torch.tensor(-0.8))
    previous: Any = 0.0
    for t in range(len(x)):
        previous = pyro.sample(f"z{t}", dist.Bernoulli(logits=b[t] + v * previous))


def chain_exact_elbo(x: torch.Tensor) -> torch.Tensor:
    """The chain's ELBO, summed over the 2^T paths."""
    a, w, b, v = (pyro.param(n) for n in ("chain_a", "chain_w", "chain_b", "chain_v"))
    total = torch.zeros(())
    for path in itertools.product((0.0, 1.0), repeat=len(x)):
        log_p, log_q, previous = torch.zeros(()), torch.zeros(()), torch.tensor(0.0)
        for t, z in enumerate(path):
            zt = torch.tensor(z)
            log_p = log_p + dist.Bernoulli(logits=a[t] + w * previous).log_prob(zt) \
                + dist.Normal(2.0 * zt - 1.0, 1.0).log_prob(x[t])
            log_q = log_q + dist.Bernoulli(logits=b[t] + v * previous).log_prob(zt)
            previous = zt
        total = total + log_q.exp() * (log_p - log_q)
    return total


def mixed_model(x: torch.Tensor) -> None:
    a = pyro.sample("a", dist.Normal(pyro.param("mu", torch.tensor(0.1)), 1.0))
    with pyro.plate("data", len(x), dim=-1):
        c = pyro.sample("c", dist.Bernoulli(logits=pyro.param("prior_c", torch.tensor(0.4)) + a))
        pyro.sample("x", dist.Normal(a + 2.0 * c - 1.0, 1.0), obs=x)


def mixed_guide(x: torch.Tensor) -> None:
    m = pyro.param("m", torch.tensor(0.2))
    s = pyro.param("s", torch.tensor(0.7), constraint=constraints.positive)
    a = pyro.sample("a", dist.Normal(m, s))
    with pyro.plate("data", len(x), dim=-1):
        logits = pyro.param("w", torch.tensor(0.5)) * a + pyro.param("bias", torch.tensor(Q_Z[: len(x)]))
        pyro.sample("c", dist.Bernoulli(logits=logits))
