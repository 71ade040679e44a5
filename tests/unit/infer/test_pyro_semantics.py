"""Regression tests for the twelve ways the engine used to be silently wrong on ordinary Pyro
programs (issue 12), and bbvi-kit's objectives against Pyro's other ELBOs.

Exact references: closed-form gradients of Gaussian models, Pyro's ``RenyiELBO`` at the same
seed, and ``TraceEnum_ELBO`` / ``TraceGraph_ELBO`` / ``TraceMeanField_ELBO`` in expectation.
"""

from __future__ import annotations

import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import RenyiELBO, TraceEnum_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO, config_enumerate
from pyro.infer.autoguide import AutoDelta, AutoIAFNormal
from torch.utils.data import TensorDataset

from bbvi_kit import ELBO, IWAE, SGD, Adam, Auto, BBVILoss, InputError, Pathwise, ScoreFunction, Trainer, TrainingOptions
from tests.support.pyro_programs import PAIRS, X, X2, _PyroVAE
from tests.support.pyro_programs import all_params, create_parameters, gradients

QUIET = TrainingOptions(progress=False, eval_every=10**9, record_every=1)


def mean_and_error(loss: BBVILoss, args: tuple, param: torch.Tensor, passes: int = 12) -> tuple[float, float]:
    """Mean and standard error of d(surrogate)/d(param) over independent passes."""
    draws = []
    for seed in range(passes):
        pyro.set_rng_seed(seed)
        (g,) = torch.autograd.grad(loss(*args).surrogate, [param])
        draws.append(g.double())
    d = torch.stack(draws)
    return d.mean().item(), (d.std() / math.sqrt(passes)).item()


def pyro_loss_and_grads(elbo, model, guide, args, params, seed: int = 0) -> tuple[float, list[torch.Tensor]]:
    """Pyro's ``loss_and_grads`` at ``seed``: the loss and the gradients it leaves in ``.grad``."""
    for p in params:
        p.grad = None
    pyro.set_rng_seed(seed)
    value = elbo.loss_and_grads(model, guide, *args)
    grads = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    return value, grads


# ---------------------------------------------------------------------------------- (1) Delta
def test_map_with_auto_delta_moves_to_the_posterior_mode() -> None:
    """(1) AutoDelta under the default estimator reaches the MAP (it never moved under score)."""
    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 2.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    guide = AutoDelta(model)
    trainer = Trainer(model, guide, objective=ELBO(), estimator=Auto(), optimizer=Adam(lr=0.05),
                      training=QUIET.model_copy(update={"batch_size": len(X), "epochs": 400}), modules=[guide])
    trainer.fit(TensorDataset(X))
    mode = X.sum() / (len(X) + 0.25)  # posterior mode of N(0, 4) prior times N(mu, 1) likelihoods
    assert abs(guide.median()["mu"].item() - mode.item()) < 1e-3


# ---------------------------------------------------------------------------------- (2) flows
def test_flow_guide_under_score_trains_with_no_model_parameter() -> None:
    """(2) A normalizing-flow guide under score: its parameters get a gradient (the held sample
    is inverted with the graph), and fit runs with no model parameter at all."""
    def model(x):
        z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True), 1.0), obs=x)

    guide = AutoIAFNormal(model, hidden_dim=[4], num_transforms=1)
    trainer = Trainer(model, guide, objective=ELBO(num_particles=8), estimator=ScoreFunction(),
                      optimizer=Adam(lr=0.01), training=QUIET.model_copy(update={"batch_size": 6, "epochs": 3}),
                      modules=[guide])
    history = trainer.fit(TensorDataset(X))
    assert list(trainer.groups) == ["phi"]
    assert all(row["minibatch_grad_norm_sq_phi"] > 0 for row in history.metrics)


