"""DReG against closed forms: an unbiased estimate of the IWAE gradient (Gauss-Hermite quadrature
of IWAE_2, differentiated), theta's gradient IWAE's, no phi gradient at the exact posterior, a
phi signal-to-noise ratio that does not fall with K as pathwise's does, and one-line refusals
(Tucker, Lawson, Gu & Maddison, ICLR 2019)."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from bbvi_kit import ELBO, IWAE, BBVILoss, Pathwise
from bbvi_kit.errors import InputError
from bbvi_kit.estimators import DReG
from tests.support.conjugate import X_OBS, Conjugate, estimate_gradient, loss_and_gradients


def test_the_iwae_gradient_is_unbiased_for_theta_and_phi() -> None:
    pyro.set_rng_seed(1)
    problem = Conjugate(mu0=0.0, m=-0.5, s=1.5)
    exact = problem.exact_grad(problem.quadrature_iwae2()).numpy()
    mean, se = estimate_gradient(problem, IWAE(num_particles=2), DReG())
    assert np.all(se < 0.05), se
    np.testing.assert_array_less(np.abs(mean - exact), 4 * se + 1e-3)


def test_at_the_exact_posterior_phi_gets_no_gradient_at_all() -> None:
    problem = Conjugate(mu0=0.3, m=(0.3 + X_OBS) / 2, s=math.sqrt(0.5))
    x = torch.full((32,), X_OBS, dtype=torch.float64)
    for seed in range(3):
        _, grads = loss_and_gradients(problem, IWAE(num_particles=8), DReG(), x, seed)
        assert torch.all(grads[1:].abs() < 1e-12)


def phi_snr(estimator, k: int, draws: int = 20_000) -> float:  # noqa: ANN001
    """|mean| / sd over independent examples of the IWAE_K gradient in the guide's mean, each
    example with its own copy of the mean (so one backward gives every example's gradient)."""
    loc = torch.full((draws,), 0.4, dtype=torch.float64, requires_grad=True)

    def model(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, 0.9))

    loss_fn = BBVILoss(model, guide, IWAE(num_particles=k), estimator, max_plate_nesting=1)
    pyro.set_rng_seed(k)
    (grad,) = torch.autograd.grad(loss_fn(torch.full((draws,), X_OBS, dtype=torch.float64)).surrogate, loc)
    return (grad.mean().abs() / grad.std()).item()


def test_phi_snr_falls_with_k_under_pathwise_and_rises_under_dreg() -> None:
    """Rainforth et al. (ICML 2018): the IWAE encoder's SNR falls as 1/sqrt(K) with the pathwise
    estimator; Tucker et al. (2019): under DReG it grows as sqrt(K). From K = 4 to K = 64 the
    predicted ratios are 1/4 and 4."""
    pathwise = phi_snr(Pathwise(), 64) / phi_snr(Pathwise(), 4)
    dreg = phi_snr(DReG(), 64) / phi_snr(DReG(), 4)
    assert pathwise < 0.5, pathwise
    assert 2.0 < dreg < 8.0, dreg


def test_refused_without_the_iwae_objective() -> None:
    problem = Conjugate()
    with pytest.raises(ValueError, match=r"^estimator dreg needs objective iwae"):
        BBVILoss(problem.model, problem.guide, ELBO(num_particles=4), DReG())


def test_a_model_that_does_not_broadcast_over_particles_is_refused() -> None:
    def model(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z.reshape(x.shape), 1.0), obs=x)  # a shape hard-coded from the data

    def guide(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(pyro.param("loc", torch.tensor(0.0)), 1.0))

    loss_fn = BBVILoss(model, guide, IWAE(num_particles=3), DReG(), max_plate_nesting=1)
    with pytest.raises(InputError, match=r"^estimator dreg: the model does not broadcast"):
        loss_fn(torch.zeros(4))


def test_on_the_gaussian_vae_it_is_the_papers_two_surrogate_form() -> None:
    """The one-pass surrogate (weighted paths) gives, parameter by parameter, the gradients of the
    form Tucker et al. write: a decoder surrogate weighted by wtilde and an encoder surrogate by
    wtilde^2 with log q's parameters stopped, differentiated separately (benchmarks/handwritten.py,
    plain PyTorch, the same random draws at the same seed)."""
    from benchmarks import handwritten
    from benchmarks.training_step import CASES, build_vae, make_data, smoke

    case = smoke(next(c for c in CASES if c.objective == "iwae"))
    vae = build_vae(case)
    x = make_data(case, 1)
    pyro.set_rng_seed(7)
    BBVILoss(vae.model, vae.guide, IWAE(num_particles=5), DReG(), max_plate_nesting=1)(x).surrogate.backward()
    engine = {n: p.grad.clone() for n, p in vae.named_parameters()}
    pyro.set_rng_seed(7)
    mine = handwritten.dreg_iwae_gradients(vae, x, 5)
    assert engine.keys() == mine.keys()
    for name in engine:
        torch.testing.assert_close(engine[name], mine[name], rtol=1e-5, atol=1e-6, msg=name)


def test_each_pass_keeps_its_own_weights_until_its_backward() -> None:
    """Two passes built before either backward (as a diagnostic may): the first one's gradient is
    what it is when built alone."""
    problem = Conjugate(mu0=0.0, m=-0.5, s=1.5)
    x = torch.full((16,), X_OBS, dtype=torch.float64)
    loss_fn = BBVILoss(problem.model, problem.guide, IWAE(num_particles=4), DReG(), max_plate_nesting=1)
    pyro.set_rng_seed(8)
    alone = torch.autograd.grad(loss_fn(x).surrogate, problem.params)
    pyro.set_rng_seed(8)
    first = loss_fn(x).surrogate
    loss_fn(x * 2.0)  # a second pass, other weights
    for a, b in zip(torch.autograd.grad(first, problem.params), alone, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
