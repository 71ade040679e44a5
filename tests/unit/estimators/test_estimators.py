"""The estimators and objectives against Pyro's own ELBOs and against exact gradients.

Conjugate model used for exact references: z ~ N(mu0, 1), x | z ~ N(z, 1), q(z) = N(m, s^2),
with theta = mu0 and phi = (m, log s). The ELBO has a closed form; IWAE_2 is a two-dimensional
Gaussian integral computed by Gauss-Hermite quadrature (no Monte Carlo error), differentiated by
autograd; at q = p(z|x) every IWAE_K equals log p(x) with phi-gradient 0.
"""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import RenyiELBO, Trace_ELBO

from bbvi_kit import ELBO, IWAE, BBVILoss, BetaELBO, DataInfo, DReG, Pathwise, ScoreFunction, StickingTheLanding
from bbvi_kit_plugins.gaussian_vae import GaussianVAE
from tests.support.conjugate import X_OBS, Conjugate, estimate_gradient, loss_and_gradients

ESTIMATORS = {
    "pathwise": lambda: Pathwise(),
    "score": lambda: ScoreFunction(),
    "score_running_mean": lambda: ScoreFunction(baseline="running_mean"),
    "score_leave_one_out": lambda: ScoreFunction(baseline="leave_one_out"),
}


@pytest.mark.parametrize("estimator", list(ESTIMATORS))
@pytest.mark.parametrize("num_particles", [1, 3])
def test_elbo_gradient_matches_closed_form(estimator: str, num_particles: int) -> None:
    if estimator == "score_leave_one_out" and num_particles == 1:
        pytest.skip("leave-one-out needs K >= 2")
    pyro.set_rng_seed(0)
    problem = Conjugate()
    exact = problem.exact_grad(problem.exact_elbo()).numpy()
    mean, se = estimate_gradient(problem, ELBO(num_particles=num_particles), ESTIMATORS[estimator]())
    assert np.all(se < 0.05), se  # the comparison below is not vacuous
    np.testing.assert_array_less(np.abs(mean - exact), 4 * se + 1e-3)


@pytest.mark.parametrize("estimator", list(ESTIMATORS))
def test_iwae2_gradient_matches_quadrature(estimator: str) -> None:
    pyro.set_rng_seed(1)
    problem = Conjugate()
    exact = problem.exact_grad(problem.quadrature_iwae2()).numpy()
    # IWAE_2 > ELBO here, and its gradient differs from the ELBO's: the test can tell them apart.
    assert problem.quadrature_iwae2().item() > problem.exact_elbo().item() + 0.01
    mean, se = estimate_gradient(problem, IWAE(num_particles=2), ESTIMATORS[estimator]())
    assert np.all(se < 0.05), se
    np.testing.assert_array_less(np.abs(mean - exact), 4 * se + 1e-3)


@pytest.mark.parametrize("estimator", ["pathwise", "score_leave_one_out"])
def test_iwae_at_exact_posterior_has_log_evidence_gradient(estimator: str) -> None:
    """At q = p(z|x) = N((mu0 + x)/2, 1/2): grad_phi IWAE_K = 0, grad_mu0 = d log p(x)/d mu0 = (x - mu0)/2."""
    pyro.set_rng_seed(2)
    mu0 = 0.3
    problem = Conjugate(mu0=mu0, m=(mu0 + X_OBS) / 2, s=math.sqrt(0.5))
    exact = np.array([(X_OBS - mu0) / 2, 0.0, 0.0])
    mean, se = estimate_gradient(problem, IWAE(num_particles=5), ESTIMATORS[estimator]())
    np.testing.assert_array_less(np.abs(mean - exact), 4 * se + 1e-3)


