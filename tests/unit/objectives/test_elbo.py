"""The ELBO objective (:mod:`bbvi_kit.objectives.elbo`) against closed forms and hand-computed
numbers.

Conjugate model: z ~ N(0, 1), x | z ~ N(z, 1), q(z) = N(m, s^2). log w(z) is quadratic in z, so
its mean over the two draws z = m - s, m + s (sample mean m, second moment m^2 + s^2, exactly
those of q) is the ELBO itself:
ELBO = -log 2pi - ((x - m)^2 + s^2)/2 - (m^2 + s^2)/2 + log(2 pi e s^2)/2.
"""

from __future__ import annotations

import math

import pytest
import torch

from bbvi_kit import BBVILoss, Pathwise
from bbvi_kit.objectives import ELBO
from bbvi_kit.registry import objectives
from tests.support.conjugate import F64, closed_form_elbo, fixed_guide, model
from tests.support.conjugate import log_weight as conjugate_log_weight

X, M, S = 1.5, 0.3, 0.7
guide = fixed_guide(M, S, torch.tensor([-1.0, 1.0]))


def log_weight(z: torch.Tensor, m: float = M, s: float = S) -> torch.Tensor:
    return conjugate_log_weight(z, X, m, s)


def test_the_bound_of_two_symmetric_draws_is_the_closed_form_elbo() -> None:
    log_w = log_weight(torch.tensor([M - S, M + S], dtype=F64)).unsqueeze(-1)  # [K=2, batch=1]
    got = ELBO(num_particles=2).bound(log_w)
    assert got.shape == (1,)
    assert got.item() == pytest.approx(closed_form_elbo(X, M, S), abs=1e-12)


def test_the_loss_of_a_pyro_program_with_those_draws_is_minus_the_closed_form_elbo() -> None:
    result = BBVILoss(model, guide, ELBO(), Pathwise(), max_plate_nesting=1)(torch.full((2,), X, dtype=F64))
    assert result.loss.item() == pytest.approx(-closed_form_elbo(X, M, S), abs=1e-12)


def test_at_the_exact_posterior_the_elbo_is_log_evidence() -> None:
    """q = p(z|x) = N(x/2, 1/2): every log weight is log p(x) = log N(x; 0, 2), at any draw."""
    z = torch.tensor([-2.0, 0.1, 3.0], dtype=F64).unsqueeze(-1)
    log_w = log_weight(z, m=X / 2, s=math.sqrt(0.5))
    log_evidence = -0.5 * math.log(2 * math.pi * 2) - X**2 / 4
    assert ELBO(num_particles=3).bound(log_w).item() == pytest.approx(log_evidence, abs=1e-12)
    assert closed_form_elbo(X, X / 2, math.sqrt(0.5)) == pytest.approx(log_evidence, abs=1e-12)


def test_the_bound_is_the_mean_over_particles_per_example() -> None:
    log_w = torch.tensor([[1.0, -2.0, 10.0], [3.0, -4.0, 20.0]])  # [K=2, batch=3]
    torch.testing.assert_close(ELBO(num_particles=2).bound(log_w), torch.tensor([2.0, -3.0, 15.0]))


def test_the_bound_keeps_trailing_batch_dimensions() -> None:
    log_w = torch.arange(24.0).reshape(4, 2, 3)
    got = ELBO(num_particles=4).bound(log_w)
    assert got.shape == (2, 3)
    assert got[1, 2].item() == (5.0 + 11.0 + 17.0 + 23.0) / 4


def test_one_particle_bound_is_that_particles_log_weight() -> None:
    log_w = torch.tensor([[-1.25, 7.0]])
    torch.testing.assert_close(ELBO().bound(log_w), torch.tensor([-1.25, 7.0]))


def test_the_learning_signal_is_each_log_weight_over_k() -> None:
    log_w = torch.tensor([[3.0, -6.0], [9.0, 0.0], [-3.0, 12.0]])
    torch.testing.assert_close(ELBO(num_particles=3).learning_signal(log_w),
                               torch.tensor([[1.0, -2.0], [3.0, 0.0], [-1.0, 4.0]]))


def test_the_learning_signals_sum_to_the_bound() -> None:
    log_w = torch.tensor([[0.5, 4.0], [1.5, -2.0]])
    assert ELBO(num_particles=2).learning_signal(log_w).sum(0).tolist() == [1.0, 1.0]


def test_the_leave_one_out_baseline_is_the_other_particles_mean_over_k() -> None:
    log_w = torch.tensor([[1.0], [2.0], [6.0]])
    # k=0: (2 + 6)/2 / 3; k=1: (1 + 6)/2 / 3; k=2: (1 + 2)/2 / 3
    torch.testing.assert_close(ELBO(num_particles=3).leave_one_out(log_w), torch.tensor([[4 / 3], [3.5 / 3], [1.5 / 3]]))


def test_the_leave_one_out_baseline_of_a_particle_ignores_its_own_log_weight() -> None:
    log_w = torch.tensor([[1.0, -1.0], [2.0, 5.0], [6.0, 0.5], [-3.0, 2.0]])
    changed = log_w.clone()
    changed[2] = torch.tensor([100.0, -100.0])
    before, after = ELBO(num_particles=4).leave_one_out(log_w), ELBO(num_particles=4).leave_one_out(changed)
    torch.testing.assert_close(after[2], before[2])
    assert not torch.allclose(after[0], before[0])


def test_the_leave_one_out_baseline_needs_two_particles() -> None:
    with pytest.raises(ValueError, match=r"^a leave-one-out baseline needs num_particles >= 2$"):
        ELBO().leave_one_out(torch.zeros(1, 3))


def test_the_elbo_is_registered_as_elbo_with_one_particle_by_default() -> None:
    assert objectives.get("elbo") is ELBO
    assert ELBO().num_particles == 1
    assert ELBO().latent_scale == 1.0
    assert repr(ELBO(num_particles=3)) == "ELBO(num_particles=3, kl='sample')"
