"""Rao-Blackwellised score-function terms (``rao_blackwellise: true``) and per-site baselines.

References: Pyro's ``TraceGraph_ELBO`` at the same seed (exact agreement), and the exact ELBO
gradient of small discrete models, a finite sum (:mod:`tests.support.discrete`). Our loss and
gradient are per example (divided by the number of examples n); Pyro's are sums.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any, Callable

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import TraceGraph_ELBO

from bbvi_kit import BBVI, ELBO, IWAE, SGD, Auto, BBVILoss, BetaELBO, InputError, ScoreFunction
from bbvi_kit.estimators.baselines import BaselineNet
from bbvi_kit.objectives.renyi import Renyi
from bbvi_kit.pass_state import PassState
from tests.support import discrete
from tests.support.discrete import (
    B, X_CHAIN, X_PLATE, chain_guide, chain_model, flat, fresh, mixed_guide, mixed_model, param_grads, plate_guide,
    plate_model, zero_grads,
)

RB = dict(rao_blackwellise=True)


def ours_and_pyros(model: Callable, guide: Callable, x: torch.Tensor, estimator: Any, nesting: int, *,
                   num_particles: int = 1, seed: int = 3, examples: Any = None) -> tuple[Any, ...]:
    """(our loss x n, our gradients x n, Pyro's TraceGraph_ELBO loss, its gradients) at one seed."""
    fresh()
    pyro.set_rng_seed(seed)
    result = BBVILoss(model, guide, ELBO(num_particles=num_particles), estimator, max_plate_nesting=nesting,
                      examples=examples)(x)
    result.surrogate.backward()
    n = result.particles.num_examples
    ours = {k: g * n for k, g in param_grads().items()}
    zero_grads()
    pyro.set_rng_seed(seed)
    elbo = TraceGraph_ELBO(num_particles=num_particles, vectorize_particles=num_particles > 1,
                           max_plate_nesting=nesting)
    loss = elbo.loss_and_grads(model, guide, x)
    return result.loss.item() * n, ours, loss, param_grads()


CASES = {
    "independent_bernoullis_in_a_plate": (plate_model, plate_guide, X_PLATE, ScoreFunction, 1, None),
    "chain_of_bernoullis": (chain_model, chain_guide, X_CHAIN, ScoreFunction, 0, 1),
    "normal_and_bernoulli_auto": (mixed_model, mixed_guide, X_PLATE, Auto, 1, None),
}


@pytest.mark.parametrize("num_particles", [1, 4])
@pytest.mark.parametrize("case", list(CASES))
def test_gradient_equals_pyro_tracegraph_elbo_at_the_same_seed(case: str, num_particles: int) -> None:
    model, guide, x, estimator, nesting, examples = CASES[case]
    for seed in (3, 4):
        loss, ours, pyro_loss, theirs = ours_and_pyros(model, guide, x, estimator(**RB), nesting,
                                                       num_particles=num_particles, seed=seed, examples=examples)
        assert loss == pytest.approx(pyro_loss, rel=1e-5)
        assert ours.keys() == theirs.keys()
        for name in ours:
            torch.testing.assert_close(ours[name], theirs[name], rtol=1e-5, atol=1e-5)


def test_rao_blackwellisation_changes_the_gradient_where_a_site_has_upstream_terms() -> None:
    """The chain at the same seed: plain REINFORCE differs (z2 sees z0's and x0's terms there)."""
    _, rb, _, _ = ours_and_pyros(chain_model, chain_guide, X_CHAIN, ScoreFunction(**RB), 0, examples=1)
    _, plain, _, _ = ours_and_pyros(chain_model, chain_guide, X_CHAIN, ScoreFunction(), 0, examples=1)
    assert not torch.allclose(flat(rb), flat(plain))


def test_one_held_site_seeing_every_term_gives_todays_score_gradient_with_subsampling() -> None:
    """z_b in a subsampled data plate with its observation: its downstream cost is all of log w_b,
    so RB is the plain estimator, data plate scale N/B included."""
    def model(x: torch.Tensor, idx: torch.Tensor) -> None:
        with pyro.plate("data", 12, subsample=idx, dim=-1):
            z = pyro.sample("z", dist.Bernoulli(logits=pyro.param("prior_z", torch.tensor(-0.3))))
            pyro.sample("x", dist.Normal(3.0 * z - 1.5, 1.0), obs=x)

    def guide(x: torch.Tensor, idx: torch.Tensor) -> None:
        with pyro.plate("data", 12, subsample=idx, dim=-1):
            pyro.sample("z", dist.Bernoulli(logits=pyro.param("q_z", torch.linspace(-1, 1, 12))[idx]))

    idx = torch.tensor([0, 3, 5, 8, 9, 11])
    grads = []
    for estimator in (ScoreFunction(), ScoreFunction(**RB)):
        fresh()
        pyro.set_rng_seed(0)
        result = BBVILoss(model, guide, ELBO(num_particles=3), estimator, max_plate_nesting=1)(X_PLATE, idx)
        assert result.particles.data_scale == 2.0
        result.surrogate.backward()
        grads.append(flat(param_grads()))
    torch.testing.assert_close(grads[0], grads[1])


# -- expectation and variance over many draws --------------------------------------------------------
PASSES, PARTICLES = 30, 200
PLATE_PARAMS = ("prior_g", "prior_z", "q_g", "q_z")  # flat() order; a baseline net's are left out
Q_Z_COMPONENTS = slice(3, 3 + B)


def plate_exact_gradient() -> np.ndarray:
    """d ELBO / d params of the plate model, per example (the bound our loss is minus)."""
    fresh()
    plate_model(X_PLATE)
    plate_guide(X_PLATE)
    store = pyro.get_param_store()
    params = [store.get_param(n).unconstrained() for n in sorted(store.keys())]
    grads = torch.autograd.grad(discrete.plate_exact_elbo(X_PLATE) / B, params)
    return torch.cat([g.reshape(-1) for g in grads]).numpy()


def bound_gradients(estimator: Any, guide: Callable = plate_guide, passes: int = PASSES,
                    particles: int = PARTICLES, seed: int = 0) -> np.ndarray:
    """[passes, params]: the gradient of the bound (minus the surrogate's) on the plate model."""
    loss_fn = BBVILoss(plate_model, guide, ELBO(num_particles=particles), estimator, max_plate_nesting=1)
    pyro.set_rng_seed(seed)
    out = []
    for _ in range(passes):
        zero_grads()
        loss_fn(X_PLATE).surrogate.backward()
        out.append(-flat({k: g for k, g in param_grads().items() if k in PLATE_PARAMS}).numpy())
    return np.array(out)


def z_scores(grads: np.ndarray, exact: np.ndarray) -> np.ndarray:
    se = grads.std(0, ddof=1) / np.sqrt(len(grads))
    return (grads.mean(0) - exact) / np.maximum(se, 1e-12)


@pytest.fixture(scope="module")
def exact_and_plain_and_rb() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    exact = plate_exact_gradient()
    plain = bound_gradients(ScoreFunction())
    fresh()
    rb = bound_gradients(ScoreFunction(**RB))
    return exact, plain, rb


def test_rb_and_plain_reinforce_are_unbiased_and_rb_has_lower_variance(exact_and_plain_and_rb) -> None:
    """Both estimators' means lie within 4 standard errors of the exact gradient (the mean of
    TraceGraph_ELBO's, which equals RB's draw by draw). Variance per component of q_z (each z_b's
    logit): measured RB / plain ratios 0.01-0.12 (B = 6 examples; a z_b's plain signal carries
    the other five examples' terms); q_g about 0.97 (g's downstream cost is almost all of log w)."""
    exact, plain, rb = exact_and_plain_and_rb
    assert np.all(np.abs(z_scores(plain, exact)) < 4), z_scores(plain, exact)
    assert np.all(np.abs(z_scores(rb, exact)) < 4), z_scores(rb, exact)
    ratio = rb.var(0, ddof=1)[Q_Z_COMPONENTS] / plain.var(0, ddof=1)[Q_Z_COMPONENTS]
    assert np.all(ratio < 0.35), ratio


def test_leave_one_out_baseline_per_site_is_unbiased_and_lowers_variance(exact_and_plain_and_rb) -> None:
    """Measured variance ratios to RB without a baseline: q_g 0.12, q_z 0.03-0.28."""
    exact, _, rb = exact_and_plain_and_rb
    fresh()
    loo = bound_gradients(ScoreFunction(baseline="leave_one_out", **RB))
    assert np.all(np.abs(z_scores(loo, exact)) < 4), z_scores(loo, exact)
    ratio = loo.var(0, ddof=1)[2:] / rb.var(0, ddof=1)[2:]
    assert np.all(ratio < 0.6), ratio


def nn_baseline_guide(net: BaselineNet) -> Callable:
    def guide(x: torch.Tensor) -> None:
        pyro.module("baseline_net", net)
        plate_guide(x, {"baseline": {"nn_baseline": net, "nn_baseline_input": x.unsqueeze(-1)}})

    return guide


def test_nn_baseline_is_fitted_by_its_squared_error_and_keeps_the_gradient_unbiased(exact_and_plain_and_rb) -> None:
    exact, _, rb = exact_and_plain_and_rb
    torch.manual_seed(0)
    net = BaselineNet(1, hidden=16)
    guide = nn_baseline_guide(net)
    fresh()
    loss_fn = BBVILoss(plate_model, guide, ELBO(num_particles=40), ScoreFunction(**RB), max_plate_nesting=1)
    optimiser = torch.optim.Adam(net.parameters(), lr=0.05)
    pyro.set_rng_seed(1)
    for step in range(60):  # fit the baseline net alone; the model and guide stay where they are
        optimiser.zero_grad()
        loss_fn(X_PLATE).surrogate.backward()
        if step == 0:  # the squared error reaches the net's parameters
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
        optimiser.step()
    grads = bound_gradients(ScoreFunction(**RB), guide=guide)
    assert np.all(np.abs(z_scores(grads, exact)) < 4), z_scores(grads, exact)
    ratio = grads.var(0, ddof=1)[Q_Z_COMPONENTS] / rb.var(0, ddof=1)[Q_Z_COMPONENTS]
    assert np.all(ratio < 0.8), ratio  # measured 0.03-0.35 (g, shared by the examples, stays unexplained)


def test_baseline_value_adds_its_squared_error() -> None:
    value = torch.zeros(B, requires_grad=True)
    fresh()
    pyro.set_rng_seed(0)
    guide = lambda x: plate_guide(x, {"baseline": {"baseline_value": value}})  # noqa: E731
    result = BBVILoss(plate_model, guide, ELBO(num_particles=5), ScoreFunction(**RB), max_plate_nesting=1)(X_PLATE)
    result.surrogate.backward()
    cost = next(s.cost for s in result.particles.site_scores if s.name == "z")
    # d/db sum_k (c_k - b)^2 / K, per example: -2 mean_k (c_k - b) / n
    torch.testing.assert_close(value.grad, -2 * cost.mean(0) / B)


def test_pyro_decaying_average_baseline_equals_tracegraph_elbo_over_steps() -> None:
    infer = {"baseline": {"use_decaying_avg_baseline": True, "baseline_beta": 0.8}}
    guide = lambda x: plate_guide(x, infer)  # noqa: E731
    fresh()
    loss_fn = BBVILoss(plate_model, guide, ELBO(), ScoreFunction(**RB), max_plate_nesting=1)
    ours = []
    for seed in range(3):
        zero_grads()
        pyro.set_rng_seed(seed)
        loss_fn(X_PLATE).surrogate.backward()
        ours.append(flat(param_grads()) * B)
    fresh()
    elbo = TraceGraph_ELBO(max_plate_nesting=1)
    for seed in range(3):
        pyro.set_rng_seed(seed)
        elbo.loss_and_grads(plate_model, guide, X_PLATE)
        torch.testing.assert_close(ours[seed], flat(param_grads()), rtol=1e-5, atol=1e-5)
        zero_grads()


def test_unknown_site_baseline_option_is_refused_naming_the_site() -> None:
    guide = lambda x: plate_guide(x, {"baseline": {"use_decaying_average": True}})  # noqa: E731
    fresh()
    with pytest.raises(InputError, match="site 'z': unknown baseline option.*'use_decaying_average'"):
        BBVILoss(plate_model, guide, ELBO(), ScoreFunction(**RB), max_plate_nesting=1)(X_PLATE)


# -- state ------------------------------------------------------------------------------------------
def test_running_mean_per_site_round_trips_through_state_dict_and_pass_state() -> None:
    fresh()
    estimator = ScoreFunction(baseline="running_mean", **RB)
    loss_fn = BBVILoss(plate_model, plate_guide, ELBO(num_particles=3), estimator, max_plate_nesting=1)
    for seed in range(2):
        pyro.set_rng_seed(seed)
        loss_fn(X_PLATE)
    state = copy.deepcopy(estimator.state_dict())
    assert set(state["site_baselines"]["running_means"]) == {"g", "z"}

    restored = ScoreFunction(baseline="running_mean", **RB)
    restored.load_state_dict(copy.deepcopy(state))
    grads = []
    for est in (estimator, restored):
        zero_grads()
        pyro.set_rng_seed(9)
        BBVILoss(plate_model, plate_guide, ELBO(num_particles=3), est, max_plate_nesting=1)(X_PLATE).surrogate.backward()
        grads.append(flat(param_grads()))
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)

    trainer = type("Trainer", (), {"loss": loss_fn, "modules": []})()
    saved = PassState(trainer)
    pyro.set_rng_seed(10)
    loss_fn(X_PLATE)
    assert not torch.equal(estimator.state_dict()["site_baselines"]["running_means"]["z"],
                           saved.estimator_state["site_baselines"]["running_means"]["z"])
    saved.restore()
    for name, mean in saved.estimator_state["site_baselines"]["running_means"].items():
        assert torch.equal(estimator.state_dict()["site_baselines"]["running_means"][name], mean)