def test_score_baselines_reduce_variance() -> None:
    """Same number of samples; the variance of the phi-gradient over passes shrinks with a baseline.

    Observed variance ratios are about 0.45-0.5; with 80 passes a variance estimate is good to
    about 16%, so 0.75 separates "reduced" from "not reduced" safely.
    """
    variances = {}
    for name in ("score", "score_running_mean", "score_leave_one_out"):
        pyro.set_rng_seed(3)
        problem = Conjugate()
        estimator = ESTIMATORS[name]()
        if name == "score_running_mean":  # let the running mean settle first
            estimate_gradient(problem, ELBO(num_particles=4), estimator, passes=10)
        _, se = estimate_gradient(problem, ELBO(num_particles=4), estimator, passes=80)
        variances[name] = se[1:] ** 2  # phi = (m, log s)
    assert np.all(variances["score_leave_one_out"] < 0.75 * variances["score"]), variances
    assert np.all(variances["score_running_mean"] < 0.75 * variances["score"]), variances


def test_vimco_leave_one_out_baseline_formula() -> None:
    log_w = torch.randn(4, 3, dtype=torch.float64)
    got = IWAE(num_particles=4).leave_one_out(log_w)
    for k in range(4):
        others = torch.cat([log_w[:k], log_w[k + 1 :]])
        replaced = torch.cat([others, others.mean(0, keepdim=True)])
        expected = torch.logsumexp(replaced, 0) - math.log(4)
        torch.testing.assert_close(got[k], expected)
    got = ELBO(num_particles=4).leave_one_out(log_w)
    for k in range(4):
        others = torch.cat([log_w[:k], log_w[k + 1 :]])
        torch.testing.assert_close(got[k], others.mean(0) / 4)


# -- agreement with Pyro's own objectives, on the VAE plugin ---------------------------------------
@pytest.fixture
def vae_and_batch() -> tuple[GaussianVAE, torch.Tensor]:
    torch.manual_seed(0)
    info = DataInfo(name="toy", shape=(1, 4, 4), num_train=64, num_test=16)
    vae = GaussianVAE(info, latent_dim=3, hidden=[8])
    return vae, torch.rand(6, 1, 4, 4)


