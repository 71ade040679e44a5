"""Model/guide pairs in the shapes of Pyro's own test models, examples and tutorials.

Each :class:`Pair` is a small, self-contained Pyro program: ``make()`` builds fresh ``model``,
``guide`` and batch ``args`` (parameters live in Pyro's param store or in the returned modules).
``divisor`` is the number of examples bbvi-kit must divide by (its data plate's full size).
Used by ``tests/unit/infer/test_pyro_programs.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions import constraints
from pyro.infer import config_enumerate
from pyro.infer.autoguide import (
    AutoDelta, AutoDiagonalNormal, AutoGuideList, AutoIAFNormal, AutoLowRankMultivariateNormal,
    AutoMultivariateNormal, AutoNormal,
)
from pyro.nn import PyroModule, PyroSample
from torch import nn

N = 6
torch.manual_seed(12345)
X = torch.randn(N)
X2 = torch.randn(N, 3)


@dataclass
class Pair:
    """A named model/guide pair; ``make() -> (model, guide, args, modules)``."""

    name: str
    make: Callable[[], tuple[Callable, Callable, tuple, list[nn.Module]]]
    divisor: float = N
    max_plate_nesting: int = 1
    vectorises: bool = True  # can take K particles in one pass
    tags: set[str] = field(default_factory=set)


PAIRS: dict[str, Pair] = {}


def pair(name: str, divisor: float = N, max_plate_nesting: int = 1, vectorises: bool = True,
         tags: tuple[str, ...] = ()) -> Callable:
    def register(make: Callable) -> Callable:
        PAIRS[name] = Pair(name, make, divisor, max_plate_nesting, vectorises, set(tags))
        return make
    return register


def _loc_scale(name: str, shape: tuple[int, ...] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    loc = pyro.param(f"{name}_loc", lambda: 0.1 * torch.randn(shape))
    scale = pyro.param(f"{name}_scale", lambda: 0.5 + 0.2 * torch.rand(shape), constraint=constraints.positive)
    return loc, scale


def _local_model(x, mu=0.0):
    """z_b ~ N(mu, 1), x_b ~ N(z_b, 1) in a data plate."""
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(mu, 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


def _local_guide(x):
    """q(z_b) = N(loc_b, scale_b) in a data plate."""
    loc, scale = _loc_scale("z", (len(x),))
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(loc, scale))


# ----------------------------------------------------------------------------- plates, scales, masks
@pair("normal_normal_local")
def _():
    def model(x):
        _local_model(x, pyro.param("mu", torch.tensor(0.2)))
    return model, _local_guide, (X,), []


@pair("global_and_local")
def _():
    def model(x):
        g = pyro.sample("g", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(g, 1.0))
            pyro.sample("x", dist.Normal(z, 0.5), obs=x)

    def guide(x):
        gl, gs = _loc_scale("g")
        pyro.sample("g", dist.Normal(gl, gs))
        loc, scale = _loc_scale("z", (len(x),))
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(loc, scale))
    return model, guide, (X,), []


@pair("nested_pixel_plate", max_plate_nesting=2)
def _():
    def model(x):
        w = pyro.param("w", torch.ones(3))
        with pyro.plate("data", x.shape[0], dim=-2):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            with pyro.plate("pixels", x.shape[1], dim=-1):
                pyro.sample("x", dist.Normal(z * w, 1.0), obs=x)

    def guide(x):
        loc, scale = _loc_scale("z", (x.shape[0], 1))
        with pyro.plate("data", x.shape[0], dim=-2):
            pyro.sample("z", dist.Normal(loc, scale))
    return model, guide, (X2,), []


@pair("to_event_pixels")
def _():
    def model(x):
        w = pyro.param("w", torch.ones(3))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z[..., None] * w, 1.0).to_event(1), obs=x)

    def guide(x):
        loc, scale = _loc_scale("z", (x.shape[0],))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, scale))
    return model, guide, (X2,), []


@pair("subsampled_plate", divisor=60)
def _():
    data = torch.randn(60)
    idx = torch.arange(0, 60, 10)

    def model(x):
        mu = pyro.param("mu", torch.tensor(0.1))
        with pyro.plate("data", 60, subsample=idx) as i:
            z = pyro.sample("z", dist.Normal(mu, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x[i])

    def guide(x):
        loc, scale = _loc_scale("z", (60,))
        with pyro.plate("data", 60, subsample=idx) as i:
            pyro.sample("z", dist.Normal(loc[i], scale[i]))
    return model, guide, (data,), []


@pair("sequential_plate", max_plate_nesting=0)
def _():
    def model(x):
        g = pyro.sample("g", dist.Normal(0.0, 1.0))
        for i in pyro.plate("data", len(x)):
            pyro.sample(f"x_{i}", dist.Normal(g, 1.0), obs=x[i])

    def guide(x):
        gl, gs = _loc_scale("g")
        pyro.sample("g", dist.Normal(gl, gs))
    return model, guide, (X,), []


@pair("masked_and_scaled")
def _():
    mask = torch.tensor([True, False, True, True, False, True])

    def model(x):
        mu = pyro.param("mu", torch.tensor(0.0))
        with pyro.plate("data", len(x)):
            with poutine.scale(scale=0.5):
                z = pyro.sample("z", dist.Normal(mu, 1.0))
            with poutine.mask(mask=mask):
                pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        loc, scale = _loc_scale("z", (len(x),))
        with pyro.plate("data", len(x)), poutine.scale(scale=0.5):
            pyro.sample("z", dist.Normal(loc, scale))
    return model, guide, (X,), []


@pair("constrained_lognormal_gamma")
def _():
    def model(x):
        rate = pyro.sample("rate", dist.Gamma(2.0, 2.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Exponential(rate), obs=x.abs() + 0.1)

    def guide(x):
        a = pyro.param("a", torch.tensor(3.0), constraint=constraints.positive)
        b = pyro.param("b", torch.tensor(2.0), constraint=constraints.positive)
        pyro.sample("rate", dist.Gamma(a, b))
    return model, guide, (X,), []


@pair("multivariate_to_event")
def _():
    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True), 1.0).expand(z.shape[:-1] + x.shape[-1:]).to_event(1), obs=x)

    def guide(x):
        loc = pyro.param("loc", torch.zeros(x.shape[0], 2))
        tril = pyro.param("tril", torch.eye(2).expand(x.shape[0], 2, 2).clone(), constraint=constraints.lower_cholesky)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(loc, scale_tril=tril))
    return model, guide, (X2,), []


@pair("auxiliary_guide_site")
def _():
    def guide(x):
        loc, scale = _loc_scale("z", (len(x),))
        with pyro.plate("data", len(x)):
            u = pyro.sample("u", dist.Normal(loc, 1.0), infer={"is_auxiliary": True})
            pyro.sample("z", dist.Normal(u, scale))
    return _local_model, guide, (X,), []


@pair("factor_outside_data_plate")
def _():
    def model(x):
        mu = pyro.param("mu", torch.tensor(0.3))
        pyro.factor("prior_on_mu", -0.5 * mu**2)
        _local_model(x, mu)
    return model, _local_guide, (X,), []


@pair("deterministic_outside_data_plate")
def _():
    def model(x):
        g = pyro.sample("g", dist.Normal(0.0, 1.0))
        pyro.deterministic("g2", 2 * g)
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(g, 1.0), obs=x)

    def guide(x):
        gl, gs = _loc_scale("g")
        pyro.sample("g", dist.Normal(gl, gs))
    return model, guide, (X,), []


# ----------------------------------------------------------------------------- autoguides
def _regression_model(x, y=None):
    w = pyro.sample("w", dist.Normal(torch.zeros(3), 1.0).to_event(1))
    b = pyro.sample("b", dist.Normal(0.0, 1.0))
    sigma = pyro.sample("sigma", dist.LogNormal(0.0, 0.5))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal((x * w).sum(-1) + b, sigma), obs=y)


def _autoguide_pair(cls, **kwargs):
    def make():
        guide = cls(_regression_model, **kwargs)
        return _regression_model, guide, (X2, X), [guide]
    return make


for _name, _cls, _kw in [("auto_normal", AutoNormal, {}), ("auto_diagonal_normal", AutoDiagonalNormal, {}),
                         ("auto_multivariate_normal", AutoMultivariateNormal, {}),
                         ("auto_low_rank", AutoLowRankMultivariateNormal, {"rank": 2}),
                         ("auto_delta", AutoDelta, {}),
                         ("auto_iaf_normal", AutoIAFNormal, {"hidden_dim": [8], "num_transforms": 1})]:
    PAIRS[_name] = Pair(_name, _autoguide_pair(_cls, **_kw), tags={"autoguide"} | ({"delta"} if _cls is AutoDelta else set())
                        | ({"flow"} if _cls is AutoIAFNormal else set()))


@pair("auto_guide_list_with_delta", tags=("autoguide", "delta"))
def _():
    guide = AutoGuideList(_regression_model)
    guide.append(AutoDelta(poutine.block(_regression_model, expose=["w", "b"])))
    guide.append(AutoNormal(poutine.block(_regression_model, expose=["sigma"])))
    return _regression_model, guide, (X2, X), [guide]


@pair("dist_delta_map", tags=("delta",))
def _():
    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 2.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    def guide(x):
        pyro.sample("mu", dist.Delta(pyro.param("mu_map", torch.tensor(0.5))))
    return model, guide, (X,), []


# ----------------------------------------------------------------------------- modules
class _PyroVAE(nn.Module):
    """The shape of Pyro's examples/vae/vae.py: model and guide are methods of one module, which
    register their networks with ``pyro.module`` (or, with ``register=False``, use the networks'
    parameters directly)."""

    def __init__(self, register: bool = True) -> None:
        super().__init__()
        self.register = register
        self.encoder = nn.Linear(3, 4)
        self.decoder = nn.Linear(2, 3)

    def model(self, x):
        if self.register:
            pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder(z), 1.0).to_event(1), obs=x)

    def guide(self, x):
        if self.register:
            pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            h = self.encoder(x)
            pyro.sample("z", dist.Normal(h[..., :2], h[..., 2:].exp()).to_event(1))


@pair("pyro_module_vae", tags=("module",))
def _():
    vae = _PyroVAE()
    return vae.model, vae.guide, (X2,), [vae]


@pair("module_methods_without_pyro_module", tags=("module",))
def _():
    vae = _PyroVAE(register=False)
    return vae.model, vae.guide, (X2,), [vae]


class _BayesianRegression(PyroModule):
    """Pyro's Bayesian regression tutorial: a PyroModule[nn.Linear] with PyroSample weights."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = PyroModule[nn.Linear](3, 1)
        self.linear.weight = PyroSample(dist.Normal(0.0, 1.0).expand([1, 3]).to_event(2))
        self.linear.bias = PyroSample(dist.Normal(0.0, 10.0).expand([1]).to_event(1))

    def forward(self, x, y=None):
        sigma = pyro.sample("sigma", dist.Uniform(0.0, 10.0))
        mean = self.linear(x).squeeze(-1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("obs", dist.Normal(mean, sigma), obs=y)


@pair("pyro_module_bayesian_regression", vectorises=False, tags=("autoguide", "module"))
def _():
    model = _BayesianRegression()
    guide = AutoDiagonalNormal(model)
    return model, guide, (X2, X), [guide]


# ----------------------------------------------------------------------------- tutorials
@pair("coin_fairness", divisor=10)
def _():
    flips = torch.tensor([1.0] * 6 + [0.0] * 4)

    def model(data):
        f = pyro.sample("fairness", dist.Beta(10.0, 10.0))
        with pyro.plate("flips", len(data)):
            pyro.sample("obs", dist.Bernoulli(f), obs=data)

    def guide(data):
        a = pyro.param("alpha_q", torch.tensor(15.0), constraint=constraints.positive)
        b = pyro.param("beta_q", torch.tensor(15.0), constraint=constraints.positive)
        pyro.sample("fairness", dist.Beta(a, b))
    return model, guide, (flips,), []


@pair("eight_schools_noncentered", divisor=8, tags=("autoguide",))
def _():
    y = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
    sigma = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])

    def model(y, sigma):
        mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
        tau = pyro.sample("tau", dist.HalfCauchy(5.0))
        with pyro.plate("schools", len(y)):
            theta = pyro.sample("theta_tilde", dist.Normal(0.0, 1.0))
            pyro.sample("obs", dist.Normal(mu + tau * theta, sigma), obs=y)

    guide = AutoNormal(model)
    return model, guide, (y, sigma), [guide]


