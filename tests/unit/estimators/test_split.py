"""Estimator split: phi's gradient from one estimator (and, optionally, objective), theta's from
another, each on its own pass of particles; checked at the same seed against the two estimators
run alone, and in expectation against closed forms (PIWAE: theta on IWAE_2 by quadrature, phi
on the exact ELBO)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyro
import pytest
import torch

from bbvi_kit import ELBO, IWAE, SGD, BBVILoss, Pathwise
from bbvi_kit.errors import InputError
from bbvi_kit.estimators.split import PerGroup
from bbvi_kit.infer.bbvi import BBVI
from bbvi_kit.registry import estimators
from tests.support.conjugate import X_OBS, Conjugate, estimate_gradient, loss_and_gradients
from tests.support.options import option_errors

X = torch.full((16,), X_OBS, dtype=torch.float64)


@pytest.mark.parametrize("phi, theta", [("dreg", "pathwise"), ("score", "pathwise"),
                                        ("pathwise", {"name": "score", "baseline": "leave_one_out"})])
def test_each_group_gets_its_estimators_gradient_from_its_own_pass(phi: Any, theta: Any) -> None:
    """At one seed, phi's pass is drawn first, theta's next: the split's gradient is phi's
    estimator's in (m, log s) on the first draws and theta's in mu0 on the next, exactly."""
    problem = Conjugate(mu0=0.3, m=-0.4, s=1.3)
    objective = IWAE(num_particles=4)
    loss, grads = loss_and_gradients(problem, objective, PerGroup(phi=phi, theta=theta), X, seed=5)
    pyro.set_rng_seed(5)
    alone = []
    for spec in (phi, theta):
        options = dict(spec) if isinstance(spec, dict) else {"name": spec}
        estimator = estimators.get(options.pop("name"))(**options)
        for p in problem.params:
            p.grad = None
        result = BBVILoss(problem.model, problem.guide, objective, estimator, max_plate_nesting=1)(X)
        result.surrogate.backward()
        alone.append((result.loss, torch.stack([p.grad.clone() for p in problem.params])))
    torch.testing.assert_close(grads[1:], alone[0][1][1:], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(grads[:1], alone[1][1][:1], rtol=1e-12, atol=1e-14)
    assert loss == alone[1][0]  # the run's objective, from theta's pass


def test_piwae_is_unbiased_for_iwae_in_theta_and_the_elbo_in_phi() -> None:
    """Rainforth et al. (2018)'s PIWAE: theta on IWAE_2 (Gauss-Hermite quadrature, differentiated),
    phi on the ELBO (closed form), each part's estimate within Monte Carlo error."""
    pyro.set_rng_seed(3)
    problem = Conjugate(mu0=0.0, m=-0.5, s=1.5)
    iwae2 = problem.exact_grad(problem.quadrature_iwae2()).numpy()
    elbo = problem.exact_grad(problem.exact_elbo()).numpy()
    mean, se = estimate_gradient(problem, IWAE(num_particles=2), PerGroup(phi="pathwise", phi_objective="elbo"))
    assert np.all(se < 0.05), se
    assert abs(mean[0] - iwae2[0]) < 4 * se[0] + 1e-3
    np.testing.assert_array_less(np.abs(mean[1:] - elbo[1:]), 4 * se[1:] + 1e-3)
    assert np.all(np.abs(elbo[1:] - iwae2[1:]) > 10 * se[1:])  # the two bounds do differ in phi


def test_phi_num_particles_sets_phis_k() -> None:
    split = PerGroup(phi="pathwise", phi_objective="elbo", phi_num_particles=7)
    bound = split.phi_objective(IWAE(num_particles=3))
    assert isinstance(bound, ELBO) and bound.num_particles == 7
    assert split.phi_objective(IWAE(num_particles=3)).num_particles == 7
    assert PerGroup(phi="dreg").phi_objective(IWAE(num_particles=3)).num_particles == 3