@pytest.mark.parametrize("num_particles", [1, 4])
def test_elbo_value_and_gradient_equal_pyro_trace_elbo(vae_and_batch, num_particles: int) -> None:
    vae, x = vae_and_batch
    pyro.set_rng_seed(7)
    ours = BBVILoss(vae.model, vae.guide, ELBO(num_particles=num_particles), Pathwise())(x)
    ours.surrogate.backward()
    our_grads = [p.grad.clone() for p in vae.parameters()]
    vae.zero_grad()
    pyro.set_rng_seed(7)
    elbo = Trace_ELBO(num_particles=num_particles, vectorize_particles=True, max_plate_nesting=1)
    theirs = elbo.differentiable_loss(vae.model, vae.guide, x)
    theirs.backward()
    # Pyro sums over the batch; bbvi-kit reports nats per example.
    torch.testing.assert_close(ours.loss * x.shape[0], theirs.detach())
    for ours_g, p in zip(our_grads, vae.parameters()):
        torch.testing.assert_close(ours_g * x.shape[0], p.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("num_particles", [1, 5])
def test_iwae_value_equals_pyro_renyi_alpha0(vae_and_batch, num_particles: int) -> None:
    vae, x = vae_and_batch
    pyro.set_rng_seed(11)
    ours = BBVILoss(vae.model, vae.guide, IWAE(num_particles=num_particles), Pathwise())(x).loss
    pyro.set_rng_seed(11)
    renyi = RenyiELBO(alpha=0.0, num_particles=num_particles, vectorize_particles=True, max_plate_nesting=1)
    theirs = renyi.loss(vae.model, vae.guide, x)
    assert ours.item() * x.shape[0] == pytest.approx(theirs, rel=1e-5)


def test_score_estimator_reports_the_same_loss_value(vae_and_batch) -> None:
    vae, x = vae_and_batch
    pyro.set_rng_seed(5)
    pathwise = BBVILoss(vae.model, vae.guide, IWAE(num_particles=3), Pathwise())(x).loss
    pyro.set_rng_seed(5)
    score = BBVILoss(vae.model, vae.guide, IWAE(num_particles=3), ScoreFunction(baseline="leave_one_out"))(x).loss
    torch.testing.assert_close(pathwise, score)


def test_beta_scales_only_the_kl_part(vae_and_batch) -> None:
    vae, x = vae_and_batch
    pyro.set_rng_seed(3)
    elbo = BBVILoss(vae.model, vae.guide, ELBO(), Pathwise())(x)
    pyro.set_rng_seed(3)
    beta_one = BBVILoss(vae.model, vae.guide, BetaELBO(beta=1.0), Pathwise())(x)
    torch.testing.assert_close(beta_one.loss, elbo.loss)

    recon = elbo.particles.model_trace.nodes["x"]["log_prob"].sum()
    kl_part = (
        elbo.particles.model_trace.nodes["z"]["log_prob"].sum()
        - elbo.particles.guide_trace.nodes["z"]["log_prob"].sum()
    )
    pyro.set_rng_seed(3)
    beta = BBVILoss(vae.model, vae.guide, BetaELBO(beta=4.0), Pathwise())(x)
    torch.testing.assert_close(beta.loss, -(recon + 4.0 * kl_part).detach() / x.shape[0])


def test_particles_are_one_vectorised_pass() -> None:
    problem = Conjugate()
    loss_fn = BBVILoss(problem.model, problem.guide, IWAE(num_particles=7), Pathwise(), max_plate_nesting=1)
    result = loss_fn(torch.zeros(5, dtype=torch.float64))
    assert (problem.model_calls, problem.guide_calls) == (1, 1)
    assert result.particles.guide_trace.nodes["z"]["value"].shape == (7, 5)
    assert result.particles.log_weights.shape == (7, 5)


def test_guessing_plate_nesting_does_not_shift_the_random_stream() -> None:
    problem = Conjugate()
    x = torch.zeros(5, dtype=torch.float64)
    pyro.set_rng_seed(0)
    guessed = BBVILoss(problem.model, problem.guide, ELBO(), Pathwise())(x).loss
    pyro.set_rng_seed(0)
    given = BBVILoss(problem.model, problem.guide, ELBO(), Pathwise(), max_plate_nesting=1)(x).loss
    assert guessed.item() == given.item()


def test_pathwise_refuses_discrete_latents() -> None:
    def model() -> None:
        pyro.sample("c", dist.Bernoulli(0.3))

    p = torch.tensor(0.0, requires_grad=True)

    def guide() -> None:
        pyro.sample("c", dist.Bernoulli(logits=p))

    from bbvi_kit import InputError

    with pytest.raises(InputError, match="'c'.*use estimator 'auto'"):
        BBVILoss(model, guide, ELBO(), Pathwise())()
    # The score-function estimator handles it: exact gradient of E_q[log p(c) - log q(c)] = -KL.
    q = torch.sigmoid(p)
    exact_kl = q * torch.log(q / 0.3) + (1 - q) * torch.log((1 - q) / 0.7)
    (exact,) = torch.autograd.grad(-exact_kl, p)
    grads = []
    loss_fn = BBVILoss(model, guide, ELBO(num_particles=20000), ScoreFunction(baseline="leave_one_out"))
    pyro.set_rng_seed(0)
    for _ in range(8):
        p.grad = None
        loss_fn().surrogate.backward()
        grads.append(-p.grad.item())
    se = np.std(grads, ddof=1) / math.sqrt(len(grads))
    assert abs(np.mean(grads) - exact.item()) < 4 * se + 1e-3


@pytest.mark.parametrize("estimator", [StickingTheLanding, DReG])
def test_path_only_estimators_keep_the_loss_and_theta_gradient_and_change_phi_s(estimator: type) -> None:
    """STL and DReG change only the encoder's gradient: at the same seed the loss and theta's
    gradient are pathwise IWAE's, phi's is not."""
    problem = Conjugate()
    x = torch.full((8,), X_OBS, dtype=torch.float64)
    loss, grads = loss_and_gradients(problem, IWAE(num_particles=4), estimator(), x, seed=3)
    pathwise_loss, pathwise = loss_and_gradients(problem, IWAE(num_particles=4), Pathwise(), x, seed=3)
    assert torch.equal(loss, pathwise_loss)
    torch.testing.assert_close(grads[0], pathwise[0], rtol=1e-12, atol=1e-12)
    assert not torch.allclose(grads[1:], pathwise[1:])
