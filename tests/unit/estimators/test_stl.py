"""Sticking the landing against closed forms: unbiased for the ELBO, zero phi gradient at the
exact posterior, theta's gradient and the loss pathwise's, and one-line refusals where stopping
the guide's parameters is not the score part (Roeder, Wu & Duvenaud, NeurIPS 2017)."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from bbvi_kit import ELBO, IWAE, BBVILoss, Pathwise
from bbvi_kit.errors import InputError
from bbvi_kit.estimators import StickingTheLanding
from tests.support.conjugate import X_OBS, Conjugate, estimate_gradient, loss_and_gradients, two_level_model

POSTERIOR = {"mu0": 0.3, "m": (0.3 + X_OBS) / 2, "s": math.sqrt(0.5)}  # p(z | x) = N((mu0 + x) / 2, 1/2)


@pytest.mark.parametrize("num_particles", [1, 3])
def test_the_elbo_gradient_is_unbiased(num_particles: int) -> None:
    pyro.set_rng_seed(0)
    problem = Conjugate()
    exact = problem.exact_grad(problem.exact_elbo()).numpy()
    mean, se = estimate_gradient(problem, ELBO(num_particles=num_particles), StickingTheLanding())
    assert np.all(se < 0.05), se
    np.testing.assert_array_less(np.abs(mean - exact), 4 * se + 1e-3)


def test_at_the_exact_posterior_phi_gets_no_gradient_at_all() -> None:
    """log p(x, z) - log q(z) = log p(x) for every z: STL's phi gradient is 0 to rounding on every
    draw; pathwise's is not (the score term's variance)."""
    problem = Conjugate(**POSTERIOR)
    x = torch.full((64,), X_OBS, dtype=torch.float64)
    for seed in range(5):
        _, grads = loss_and_gradients(problem, ELBO(num_particles=2), StickingTheLanding(), x, seed)
        assert torch.all(grads[1:].abs() < 1e-12)
    _, grads = loss_and_gradients(problem, ELBO(num_particles=2), Pathwise(), x, seed=0)
    assert grads[1:].abs().max() > 1e-3


def test_iwae_stl_is_biased_as_tucker_et_al_say() -> None:
    """With K = 2 the self-normalised score term has no zero mean: IWAE-STL's phi gradient misses
    the exact IWAE_2 gradient (Gauss-Hermite quadrature) by many standard errors."""
    pyro.set_rng_seed(1)
    problem = Conjugate(mu0=0.0, m=-0.5, s=1.5)
    exact = problem.exact_grad(problem.quadrature_iwae2()).numpy()
    mean, se = estimate_gradient(problem, IWAE(num_particles=2), StickingTheLanding())
    assert abs(mean[0] - exact[0]) < 4 * se[0] + 1e-3  # theta: pathwise's, unbiased
    assert np.max(np.abs(mean[1:] - exact[1:]) / se[1:]) > 8


def _refusal(model, guide) -> str:  # noqa: ANN001
    loss_fn = BBVILoss(model, guide, ELBO(), StickingTheLanding(), max_plate_nesting=1)
    with pytest.raises(InputError) as caught:
        loss_fn(torch.zeros(3))
    message = str(caught.value)
    assert "\n" not in message and message.startswith("estimator stl: ")
    return message


def model(x: torch.Tensor) -> None:
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


def test_a_site_without_rsample_is_refused() -> None:
    def discrete_model(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x: torch.Tensor) -> None:
        p = pyro.param("p", torch.tensor(0.3))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Bernoulli(p))

    assert "site 'z' (Bernoulli) has no rsample" in _refusal(discrete_model, guide)


def test_a_hierarchical_guide_is_refused_naming_both_sites() -> None:
    def guide(x: torch.Tensor) -> None:
        loc = pyro.param("loc", torch.tensor(0.1))
        a = pyro.sample("a", dist.Normal(loc, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(a, 1.0))

    assert "guide site 'z' has parameters computed from guide site 'a'" in _refusal(two_level_model, guide)


def test_a_flow_is_refused() -> None:
    def guide(x: torch.Tensor) -> None:
        shift = pyro.param("shift", torch.tensor(0.2))
        flow = dist.TransformedDistribution(dist.Normal(0.0, 1.0),
                                            [dist.transforms.AffineTransform(shift, 1.0)])
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", flow)

    assert "has a transform with parameters (a flow)" in _refusal(model, guide)


def test_a_latent_outside_the_guide_is_refused() -> None:
    def guide(x: torch.Tensor) -> None:
        pass

    assert "model site 'z' is not in the guide" in _refusal(model, guide)


def test_wrapped_and_multivariate_guides_are_served() -> None:
    """to_event, expand and mask wrappers and a MultivariateNormal: the loss is pathwise's."""
    def mv_model(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
            pyro.sample("x", dist.Normal(z.sum(-1) + w.sum(-1), 1.0), obs=x)

    def mv_guide(x: torch.Tensor) -> None:
        loc = pyro.param("mv_loc", torch.tensor([0.1, -0.2]))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(loc, scale_tril=torch.eye(2) * 0.7))
            pyro.sample("w", dist.Normal(loc, 0.5).to_event(1).mask(torch.ones(x.shape[0], dtype=torch.bool)))

    x = torch.randn(5)
    losses = []
    for estimator in (StickingTheLanding(), Pathwise()):
        pyro.set_rng_seed(4)
        losses.append(BBVILoss(mv_model, mv_guide, ELBO(num_particles=3), estimator, max_plate_nesting=1)(x).loss)
    torch.testing.assert_close(losses[0], losses[1])


def test_on_the_gaussian_vae_it_is_the_plain_pytorch_form() -> None:
    """The engine's STL loss and gradients equal the pathwise ELBO written in plain PyTorch with
    the encoder's outputs detached inside log q (benchmarks/handwritten.py, same seed)."""
    from benchmarks import handwritten
    from benchmarks.training_step import CASES, build_vae, make_data, smoke

    case = smoke(CASES[0])
    vae = build_vae(case)
    x = make_data(case, 1)
    pyro.set_rng_seed(7)
    result = BBVILoss(vae.model, vae.guide, ELBO(num_particles=3), StickingTheLanding(), max_plate_nesting=1)(x)
    result.surrogate.backward()
    engine = [p.grad.clone() for p in vae.parameters()]
    vae.zero_grad(set_to_none=True)
    pyro.set_rng_seed(7)
    mine = handwritten.stl_elbo_loss(vae, x, 3)
    mine.backward()
    assert torch.equal(result.loss, mine.detach())
    for a, b in zip(engine, [p.grad for p in vae.parameters()], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
