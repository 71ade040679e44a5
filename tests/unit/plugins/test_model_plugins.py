"""Every registered model plugin, and the built-in ones' specific structure."""

from __future__ import annotations

import math

import pyro
import pytest
import torch

from bbvi_kit import ELBO, IWAE, BBVILoss, DataInfo, Pathwise
from bbvi_kit.recipe import load_recipe, resolve
from bbvi_kit.registry import models
from bbvi_kit.runner import run_recipe
from bbvi_kit_plugins.gaussian_vae import GaussianVAE
from bbvi_kit_plugins.linear_vae import LinearVAE

TINY = {
    "gaussian_vae": {"latent_dim": 2, "hidden": [8]},
    "beta_vae": {"latent_dim": 2, "hidden": [8]},
    "iwae": {"latent_dim": 2, "hidden": [8]},
    "linear_vae": {"latent_dim": 2},
    "bayesian_logistic_regression": {},
}


def tiny_recipe(model: str) -> dict:
    return {
        "name": f"smoke_{model}",
        "model": {"name": model, **TINY.get(model, {})},
        "data": {"name": "digits", "labels": model == "bayesian_logistic_regression"},
        "training": {"batch_size": 32, "iterations": 6, "eval_every": 3, "progress": False, "device": "cpu"},
    }


@pytest.mark.parametrize("name", models.names())
def test_every_registered_model_trains_from_a_recipe(name: str, tmp_path) -> None:
    if name not in TINY:
        pytest.skip(f"no tiny options known for third-party plugin {name!r}")
    recipe = resolve(tiny_recipe(name))
    history = run_recipe(recipe, tmp_path)
    assert [row["step"] for row in history.metrics] == list(range(1, 7))
    assert all(math.isfinite(row["loss"]) and row["minibatch_grad_norm_sq"] > 0 for row in history.metrics)
    assert [row["step"] for row in history.evals] == [3, 6]
    # The recorded groups partition the plugin's parameters.
    groups = [k[len("minibatch_grad_norm_sq_"):] for k in history.metrics[0]
              if k.startswith("minibatch_grad_norm_sq_") and k != "minibatch_grad_norm_sq_avg"]
    assert groups and set(groups) <= {"phi", "theta"}


@pytest.mark.parametrize("name", ["gaussian_vae", "beta_vae", "iwae", "linear_vae"])
def test_vae_plugins_partition_their_parameters(name: str) -> None:
    info = DataInfo(name="toy", shape=(1, 3, 3), num_train=10, num_test=2)
    model = models.get(name)(info, **TINY[name])
    groups = model.parameter_groups()
    assert set(groups) == {"phi", "theta"}
    ids = [id(p) for g in groups.values() for p in g]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters()}


def test_beta_vae_and_iwae_bring_their_objective() -> None:
    beta = resolve({"model": {"name": "beta_vae"}})
    assert beta.objective.name == "beta" and beta.objective.options.beta == 4.0
    iwae = resolve({"model": {"name": "iwae"}, "objective": {"name": "iwae", "num_particles": 10}})
    assert iwae.objective.options.num_particles == 10
    assert resolve({"model": {"name": "iwae"}}).objective.options.num_particles == 5


@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli"])
def test_gaussian_vae_vectorises_particles_and_bounds_the_encoder(likelihood: str) -> None:
    torch.manual_seed(0)
    info = DataInfo(name="toy", shape=(1, 4, 4), num_train=10, num_test=2)
    vae = GaussianVAE(info, latent_dim=3, hidden=[6, 5], likelihood=likelihood)
    x = torch.rand(7, 1, 4, 4)
    result = BBVILoss(vae.model, vae.guide, IWAE(num_particles=4), Pathwise())(x)
    assert result.particles.guide_trace.nodes["z"]["value"].shape == (4, 7, 3)
    assert result.particles.log_weights.shape == (4, 7)
    # Extreme inputs: mean and log-variance stay inside their soft-clipping bounds.
    with torch.no_grad():
        for p in vae.parameters():
            p.mul_(1e3)
    loc, scale = vae.encode(torch.rand(5, 1, 4, 4) * 100)
    assert loc.abs().max() <= 50.0
    assert scale.min() >= math.exp(-10.0) * 0.999 and scale.max() <= math.exp(10.0) * 1.001


def test_gaussian_vae_decoder_log_density_is_the_gaussian_formula() -> None:
    torch.manual_seed(1)
    info = DataInfo(name="toy", shape=(4,), num_train=10, num_test=2)
    vae = GaussianVAE(info, latent_dim=2, hidden=[3], decoder_scale=0.3)
    x = torch.rand(5, 4)
    pyro.set_rng_seed(0)
    result = BBVILoss(vae.model, vae.guide, ELBO(), Pathwise())(x)
    z = result.particles.guide_trace.nodes["z"]["value"]
    mean = torch.sigmoid(vae.decoder(z))
    expected = (-0.5 * ((x - mean) / 0.3) ** 2 - math.log(0.3) - 0.5 * math.log(2 * math.pi)).sum(-1)
    torch.testing.assert_close(result.particles.model_trace.nodes["x"]["log_prob"], expected)


def test_linear_vae_is_the_standard_form() -> None:
    torch.manual_seed(2)
    info = DataInfo(name="toy", shape=(3,), num_train=10, num_test=2)
    vae = LinearVAE(info, latent_dim=2)
    with torch.no_grad():
        vae.mu.copy_(torch.tensor([0.5, -1.0, 2.0]))
        vae.log_sigma.fill_(math.log(0.7))
        vae.log_D.copy_(torch.log(torch.tensor([0.2, 0.3])))
    x = torch.randn(6, 3)
    pyro.set_rng_seed(0)
    result = BBVILoss(vae.model, vae.guide, ELBO(), Pathwise())(x)
    q = result.particles.guide_trace.nodes["z"]["fn"].base_dist
    # (one particle: the trace has no particle dim to index)
    torch.testing.assert_close(q.loc.reshape(6, 2), (x - vae.mu) @ vae.V.T)
    torch.testing.assert_close(q.scale.reshape(6, 2), torch.tensor([0.2, 0.3]).sqrt().expand(6, 2))
    p = result.particles.model_trace.nodes["x"]["fn"].base_dist
    z = result.particles.guide_trace.nodes["z"]["value"]
    torch.testing.assert_close(p.loc, z @ vae.W.T + vae.mu)
    torch.testing.assert_close(p.scale, torch.full_like(p.loc, 0.7))


@pytest.mark.slow
def test_quickstart_recipe_learns(tmp_path) -> None:
    """The README's main job, as written (only the progress bar off): the test loss falls a lot."""
    recipe = load_recipe("recipes/quickstart.yaml", ["training.progress=false"])
    history = run_recipe(recipe, tmp_path)
    tests = [row["test_loss"] for row in history.evals]
    assert len(tests) == recipe.training.epochs
    assert tests[-1] < tests[0] - 50.0  # nats per example; it starts near 150
    run_dir = tmp_path / "quickstart"
    (only,) = list(run_dir.iterdir())
    assert {p.name for p in (only / "plots").iterdir()} == {"loss.png", "grad_norm_sq.png"}
