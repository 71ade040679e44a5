"""The objective interface (:mod:`bbvi_kit.objectives.base`): the three reductions a subclass must
define, the ``num_particles`` option and its bounds, the defaults (``latent_scale`` 1, not linear
in the log weights) and the one-line refusal of unknown or out-of-range options."""

from __future__ import annotations

import pytest
import torch

from bbvi_kit.objectives import ELBO, IWAE, BetaELBO, Objective
from tests.support.options import option_errors


class Halved(Objective):
    """A minimal objective: only what the interface asks for."""

    def bound(self, log_weights: torch.Tensor) -> torch.Tensor:
        return log_weights.mean(0) / 2


@pytest.mark.parametrize("method", ["bound", "learning_signal", "leave_one_out"])
def test_the_base_class_defines_no_reduction(method: str) -> None:
    with pytest.raises(NotImplementedError):
        getattr(Objective(), method)(torch.zeros(2, 3))


def test_a_subclass_defining_only_the_bound_still_refuses_the_other_reductions() -> None:
    objective = Halved(num_particles=2)
    torch.testing.assert_close(objective.bound(torch.tensor([[2.0], [6.0]])), torch.tensor([2.0]))
    with pytest.raises(NotImplementedError):
        objective.learning_signal(torch.zeros(2, 1))


def test_the_defaults_are_one_particle_unit_latent_scale_and_not_linear() -> None:
    objective = Objective()
    assert objective.num_particles == 1
    assert objective.latent_scale == 1.0
    assert Objective.linear_in_log_weights is False


def test_num_particles_comes_from_the_validated_options() -> None:
    objective = Halved(num_particles=7)
    assert objective.num_particles == 7
    assert objective.options.num_particles == 7
    assert repr(objective) == "Halved(num_particles=7)"


@pytest.mark.parametrize("value", [1, 100_000])
def test_num_particles_accepts_its_bounds(value: int) -> None:
    assert Objective(num_particles=value).num_particles == value


@pytest.mark.parametrize("value, words", [(0, "greater than or equal to 1"), (100_001, "less than or equal to 100000"),
                                          (-3, "greater than or equal to 1"), ("many", "valid integer")])
def test_num_particles_out_of_range_is_a_one_line_error_naming_the_key(value: object, words: str) -> None:
    ((key, message),) = option_errors(lambda: Objective(num_particles=value), prefix="objective")
    assert key == "objective.num_particles"
    assert words in message and "\n" not in message


def test_an_unknown_option_is_refused_not_dropped() -> None:
    errors = option_errors(lambda: Objective(num_particles=2, particles=3), prefix="objective")
    assert errors == [("objective.particles", "unknown key")]


def test_which_objectives_are_linear_in_the_log_weights() -> None:
    """Only for a mean of log weights does the held-sample ``-log q`` term have expectation zero."""
    assert ELBO.linear_in_log_weights is True
    assert BetaELBO.linear_in_log_weights is True
    assert IWAE.linear_in_log_weights is False


def test_every_built_in_objective_is_an_objective() -> None:
    for cls in (ELBO, IWAE, BetaELBO):
        assert issubclass(cls, Objective)
        assert issubclass(cls.Options, Objective.Options)
