"""The beta-ELBO (:mod:`bbvi_kit.objectives.beta`): beta scales the latent part of every log
weight, log w = log p(x|z) + beta (log p(z) - log q(z|x)), checked on the conjugate Gaussian model
z ~ N(0, 1), x | z ~ N(z, 1), q(z) = N(m, s^2) with the two known draws z = m -+ s, whose mean of
any quadratic in z is its exact expectation under q: the loss is minus
E_q[log p(x|z)] - beta KL(q || p) = -log(2 pi)/2 - ((x - m)^2 + s^2)/2 - beta (m^2 + s^2 - 1 - log s^2)/2."""

from __future__ import annotations

import math

import pytest
import torch

from bbvi_kit import BBVI, BBVILoss, Pathwise
from bbvi_kit.optim import SGD
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
    assert repr(BetaELBO(beta=2.5, num_particles=3)) == ("BetaELBO(num_particles=3, kl='sample', beta=2.5, beta_schedule='constant', "
                                                         "warmup_steps=1000, cycle_steps=1000, cycle_ratio=0.5)")


@pytest.mark.parametrize("beta", [1e-9, 1e6])
def test_beta_accepts_its_range(beta: float) -> None:
    assert BetaELBO(beta=beta).latent_scale == beta


@pytest.mark.parametrize("beta, words", [(0.0, "greater than 0"), (-1.0, "greater than 0"), (1e6 + 1, "less than or equal to"),
                                         (float("nan"), "finite number"), (float("inf"), "finite number")])
def test_beta_out_of_range_is_a_one_line_error_naming_the_key(beta: float, words: str) -> None:
    ((key, message),) = option_errors(lambda: BetaELBO(beta=beta), prefix="objective")
    assert key == "objective.beta"
    assert words in message and "\n" not in message


def test_linear_warm_up_rises_from_zero_to_beta_over_its_steps() -> None:
    objective = BetaELBO(beta=2.0, beta_schedule="linear", warmup_steps=4)
    assert [objective.latent_scale_at(n) for n in range(1, 8)] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.0, 2.0]
    assert objective.latent_scale_at(None) == 2.0 and objective.scheduled


def test_cyclical_annealing_rises_over_the_first_ratio_of_each_cycle_then_holds() -> None:
    # Fu et al. (2019): period 4, ratio 0.5: tau = 0, 1/4, 2/4, 3/4 gives beta 0, 1/2, 1, 1 per cycle.
    objective = BetaELBO(beta=1.0, beta_schedule="cyclical", cycle_steps=4, cycle_ratio=0.5)
    assert [objective.latent_scale_at(n) for n in range(1, 10)] == [0.0, 0.5, 1.0, 1.0, 0.0, 0.5, 1.0, 1.0, 0.0]
    assert objective.latent_scale_at(None) == 1.0


def test_constant_is_the_default_and_is_not_scheduled() -> None:
    objective = BetaELBO(beta=3.0)
    assert not objective.scheduled and objective.latent_scale_at(17) == 3.0 and not ELBO().scheduled


@pytest.mark.parametrize("step, beta_n", [(1, 0.0), (2, 0.75), (3, 1.5), (9, 3.0)])
def test_a_step_uses_its_scheduled_beta_in_the_closed_form(step: int, beta_n: float) -> None:
    loss = BBVILoss(model, guide, BetaELBO(beta=3.0, beta_schedule="linear", warmup_steps=4), Pathwise(),
                    max_plate_nesting=1)
    loss.step = step
    value = loss(torch.full((2,), X, dtype=F64)).loss.item()
    assert value == pytest.approx(-(RECONSTRUCTION - beta_n * KL), abs=1e-12)
    loss.step = None  # evaluation: the target beta
    assert loss(torch.full((2,), X, dtype=F64)).loss.item() == pytest.approx(-(RECONSTRUCTION - 3.0 * KL), abs=1e-12)


def test_bbvi_steps_report_the_scheduled_beta_and_evaluate_at_the_target() -> None:
    m = torch.nn.Parameter(torch.tensor(M, dtype=F64))

    def learnt_guide(x: torch.Tensor) -> None:
        import pyro
        import pyro.distributions as dist

        pyro.param("m", m)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(m, torch.tensor(S, dtype=F64)))

    bbvi = BBVI(model, learnt_guide, BetaELBO(beta=2.0, beta_schedule="cyclical", cycle_steps=2), Pathwise(),
                SGD(lr=1e-6), device="cpu", max_plate_nesting=1)
    x = torch.full((2,), X, dtype=F64)
    assert [bbvi.step(x).beta for _ in range(4)] == [0.0, 2.0, 0.0, 2.0]
    assert BBVI(model, learnt_guide, BetaELBO(beta=2.0), Pathwise(), SGD(lr=1e-6), device="cpu",
                max_plate_nesting=1).step(x).beta is None  # constant: no column


@pytest.mark.parametrize("key, value", [("warmup_steps", 0), ("cycle_steps", 0), ("cycle_ratio", 0.0),
                                        ("cycle_ratio", 1.5), ("beta_schedule", "sigmoid")])
def test_schedule_options_out_of_range_are_one_line_errors_naming_the_key(key: str, value: object) -> None:
    ((where, message),) = option_errors(lambda: BetaELBO(**{key: value}), prefix="objective")
    assert where == f"objective.{key}" and "\n" not in message
