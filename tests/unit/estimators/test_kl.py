"""``kl: analytic`` against closed forms and Pyro's TraceMeanField_ELBO: the KL term is the closed
form, the loss and its gradient are TraceMeanField_ELBO's at the same seed, the gradient is
unbiased, beta scales the closed-form KL, and what it cannot serve is refused in one line."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import TraceMeanField_ELBO

from bbvi_kit import ELBO, BBVILoss, BetaELBO, Pathwise, ScoreFunction
from bbvi_kit.errors import InputError
from tests.support.conjugate import X_OBS, Conjugate, estimate_gradient, two_level_model


def closed_form_kl(m: torch.Tensor, s: torch.Tensor, mu0: torch.Tensor) -> torch.Tensor:
    """KL(N(m, s^2) || N(mu0, 1))."""
    return -torch.log(s) + (s**2 + (m - mu0) ** 2) / 2 - 0.5


@pytest.mark.parametrize("beta", [1.0, 3.0])
def test_the_kl_term_is_the_closed_form_scaled_by_beta(beta: float) -> None:
    problem = Conjugate()
    x = torch.full((6,), X_OBS, dtype=torch.float64)
    objective = BetaELBO(beta=beta, kl="analytic")
    pyro.set_rng_seed(2)
    result = BBVILoss(problem.model, problem.guide, objective, Pathwise(), max_plate_nesting=1)(x)
    z = result.particles.guide_trace.nodes["z"]["value"].detach()
    log_lik = dist.Normal(z, 1.0).log_prob(x)
    kl = closed_form_kl(problem.m, problem.log_s.exp(), problem.mu0).detach()
    torch.testing.assert_close(result.loss, -(log_lik - beta * kl).mean(), rtol=1e-12, atol=1e-12)


def test_loss_and_gradient_are_trace_mean_field_elbo_s_at_the_same_seed() -> None:
    problem = Conjugate()
    x = torch.linspace(-1.0, 2.0, 5, dtype=torch.float64)
    pyro.set_rng_seed(11)
    result = BBVILoss(problem.model, problem.guide, ELBO(kl="analytic"), Pathwise(), max_plate_nesting=1)(x)
    mine = torch.autograd.grad(result.surrogate * x.shape[0], problem.params)
    pyro.set_rng_seed(11)
    pyro_loss = TraceMeanField_ELBO().differentiable_loss(problem.model, problem.guide, x)
    theirs = torch.autograd.grad(pyro_loss, problem.params)
    torch.testing.assert_close(result.loss * x.shape[0], pyro_loss.detach(), rtol=1e-12, atol=1e-12)
    for a, b in zip(mine, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_the_gradient_is_unbiased_and_the_kl_part_has_no_monte_carlo_error() -> None:
    """mu0 enters only the prior, so under kl: analytic its gradient is the closed form's on
    every draw (sampling leaves a standard error); m and log s stay unbiased."""
    pyro.set_rng_seed(0)
    problem = Conjugate()
    exact = problem.exact_grad(problem.exact_elbo()).numpy()
    mean, se = estimate_gradient(problem, ELBO(kl="analytic"), Pathwise())
    np.testing.assert_array_less(np.abs(mean - exact), 4 * se + 1e-3)
    assert se[0] < 1e-12 and abs(mean[0] - exact[0]) < 1e-12
    _, sampled_se = estimate_gradient(problem, ELBO(), Pathwise())
    assert sampled_se[0] > 1e-3


def _refusal(model, guide, estimator=None) -> str:  # noqa: ANN001
    loss_fn = BBVILoss(model, guide, ELBO(kl="analytic"), estimator or Pathwise(), max_plate_nesting=1)
    with pytest.raises(InputError) as caught:
        loss_fn(torch.zeros(3))
    message = str(caught.value)
    assert "\n" not in message and message.startswith("objective kl: analytic: site ") and message.endswith(
        "use kl: sample")
    return message


def test_a_pair_without_a_closed_form_is_refused() -> None:
    def model(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.StudentT(3.0, 0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(pyro.param("loc", torch.tensor(0.0)), 1.0))

    assert "no closed-form KL from Normal to StudentT" in _refusal(model, guide)


def test_a_site_held_fixed_is_refused() -> None:
    problem = Conjugate()
    message = _refusal(problem.model, problem.guide, ScoreFunction())
    assert "site 'z' is drawn without a gradient path" in message


def test_a_prior_that_depends_on_another_latent_is_refused() -> None:
    def guide(x: torch.Tensor) -> None:
        pyro.sample("a", dist.Normal(pyro.param("a_loc", torch.tensor(0.0)), 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(pyro.param("z_loc", torch.tensor(0.0)), 1.0))

    assert "site 'z' has a prior computed from latent 'a'" in _refusal(two_level_model, guide)


def test_the_option_is_checked() -> None:
    with pytest.raises(ValueError, match="kl"):
        ELBO(kl="closed")
    assert math.isfinite(BetaELBO(kl="analytic", beta=2.0).latent_scale)


def test_on_the_gaussian_vae_it_is_trace_mean_field_elbo() -> None:
    """The VAE family: Normal encoder to the N(0, I) prior, events of 20 dims, Bernoulli pixels."""
    from benchmarks.training_step import CASES, build_vae, make_data, smoke

    case = smoke(CASES[0])
    vae = build_vae(case)
    x = make_data(case, 1)
    pyro.set_rng_seed(5)
    result = BBVILoss(vae.model, vae.guide, ELBO(kl="analytic"), Pathwise(), max_plate_nesting=1)(x)
    mine = torch.autograd.grad(result.surrogate * x.shape[0], list(vae.parameters()))
    pyro.set_rng_seed(5)
    pyro_loss = TraceMeanField_ELBO().differentiable_loss(vae.model, vae.guide, x)
    theirs = torch.autograd.grad(pyro_loss, list(vae.parameters()))
    torch.testing.assert_close(result.loss * x.shape[0], pyro_loss.detach(), rtol=1e-5, atol=1e-4)
    for a, b in zip(mine, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_a_guide_site_missing_from_the_model_is_refused() -> None:
    problem = Conjugate()

    def guide(x: torch.Tensor) -> None:
        problem.guide(x)
        pyro.sample("extra", dist.Normal(pyro.param("extra_loc", torch.tensor(0.0)), 1.0))

    with pytest.warns(UserWarning, match="guide but not model"):
        message = _refusal(problem.model, guide)
    assert "site 'extra' is in the guide but not in the model" in message
