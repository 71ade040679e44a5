"""The IWAE objective (:mod:`bbvi_kit.objectives.iwae`) against hand-computed numbers and the
conjugate Gaussian model z ~ N(0, 1), x | z ~ N(z, 1), q(z) = N(m, s^2), where
log p(x) = log N(x; 0, 2) and the ELBO have closed forms: E[IWAE_K] lies between them, grows with
K, and equals log p(x) at q = p(z|x) = N(x/2, 1/2); the VIMCO baseline by hand."""

from __future__ import annotations

import math

import pytest
import torch

from bbvi_kit import BBVILoss, Pathwise
from bbvi_kit.objectives import ELBO, IWAE
from bbvi_kit.objectives.iwae import log_mean_exp
from bbvi_kit.registry import objectives
from tests.support.conjugate import F64, closed_form_elbo, fixed_guide, log_evidence, log_weight, model

X, M, S = 1.5, 0.0, 1.5
EPS = torch.tensor([[-1.0], [0.5], [2.0]], dtype=F64)  # [K=3, batch=1]
guide = fixed_guide(M, S, EPS)
LOG_EVIDENCE = log_evidence(X)
CLOSED_FORM_ELBO = closed_form_elbo(X, M, S)


def test_the_bound_is_the_log_of_the_mean_weight() -> None:
    log_w = torch.log(torch.tensor([[1.0, 2.0], [2.0, 2.0], [3.0, 8.0], [6.0, 4.0]], dtype=F64))
    torch.testing.assert_close(IWAE(num_particles=4).bound(log_w), torch.log(torch.tensor([3.0, 4.0], dtype=F64)))


def test_the_loss_of_a_pyro_program_is_the_log_mean_exp_of_hand_computed_log_weights() -> None:
    z = M + S * EPS[:, 0]
    w = [math.exp(v) for v in log_weight(z, X, M, S).tolist()]
    expected = math.log(sum(w) / 3)
    result = BBVILoss(model, guide, IWAE(num_particles=3), Pathwise(), max_plate_nesting=1)(torch.tensor([X], dtype=F64))
    assert result.loss.item() == pytest.approx(-expected, abs=1e-12)


def test_the_bound_is_at_least_the_mean_log_weight_with_equality_only_for_equal_weights() -> None:
    log_w = torch.tensor([[0.0, 2.0], [1.0, 2.0], [-3.0, 2.0]], dtype=F64)
    iwae, elbo = IWAE(num_particles=3).bound(log_w), ELBO(num_particles=3).bound(log_w)
    assert iwae[0] > elbo[0] + 0.5
    assert iwae[1].item() == pytest.approx(2.0, abs=1e-12) and elbo[1].item() == pytest.approx(2.0, abs=1e-12)


def test_in_expectation_iwae_lies_between_the_elbo_and_log_evidence_and_grows_with_k() -> None:
    generator = torch.Generator().manual_seed(0)
    means = {}
    for k in (1, 4, 32):
        z = M + S * torch.randn(k, 4000, generator=generator, dtype=F64)
        values = IWAE(num_particles=k).bound(log_weight(z, X, M, S))
        means[k] = (values.mean().item(), values.std().item() / math.sqrt(4000))
    # K = 1 is the ELBO (to Monte Carlo error); larger K closes the gap toward log p(x), never past it.
    assert abs(means[1][0] - CLOSED_FORM_ELBO) < 5 * means[1][1]
    assert CLOSED_FORM_ELBO + 10 * means[4][1] < means[4][0] < means[32][0] - 10 * means[32][1]
    assert means[32][0] < LOG_EVIDENCE
    assert CLOSED_FORM_ELBO < LOG_EVIDENCE - 1.0  # the gap the test can see


def test_at_the_exact_posterior_every_k_gives_log_evidence() -> None:
    z = torch.tensor([[-2.0], [0.1], [3.0], [0.75]], dtype=F64)
    got = IWAE(num_particles=4).bound(log_weight(z, X, X / 2, math.sqrt(0.5)))
    assert got.item() == pytest.approx(LOG_EVIDENCE, abs=1e-12)


def test_one_particle_iwae_is_the_elbo() -> None:
    log_w = torch.tensor([[-3.5, 0.25, 12.0]])
    torch.testing.assert_close(IWAE(num_particles=1).bound(log_w), torch.tensor([-3.5, 0.25, 12.0]))