# ---------------------------------------------------------------------------------- (3) enumeration
def test_enumerated_guide_sites_are_sampled_with_a_warning_and_unbiased_against_trace_enum() -> None:
    """(10) A guide site marked for enumeration is sampled, with a warning naming it; the loss is
    then TraceEnum_ELBO's (which sums the site out) in expectation."""
    def model(x):
        locs = pyro.param("locs", torch.tensor([-1.0, 1.0]))
        with pyro.plate("data", len(x)):
            c = pyro.sample("c", dist.Categorical(torch.tensor([0.3, 0.7])))
            pyro.sample("x", dist.Normal(locs[c], 1.0), obs=x)

    @config_enumerate
    def guide(x):
        logits = pyro.param("logits", torch.zeros(len(x), 2))
        with pyro.plate("data", len(x)):
            pyro.sample("c", dist.Categorical(logits=logits))

    loss = BBVILoss(model, guide, ELBO(num_particles=20000), Auto())
    with pytest.warns(UserWarning, match="marked for enumeration are sampled, not summed out: 'c'"):
        value = loss(X).loss.item() * len(X)
    exact = TraceEnum_ELBO(max_plate_nesting=1).loss(model, guide, X)
    assert abs(value - exact) < 0.05


# ---------------------------------------------------------------------------------- (4) model-only
def test_model_only_latent_gets_its_gradient_under_every_estimator() -> None:
    """(4) theta reaches the likelihood only through a model-only latent zp ~ N(theta, 1):
    d/dtheta E[log N(x; zp, 1)] = x - theta = 0.5 exactly (score used to give 0.005)."""
    x = torch.full((4,), 0.5)
    theta = torch.tensor(0.0, requires_grad=True)

    def model(x):
        with pyro.plate("data", len(x)):
            zp = pyro.sample("zp", dist.Normal(theta, 1.0))
            pyro.sample("x", dist.Normal(zp, 1.0), obs=x)

    def guide(x):
        pass

    for estimator in (Pathwise(), Auto(), ScoreFunction()):
        loss = BBVILoss(model, guide, ELBO(num_particles=4000), estimator)
        with pytest.warns(UserWarning, match="drawn from their prior.*'zp'"):
            loss(x)
        mean, error = mean_and_error(loss, (x,), theta)
        assert abs(-mean - 0.5) < 5 * error + 1e-3, (type(estimator).__name__, mean, error)


def test_model_only_latent_loss_equals_a_guide_that_draws_the_prior() -> None:
    """The semantics of a model-only latent: as if the guide drew it from its prior (Pyro's
    Trace_ELBO with that guide gives the same loss and gradient at the same seed)."""
    pair = PAIRS["model_only_latent"]
    model, guide, args, _ = pair.make()
    create_parameters(model, guide, args)

    def guide_with_prior(x):
        loc, scale = pyro.param("z_loc"), pyro.param("z_scale")
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(loc, scale))  # drawn in the order bbvi-kit draws them
            pyro.sample("z_prior_only", dist.Normal(pyro.param("theta"), 1.0))

    loss = BBVILoss(model, guide, ELBO(), Pathwise())
    pyro.set_rng_seed(0)
    with pytest.warns(UserWarning, match="'z_prior_only'"):
        result = loss(*args)
    params = all_params([])
    pyro.set_rng_seed(0)
    value = pyro.infer.Trace_ELBO().differentiable_loss(model, guide_with_prior, *args)
    torch.testing.assert_close(result.loss * len(X), value.detach())
    for a, b in zip(gradients(result.surrogate, params), gradients(value, params)):
        torch.testing.assert_close(a * len(X), b)


# ---------------------------------------------------------------------------------- (5) masks
def test_score_with_a_masked_latent_that_drives_the_likelihood() -> None:
    """(5) z is masked out of log p and log q but still drives x: d/dm E_q[log N(0; z, 1)] = -m
    = -2 exactly (score used to give 0.000)."""
    m = torch.tensor(2.0, requires_grad=True)
    x = torch.zeros(4)

    def model(x):
        with pyro.plate("data", len(x)):
            with poutine.mask(mask=False):
                z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)), poutine.mask(mask=False):
            pyro.sample("z", dist.Normal(m, 1.0))

    mean, error = mean_and_error(BBVILoss(model, guide, ELBO(num_particles=4000), ScoreFunction()), (x,), m)
    assert abs(-mean - (-2.0)) < 5 * error + 1e-3, (mean, error)