# -- refusals ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("objective,match", [
    (IWAE(num_particles=2), "rao_blackwellise needs .* objective IWAE"),
    (Renyi(num_particles=2, alpha=0.5), "rao_blackwellise needs .* objective Renyi"),
    (ELBO(kl="analytic"), "rao_blackwellise cannot be combined with objective kl: analytic"),
])
def test_objectives_it_cannot_serve_are_refused_in_one_line(objective: Any, match: str) -> None:
    for estimator in (ScoreFunction(**RB), Auto(**RB)):
        with pytest.raises(ValueError, match=match) as info:
            BBVILoss(plate_model, plate_guide, objective, estimator)
        assert "\n" not in str(info.value)


def test_without_held_sites_it_changes_nothing() -> None:
    def model(x: torch.Tensor) -> None:
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(pyro.param("mu", torch.tensor(0.1)), 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x: torch.Tensor) -> None:
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(pyro.param("m", torch.zeros(len(x))), 0.5))

    grads = []
    for estimator in (Auto(), Auto(**RB)):
        fresh()
        pyro.set_rng_seed(0)
        BBVILoss(model, guide, BetaELBO(num_particles=2, beta=2.0), estimator)(X_PLATE).surrogate.backward()
        grads.append(flat(param_grads()))
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)


# -- end to end -------------------------------------------------------------------------------------
def test_bbvi_trains_with_rao_blackwellised_scores_and_per_site_baselines() -> None:
    fresh()
    pyro.set_rng_seed(0)
    net = BaselineNet(1, hidden=8)
    bbvi = BBVI(plate_model, nn_baseline_guide(net), ELBO(num_particles=4),
                ScoreFunction(baseline="running_mean", **RB), SGD(lr=0.05), on_nonfinite="skip", device="cpu")
    first = bbvi.step(X_PLATE)
    before = {k: v.clone() for k, v in bbvi.state_dict()["parameters"].items()}
    results = [bbvi.step(X_PLATE) for _ in range(4)]
    after = bbvi.state_dict()["parameters"]
    assert all(np.isfinite(r.loss.item()) and not r.skipped for r in [first, *results])
    assert all(not torch.equal(before[k], after[k]) for k in before)  # guide, model and baseline net moved
    assert "g" in bbvi.state_dict()["estimator"]["site_baselines"]["running_means"]


def test_a_site_baseline_without_rao_blackwellisation_is_named_in_a_warning() -> None:
    def guide(x: torch.Tensor) -> None:
        p = pyro.param("p", torch.tensor(0.4), constraint=dist.constraints.unit_interval)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Bernoulli(p), infer={"baseline": {"use_decaying_avg_baseline": True}})

    def model(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    pyro.clear_param_store()
    x = torch.zeros(3)
    with pytest.warns(UserWarning, match=r"guide sites with infer=\{'baseline': \.\.\.\} \('z'\).*ignores them"):
        BBVILoss(model, guide, ELBO(), ScoreFunction(), max_plate_nesting=1)(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        BBVILoss(model, guide, ELBO(), ScoreFunction(**RB), max_plate_nesting=1)(x)