@pytest.mark.parametrize("level", [1000.0, -1000.0])
def test_log_mean_exp_is_stable_far_from_zero(level: float) -> None:
    log_w = torch.tensor([[level], [level + math.log(3.0)]], dtype=F64)  # weights e^level * (1, 3): mean 2 e^level
    got = log_mean_exp(log_w, 0)
    assert torch.isfinite(got).all()
    assert got.item() == pytest.approx(level + math.log(2.0), abs=1e-9)


def test_log_mean_exp_along_another_dimension() -> None:
    x = torch.log(torch.tensor([[1.0, 5.0], [3.0, 3.0]]))
    torch.testing.assert_close(log_mean_exp(x, dim=1), torch.log(torch.tensor([3.0, 3.0])))


def test_the_bound_keeps_trailing_batch_dimensions() -> None:
    log_w = torch.zeros(5, 2, 3)
    log_w[:, 1, 2] = torch.log(torch.tensor([1.0, 1.0, 1.0, 1.0, 6.0]))
    got = IWAE(num_particles=5).bound(log_w)
    assert got.shape == (2, 3)
    assert got[1, 2].item() == pytest.approx(math.log(2.0), abs=1e-6)
    assert got[0, 0].item() == pytest.approx(0.0, abs=1e-7)


def test_every_particles_learning_signal_is_the_bound() -> None:
    log_w = torch.log(torch.tensor([[1.0, 4.0], [5.0, 4.0]], dtype=F64))
    signal = IWAE(num_particles=2).learning_signal(log_w)
    assert signal.shape == (2, 2)
    expected = torch.log(torch.tensor([3.0, 4.0], dtype=F64))
    torch.testing.assert_close(signal, expected.expand(2, 2))


def test_the_vimco_baseline_by_hand_for_two_particles() -> None:
    """K = 2: b_k replaces log w_k by the other particle's log weight: b_0 = log((3 + 3)/2), b_1 = log((1 + 1)/2)."""
    log_w = torch.tensor([[0.0], [math.log(3.0)]], dtype=F64)
    torch.testing.assert_close(IWAE(num_particles=2).leave_one_out(log_w), torch.tensor([[math.log(3.0)], [0.0]], dtype=F64))


def test_the_vimco_baseline_by_hand_for_three_particles() -> None:
    """Weights (1, 2, 4): the geometric mean of the others replaces each in turn."""
    log_w = torch.log(torch.tensor([[1.0], [2.0], [4.0]], dtype=F64))
    expected = [math.log((math.sqrt(8.0) + 2 + 4) / 3), math.log((1 + 2.0 + 4) / 3), math.log((1 + 2 + math.sqrt(2.0)) / 3)]
    torch.testing.assert_close(IWAE(num_particles=3).leave_one_out(log_w)[:, 0], torch.tensor(expected, dtype=F64))


def test_the_vimco_baseline_of_a_particle_ignores_its_own_log_weight() -> None:
    log_w = torch.tensor([[[0.1, -1.0]], [[2.0, 0.3]], [[-0.5, 1.0]], [[1.0, 1.0]]], dtype=F64)  # [K=4, 1, 2]
    changed = log_w.clone()
    changed[1] = torch.tensor([[50.0, -50.0]], dtype=F64)
    objective = IWAE(num_particles=4)
    before, after = objective.leave_one_out(log_w), objective.leave_one_out(changed)
    assert before.shape == (4, 1, 2)
    torch.testing.assert_close(after[1], before[1])
    assert not torch.allclose(after[0], before[0])


def test_the_vimco_baseline_needs_two_particles() -> None:
    with pytest.raises(ValueError, match=r"^a leave-one-out baseline needs num_particles >= 2$"):
        IWAE(num_particles=1).leave_one_out(torch.zeros(1, 2))


def test_iwae_is_registered_as_iwae_with_five_particles_by_default() -> None:
    assert objectives.get("iwae") is IWAE
    assert IWAE().num_particles == 5
    assert IWAE().latent_scale == 1.0
    assert repr(IWAE()) == "IWAE(num_particles=5)"


@pytest.mark.parametrize("value", [0, 100_001])
def test_iwae_refuses_num_particles_out_of_range(value: int) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="num_particles"):
        IWAE(num_particles=value)