# ---------------------------------------------------------------------------------- (6) late parameters
def _per_item_pair():
    data = torch.tensor([1.0, -1.0, 2.0, 0.5, -2.0, 3.0])

    def model(idx):
        with pyro.plate("data", len(data), subsample=idx):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=data[idx])

    def guide(idx):
        locs = torch.stack([pyro.param(f"loc_{int(i)}", torch.tensor(0.0)) for i in idx])
        with pyro.plate("data", len(data), subsample=idx):
            pyro.sample("z", dist.Normal(locs, 0.7))

    return model, guide, data


def test_parameters_created_after_the_first_step_are_trained_and_checkpointed() -> None:
    """(6) Per-item pyro.param sites inside a subsampled plate appear step by step: each joins
    the optimizer when it first appears (4 of 6 used to stay at their initial value)."""
    model, guide, data = _per_item_pair()
    options = QUIET.model_copy(update={"batch_size": 2, "epochs": 50})
    trainer = Trainer(model, guide, objective=ELBO(num_particles=20), estimator=Pathwise(), optimizer=SGD(lr=0.2),
                      training=options)
    trainer.fit(TensorDataset(torch.arange(6)))
    learned = torch.stack([pyro.param(f"loc_{i}").detach() for i in range(6)])
    torch.testing.assert_close(learned, data / 2, atol=0.2, rtol=0)  # the posterior means
    state = trainer.state_dict()
    assert sorted(state["parameters"]) == sorted(f"param:loc_{i}" for i in range(6))

    pyro.clear_param_store()  # a fresh process resuming: the parameters come back, all six
    fresh = Trainer(model, guide, objective=ELBO(num_particles=20), estimator=Pathwise(), optimizer=SGD(lr=0.2),
                    training=options)
    fresh.restore(state, TensorDataset(torch.arange(6)))
    torch.testing.assert_close(torch.stack([pyro.param(f"loc_{i}").detach() for i in range(6)]), learned)
    assert [len(g["params"]) for g in fresh.optimizer.param_groups] == \
        [len(g["params"]) for g in trainer.optimizer.param_groups]


def test_a_checkpoint_of_the_previous_format_still_resumes() -> None:
    """Checkpoints written before parameters had keys (one list in group order) restore by order."""
    vae = _PyroVAE()
    options = QUIET.model_copy(update={"batch_size": 6, "epochs": 2})
    trainer = Trainer(vae.model, vae.guide, objective=ELBO(), estimator=Auto(), optimizer=Adam(lr=1e-2),
                      training=options)
    trainer.fit(TensorDataset(X2))
    state = trainer.state_dict()
    old = {k: v for k, v in state.items() if k not in ("parameter_keys", "optimizer_keys")}
    old["group_sizes"] = {name: [list(p.shape) for p in ps] for name, ps in trainer.groups.items()}
    old["parameters"] = [state["parameters"][k] for keys in state["parameter_keys"].values() for k in keys]
    pyro.clear_param_store()
    fresh_vae = _PyroVAE()
    fresh = Trainer(fresh_vae.model, fresh_vae.guide, objective=ELBO(), estimator=Auto(), optimizer=Adam(lr=1e-2),
                    training=options)
    fresh.restore(old, TensorDataset(X2))
    for a, b in zip(fresh_vae.parameters(), vae.parameters()):
        torch.testing.assert_close(a, b)
    old["group_sizes"]["phi"] = [[1]]
    with pytest.raises(InputError, match="do not match this model"):
        Trainer(fresh_vae.model, fresh_vae.guide, objective=ELBO(), estimator=Auto(), optimizer=Adam(lr=1e-2),
                training=options).restore(old, TensorDataset(X2))