def test_what_a_part_cannot_serve_is_refused_in_one_line_naming_the_group() -> None:
    with pytest.raises(ValueError, match=r"^phi: estimator dreg needs objective iwae"):
        PerGroup(phi="dreg", phi_objective="elbo").check(IWAE(num_particles=2))
    with pytest.raises(ValueError, match=r"^phi: estimator dreg needs objective iwae"):
        BBVILoss(Conjugate().model, Conjugate().guide, ELBO(), PerGroup(phi="dreg"))
    for key, value, words in (("phi", "drag", "unknown estimator plugin 'drag'"), ("theta", "split", "split cannot"),
                              ("phi_objective", "iwea", "unknown objective plugin 'iwea'"),
                              ("phi", {"name": "score", "baseline": "mean"}, "baseline: Input should be")):
        options = {"phi": "dreg", key: value}
        ((where, message),) = option_errors(lambda o=options: PerGroup(**o), prefix="estimator")
        assert where == f"estimator.{key}" and words in message and "\n" not in message


def test_bbvi_trains_with_it_and_keeps_both_parts_state() -> None:
    problem = Conjugate(mu0=0.3, m=-0.4, s=1.3)
    pyro.set_rng_seed(0)
    split = PerGroup(phi={"name": "score", "baseline": "running_mean"}, theta="pathwise")
    bbvi = BBVI(problem.model, problem.guide, ELBO(num_particles=2), split, SGD(lr=0.01), device="cpu",
                max_plate_nesting=1, parameter_groups=lambda: {"phi": problem.params[1:], "theta": problem.params[:1]})
    before = [p.detach().clone() for p in problem.params]
    results = [bbvi.step(X) for _ in range(3)]
    assert all(torch.isfinite(r.loss) for r in results)
    assert all(not torch.equal(a, p.detach()) for a, p in zip(before, problem.params))
    assert set(bbvi.groups) == {"phi", "theta"} and len(bbvi.groups["phi"]) == 2
    state = bbvi.state_dict()["estimator"]
    assert state["phi"]["running_mean"] is not None and state["theta"] == {}


def test_a_recipe_takes_it(tmp_path) -> None:  # noqa: ANN001
    from bbvi_kit.recipe import load_recipe

    path = tmp_path / "r.yaml"
    path.write_text("model: {name: iwae}\nobjective: {name: iwae, num_particles: 4}\n"
                    "estimator: {name: split, phi: dreg}\n")
    assert load_recipe(path).estimator.as_dict() == {"name": "split", "phi": "dreg", "theta": "pathwise",
                                                     "phi_objective": None, "phi_num_particles": None}
    path.write_text("model: {name: iwae}\nobjective: {name: iwae, num_particles: 4}\n"
                    "estimator: {name: split, phi: dreg, phi_objective: elbo}\n")
    with pytest.raises(InputError, match=r"r\.yaml: estimator: phi: estimator dreg needs objective iwae"):
        load_recipe(path)


def test_a_vae_modules_parameters_are_found_and_split_as_for_pathwise() -> None:
    """The VAE's own modules, no declared groups: the step finds the same phi and theta as under
    pathwise (the walk of the graph after the parts' backward passes), and trains."""
    from bbvi_kit import DataInfo
    from bbvi_kit_plugins.gaussian_vae import GaussianVAE

    x = torch.rand(8, 6, generator=torch.Generator().manual_seed(0))
    sizes = {}
    for name, estimator in (("pathwise", Pathwise()), ("split", PerGroup(phi="dreg"))):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        vae = GaussianVAE(DataInfo(name="toy", shape=(6,), num_train=8, num_test=0), latent_dim=2, hidden=[5])
        bbvi = BBVI(vae.model, vae.guide, IWAE(num_particles=3), estimator, SGD(lr=0.01), device="cpu", modules=[vae])
        assert torch.isfinite(bbvi.step(x).loss)
        sizes[name] = {group: sum(p.numel() for p in params) for group, params in bbvi.groups.items()}
    assert sizes["split"] == sizes["pathwise"] and set(sizes["split"]) == {"phi", "theta"}
