"""The beta-ELBO (:mod:`bbvi_kit.objectives.beta`): beta scales the latent part of every log
weight, log w = log p(x|z) + beta (log p(z) - log q(z|x)), checked on the conjugate Gaussian model
z ~ N(0, 1), x | z ~ N(z, 1), q(z) = N(m, s^2) with the two known draws z = m -+ s, whose mean of
any quadratic in z is its exact expectation under q: the loss is minus
E_q[log p(x|z)] - beta KL(q || p) = -log(2 pi)/2 - ((x - m)^2 + s^2)/2 - beta (m^2 + s^2 - 1 - log s^2)/2."""

from __future__ import annotations

import math

import pytest
import torch

from bbvi_kit import BBVILoss, Pathwise
from bbvi_kit.objectives import ELBO, BetaELBO
from bbvi_kit.registry import objectives
from tests.support.conjugate import F64, closed_form_elbo, fixed_guide, model
from tests.support.options import option_errors

X, M, S = 1.5, 0.3, 0.7
guide = fixed_guide(M, S, torch.tensor([-1.0, 1.0]))  # the draws m - s, m + s across the batch
RECONSTRUCTION = -0.5 * math.log(2 * math.pi) - 0.5 * ((X - M) ** 2 + S**2)
KL = 0.5 * (M**2 + S**2 - 1 - math.log(S**2))








def loss_of(objective: ELBO) -> float:
    return BBVILoss(model, guide, objective, Pathwise(), max_plate_nesting=1)(torch.full((2,), X, dtype=F64)).loss.item()


@pytest.mark.parametrize("beta", [0.25, 1.0, 4.0])
def test_the_loss_is_reconstruction_minus_beta_times_the_closed_form_kl(beta: float) -> None:
    assert loss_of(BetaELBO(beta=beta)) == pytest.approx(-(RECONSTRUCTION - beta * KL), abs=1e-12)


def test_beta_one_is_the_elbo() -> None:
    assert loss_of(BetaELBO()) == pytest.approx(-closed_form_elbo(X, M, S), abs=1e-12)
    assert loss_of(BetaELBO(beta=1.0)) == pytest.approx(loss_of(ELBO()), abs=1e-12)


def test_the_latent_scale_is_beta_as_a_float() -> None:
    assert BetaELBO(beta=4).latent_scale == 4.0 and isinstance(BetaELBO(beta=4).latent_scale, float)
    assert BetaELBO().latent_scale == 1.0


def test_the_reductions_are_the_elbos() -> None:
    log_w = torch.tensor([[1.0, -2.0], [3.0, 6.0]])
    objective = BetaELBO(beta=3.0, num_particles=2)
    torch.testing.assert_close(objective.bound(log_w), torch.tensor([2.0, 2.0]))
    torch.testing.assert_close(objective.learning_signal(log_w), torch.tensor([[0.5, -1.0], [1.5, 3.0]]))
    torch.testing.assert_close(objective.leave_one_out(log_w), torch.tensor([[1.5, 3.0], [0.5, -1.0]]))
    assert objective.num_particles == 2


def test_beta_is_registered_as_beta_and_keeps_num_particles() -> None:
    assert objectives.get("beta") is BetaELBO
    assert issubclass(BetaELBO, ELBO)
    assert repr(BetaELBO(beta=2.5, num_particles=3)) == "BetaELBO(num_particles=3, kl='sample', beta=2.5)"


@pytest.mark.parametrize("beta", [1e-9, 1e6])
def test_beta_accepts_its_range(beta: float) -> None:
    assert BetaELBO(beta=beta).latent_scale == beta


@pytest.mark.parametrize("beta, words", [(0.0, "greater than 0"), (-1.0, "greater than 0"), (1e6 + 1, "less than or equal to"),
                                         (float("nan"), "finite number"), (float("inf"), "finite number")])
def test_beta_out_of_range_is_a_one_line_error_naming_the_key(beta: float, words: str) -> None:
    ((key, message),) = option_errors(lambda: BetaELBO(beta=beta), prefix="objective")
    assert key == "objective.beta"
    assert words in message and "\n" not in message