# ---------------------------------------------------------------------------------- (7) phi / theta
def test_pyro_vae_methods_of_one_module_split_into_encoder_phi_and_decoder_theta() -> None:
    """(7) Pyro's examples/vae/vae.py shape: the encoder is phi, the decoder theta, and
    minibatch_grad_norm_sq_theta is recorded (everything used to be phi)."""
    vae = _PyroVAE()
    trainer = Trainer(vae.model, vae.guide, objective=ELBO(), estimator=Auto(), optimizer=Adam(lr=1e-3),
                      training=QUIET.model_copy(update={"batch_size": 6, "epochs": 2}))
    history = trainer.fit(TensorDataset(X2))
    assert {id(p) for p in trainer.groups["phi"]} == {id(p) for p in vae.encoder.parameters()}
    assert {id(p) for p in trainer.groups["theta"]} == {id(p) for p in vae.decoder.parameters()}
    assert history.metrics[-1]["minibatch_grad_norm_sq_theta"] > 0


# ---------------------------------------------------------------------------------- (8) the divisor
def test_a_model_without_a_data_plate_says_so_once_and_the_divisor_can_be_named() -> None:
    """(8) Observations in a Python loop with no plate: per batch (divisor 1), with one warning;
    ``examples=`` names the number or the plate."""
    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        for i in range(len(x)):
            pyro.sample(f"x_{i}", dist.Normal(mu, 1.0), obs=x[i])

    def guide(x):
        pyro.sample("mu", dist.Normal(pyro.param("m", torch.tensor(0.0)), 1.0))

    loss = BBVILoss(model, guide, ELBO(), Pathwise())
    with pytest.warns(UserWarning, match="no plate encloses every observed site"):
        loss(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss(X)  # once only
        named = BBVILoss(model, guide, ELBO(), Pathwise(), examples=len(X))
        assert named(X).particles.num_examples == len(X) and named.examples.rule == "given as a number"
    pyro.set_rng_seed(0)
    a = loss(X).loss
    pyro.set_rng_seed(0)
    torch.testing.assert_close(named(X).loss * len(X), a)


def test_examples_can_name_a_plate() -> None:
    pair = PAIRS["nested_pixel_plate"]
    model, guide, args, _ = pair.make()
    loss = BBVILoss(model, guide, ELBO(), Pathwise(), examples="pixels")
    assert loss(*args).particles.num_examples == 3 and loss.examples.plate == "pixels"
    with pytest.raises(InputError, match="no plate named 'rows'"):
        BBVILoss(model, guide, ELBO(), Pathwise(), examples="rows")(*args)


# ---------------------------------------------------------------------------------- (10) particles
def test_a_model_that_cannot_broadcast_over_particles_falls_back_to_a_loop_with_a_warning() -> None:
    """(10) A PyroModule regression (F.linear on a sampled weight) cannot take a leftmost
    particle dim: K = 3 particles are drawn in a loop, with a warning naming the failure."""
    pair = PAIRS["pyro_module_bayesian_regression"]
    model, guide, args, _ = pair.make()
    loss = BBVILoss(model, guide, ELBO(num_particles=3), Auto(), max_plate_nesting=1)
    with pytest.warns(UserWarning, match="does not broadcast over a leftmost particle dimension"):
        result = loss(*args)
    assert result.particles.log_weights.shape == (3,) and not loss.vectorise


# ---------------------------------------------------------------------------------- (11) IWAE scale
def test_iwae_with_a_subsampled_plate_is_the_scaled_per_example_bound() -> None:
    """(11) The subsample scale N/B multiplies the per-example IWAE bound from outside: the same
    draws in plate(800, subsample=8 indices) and in plate(8) give the same per-example loss
    (the scale used to sit inside the log weights: 24.03 against 25.43)."""
    data = torch.randn(800)
    idx = torch.arange(8)

    def make(subsampled: bool):
        def plate():
            return pyro.plate("data", 800, subsample=idx) if subsampled else pyro.plate("data", 8)

        def model(x):
            with plate():
                z = pyro.sample("z", dist.Normal(0.0, 1.0))
                pyro.sample("x", dist.Normal(z, 1.0), obs=x[idx])

        def guide(x):
            loc = pyro.param("loc", torch.full((800,), 0.3))
            with plate():
                pyro.sample("z", dist.Normal(loc[idx], 1.5))
        return model, guide

    values = []
    for subsampled in (True, False):
        model, guide = make(subsampled)
        pyro.set_rng_seed(0)
        values.append(BBVILoss(model, guide, IWAE(num_particles=5), Pathwise())(data).loss)
    torch.testing.assert_close(values[0], values[1])


# ---------------------------------------------------------------------------------- (12) pixels
def test_a_pixel_plate_and_to_event_give_the_same_per_example_loss() -> None:
    """(12) The likelihood written with a nested pixel plate or with .to_event(1): the same loss
    per example (the pixel plate used to divide by the number of pixels as well)."""
    values = []
    for name in ("nested_pixel_plate", "to_event_pixels"):
        pyro.clear_param_store()
        pyro.set_rng_seed(1)  # the same initial parameters
        model, guide, args, _ = PAIRS[name].make()
        create_parameters(model, guide, args)
        pyro.set_rng_seed(0)
        values.append(BBVILoss(model, guide, ELBO(), Pathwise())(*args).loss)
    torch.testing.assert_close(values[0], values[1])


# ---------------------------------------------------------------------------------- Pyro's other ELBOs
def test_iwae_equals_renyi_elbo_alpha_zero_on_a_model_with_a_global_latent() -> None:
    """A global latent makes one joint log weight per particle, as Pyro's RenyiELBO has it."""
    pair = PAIRS["global_and_local"]
    model, guide, args, _ = pair.make()
    create_parameters(model, guide, args)
    pyro.set_rng_seed(0)
    result = BBVILoss(model, guide, IWAE(num_particles=4), Pathwise(), max_plate_nesting=1)(*args)
    params = all_params([])
    value, reference = pyro_loss_and_grads(RenyiELBO(alpha=0, num_particles=4, vectorize_particles=True, max_plate_nesting=1),
                                           model, guide, args, params)
    torch.testing.assert_close(result.loss.item() * pair.divisor, value, rtol=1e-5, atol=1e-5)
    for a, b in zip(gradients(result.surrogate, params), reference):
        torch.testing.assert_close(a * pair.divisor, b, rtol=1e-4, atol=1e-5)


def test_auto_and_trace_graph_elbo_agree_in_expectation_on_a_discrete_site() -> None:
    """TraceGraph_ELBO gives a Bernoulli site only its downstream cost; auto gives it the
    example's whole log weight. Both are unbiased: their mean gradients agree."""
    pair = PAIRS["local_bernoulli_and_normal"]
    model, guide, args, _ = pair.make()
    create_parameters(model, guide, args)
    p = pyro.param("p").unconstrained()
    mine, mine_error = mean_and_error(BBVILoss(model, guide, ELBO(num_particles=3000), Auto(),
                                               max_plate_nesting=1), args, p)
    graph = TraceGraph_ELBO(num_particles=3000, vectorize_particles=True, max_plate_nesting=1)
    draws = []
    for seed in range(12):
        _, (g,) = pyro_loss_and_grads(graph, model, guide, args, [p], seed=50 + seed)
        draws.append(g.double() / pair.divisor)
    d = torch.stack(draws)
    theirs, theirs_error = d.mean().item(), (d.std() / math.sqrt(12)).item()
    assert abs(mine - theirs) < 5 * math.hypot(mine_error, theirs_error) + 1e-4


def test_elbo_matches_trace_mean_field_elbo_in_expectation() -> None:
    """TraceMeanField_ELBO takes the KL in closed form; the Monte Carlo ELBO agrees with it in
    expectation (many particles, one pass; both estimates have a standard error near 0.015)."""
    pair = PAIRS["normal_normal_local"]
    model, guide, args, _ = pair.make()
    create_parameters(model, guide, args)
    value = BBVILoss(model, guide, ELBO(num_particles=50000), Pathwise())(*args).loss.item() * pair.divisor
    exact_kl = TraceMeanField_ELBO(num_particles=50000, vectorize_particles=True, max_plate_nesting=1)
    assert abs(value - exact_kl.loss(model, guide, *args)) < 0.08