def _mixture_model(x):
    weights = torch.tensor([0.3, 0.7])
    locs = pyro.param("locs", torch.tensor([-1.0, 1.0]))
    with pyro.plate("data", len(x)):
        c = pyro.sample("c", dist.Categorical(weights))
        pyro.sample("x", dist.Normal(locs[c], 1.0), obs=x)


@pair("gaussian_mixture_guide_categorical", tags=("discrete",))
def _():
    def guide(x):
        logits = pyro.param("assign_logits", torch.zeros(len(x), 2))
        with pyro.plate("data", len(x)):
            pyro.sample("c", dist.Categorical(logits=logits))
    return _mixture_model, guide, (X,), []


@pair("local_bernoulli_and_normal", tags=("discrete",))
def _():
    def model(x):
        with pyro.plate("data", len(x)):
            b = pyro.sample("b", dist.Bernoulli(0.4))
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z + b, 1.0), obs=x)

    def guide(x):
        p = pyro.param("p", torch.full((len(x),), 0.5), constraint=constraints.unit_interval)
        loc, scale = _loc_scale("z", (len(x),))
        with pyro.plate("data", len(x)):
            pyro.sample("b", dist.Bernoulli(p))
            pyro.sample("z", dist.Normal(loc, scale))
    return model, guide, (X,), []


