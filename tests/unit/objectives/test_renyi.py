"""The Renyi-alpha objective against Pyro's RenyiELBO at the same seed, against IWAE at alpha = 0,
against a Gauss-Hermite quadrature of its K = 2 expectation, and its options checked
(Li & Turner, NeurIPS 2016)."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pytest
import torch
from pyro.infer import RenyiELBO

from bbvi_kit import IWAE, BBVILoss, Pathwise, Renyi, ScoreFunction
from tests.support.conjugate import X_OBS, Conjugate, estimate_gradient
from tests.support.options import option_errors


@pytest.mark.parametrize("alpha", [0.0, 0.5, -1.0, 2.0])
def test_the_value_is_pyro_renyi_elbo_s_at_the_same_seed(alpha: float) -> None:
    problem = Conjugate()
    x = torch.linspace(-1.0, 2.0, 6, dtype=torch.float64)
    pyro.set_rng_seed(4)
    ours = BBVILoss(problem.model, problem.guide, Renyi(alpha=alpha, num_particles=3), Pathwise(),
                    max_plate_nesting=1)(x).loss
    pyro.set_rng_seed(4)
    theirs = RenyiELBO(alpha=alpha, num_particles=3, vectorize_particles=True, max_plate_nesting=1).loss(
        problem.model, problem.guide, x)
    assert ours.item() * x.shape[0] == pytest.approx(theirs, rel=1e-10)


def test_alpha_zero_is_iwae() -> None:
    problem = Conjugate()
    x = torch.full((5,), X_OBS, dtype=torch.float64)
    losses = []
    for objective in (Renyi(alpha=0.0, num_particles=4), IWAE(num_particles=4)):
        pyro.set_rng_seed(9)
        losses.append(BBVILoss(problem.model, problem.guide, objective, Pathwise(), max_plate_nesting=1)(x).loss)
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-14, atol=1e-14)


def quadrature_renyi2(problem: Conjugate, alpha: float, nodes: int = 80) -> float:
    """E over z1, z2 ~ q of 1/(1 - alpha) log (w1^(1-alpha) + w2^(1-alpha)) / 2, by Gauss-Hermite."""
    eps, weights = np.polynomial.hermite_e.hermegauss(nodes)
    weights = weights / math.sqrt(2 * math.pi)
    z = problem.m.detach() + problem.log_s.exp().detach() * torch.tensor(eps, dtype=torch.float64)
    a = (1.0 - alpha) * problem.log_weight(z).detach().numpy()
    pair = (np.logaddexp(a[:, None], a[None, :]) - math.log(2)) / (1.0 - alpha)
    return float((weights[:, None] * weights[None, :] * pair).sum())


@pytest.mark.parametrize("alpha", [0.5, -1.0])
def test_the_k2_expectation_is_the_quadrature_and_lies_on_the_right_side_of_the_elbo(alpha: float) -> None:
    pyro.set_rng_seed(3)
    problem = Conjugate(mu0=0.0, m=-0.5, s=1.5)
    x = torch.full((20_000,), X_OBS, dtype=torch.float64)
    values = [BBVILoss(problem.model, problem.guide, Renyi(alpha=alpha, num_particles=2), Pathwise(),
                       max_plate_nesting=1)(x).loss.item() for _ in range(4)]
    exact = quadrature_renyi2(problem, alpha)
    assert -np.mean(values) == pytest.approx(exact, abs=0.02)
    elbo, iwae2 = problem.exact_elbo().item(), problem.quadrature_iwae2().item()
    assert (elbo < exact < iwae2) if alpha > 0 else (exact > iwae2)


def test_the_score_function_gradient_is_the_pathwise_one_in_expectation() -> None:
    """Both estimators give unbiased estimates of the same gradient (VIMCO's baseline included)."""
    pyro.set_rng_seed(0)
    problem = Conjugate()
    objective = Renyi(alpha=0.5, num_particles=3)
    path_mean, path_se = estimate_gradient(problem, objective, Pathwise())
    score_mean, score_se = estimate_gradient(problem, objective, ScoreFunction(baseline="leave_one_out"), passes=24)
    np.testing.assert_array_less(np.abs(path_mean - score_mean), 4 * np.hypot(path_se, score_se) + 1e-3)


def test_alpha_one_is_refused_with_the_objective_to_use() -> None:
    ((key, message),) = option_errors(lambda: Renyi(alpha=1.0), "objective")
    assert key == "objective.alpha" and "alpha = 1 is the ELBO: use objective elbo" in message