@pair("gaussian_mixture_enumerated_model", tags=("refused",))
def _():
    model = config_enumerate(_mixture_model)

    def guide(x):
        pyro.param("unused", torch.tensor(0.0))
    return model, guide, (X,), []


@pair("model_only_latent", tags=("model_only",))
def _():
    def model(x):
        theta = pyro.param("theta", torch.tensor(0.0))
        with pyro.plate("data", len(x)):
            zp = pyro.sample("z_prior_only", dist.Normal(theta, 1.0))
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z + zp, 1.0), obs=x)

    def guide(x):
        loc, scale = _loc_scale("z", (len(x),))
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(loc, scale))
    return model, guide, (X,), []


# ----------------------------------------------------------------------------- invalid pairs
@pair("shape_mismatch", tags=("refused",))
def _():
    """The guide draws one z where the model has one per example: the model's density would be
    evaluated on a broadcast value."""
    def guide(x):
        loc = pyro.param("loc", torch.zeros(1))
        pyro.sample("z", dist.Normal(loc, 1.0))
    return _local_model, guide, (X,), []


@pair("event_dim_mismatch", tags=("refused",))
def _():
    def model(x):
        z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True), 1.0), obs=x)

    def guide(x):
        loc = pyro.param("loc", torch.zeros(2))
        pyro.sample("z", dist.Normal(loc, 1.0))
    return model, guide, (X,), []


# -- helpers of the tests that compare with Pyro --------------------------------------------------
def all_params(modules) -> list[torch.Tensor]:
    """Every trainable tensor: the param store's (unconstrained) and the modules' own."""
    found = [p for _, p in pyro.get_param_store().named_parameters()]
    found += [p for m in modules for p in m.parameters() if p.requires_grad]
    return list({id(p): p for p in found}.values())


def create_parameters(model, guide, args) -> None:
    """One blocked trace of guide and model: every ``pyro.param`` exists before the seeded runs
    (creating one draws its initial value from the random stream)."""
    with poutine.block():
        guide_trace = poutine.trace(guide).get_trace(*args)
        poutine.replay(model, trace=guide_trace)(*args)


def gradients(value: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    grads = torch.autograd.grad(value, params, allow_unused=True, retain_graph=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
