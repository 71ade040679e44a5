"""The gradient_noise and snr diagnostics against closed forms and the scalings theory predicts.

Closed-form model (per-example latents): z_i ~ N(mu, 1), x_i | z_i ~ N(z_i, 1), encoder
q(z_i | x_i) = N(m + c x_i, s^2) with s fixed; theta = (mu,), phi = (m, c). With
z = m + c x + s eps, one particle's log weight is -(x - z)^2/2 - (z - mu)^2/2 + eps^2/2 + const,
so its gradient (pathwise, as Pyro differentiates it) is a(x) + b(x) eps per coordinate:

    d/d mu :  a = m + c x - mu,                    b = s
    d/d m  :  a = (1 - 2c) x + mu - 2m,             b = -2s
    d/d c  :  a = x ((1 - 2c) x + mu - 2m),         b = -2 s x

The training step's gradient averages B examples and K particles each (ELBO), so with examples
drawn with replacement from the N training values, per coordinate,

    E g = mean_x a,   batch part = var_x(a) / B,   latent part = mean_x(b^2) / (B K),

var_x the population variance over the training set (times (N - B) / (N - 1) for B distinct
examples). The sign of g (loss = -ELBO) changes none of these.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from bbvi_kit import ELBO, IWAE, SGD, DataInfo, Estimator, Pathwise, ScoreFunction, Trainer, TrainingOptions
from bbvi_kit.diagnostics.base import Diagnostic, DiagnosticContext
from bbvi_kit.diagnostics.noise import GradientNoise, GradientSNR
from bbvi_kit.errors import InputError
from bbvi_kit.objectives.base import Objective
from bbvi_kit.registry import diagnostics as diagnostic_registry
from bbvi_kit_plugins.gaussian_vae import GaussianVAE

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NOISE_COLUMNS = ["grad_var_total", "grad_var_batch", "grad_var_latent", "grad_mean_norm_sq"]


class Conjugate(nn.Module):
    """The closed-form model of the module docstring; counts its guide's calls in a buffer."""

    def __init__(self, mu: float, m: float, c: float, s: float) -> None:
        super().__init__()
        self.mu = nn.Parameter(torch.tensor(mu))
        self.m = nn.Parameter(torch.tensor(m))
        self.c = nn.Parameter(torch.tensor(c))
        self.s = s
        self.register_buffer("calls", torch.zeros(()))

    def model(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(self.mu.expand_as(x), 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        self.calls += 1  # a buffer a forward pass updates, like batch-norm statistics
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.Normal(self.m + self.c * x, self.s))

    def groups(self) -> dict[str, list[torch.Tensor]]:
        return {"phi": [self.m, self.c], "theta": [self.mu]}

    def coefficients(self, x: torch.Tensor) -> dict[str, tuple[list[torch.Tensor], list[torch.Tensor]]]:
        """Per group, the (a, b) of each coordinate at the training values ``x``."""
        mu, m, c, s = (float(v) for v in (self.mu.detach(), self.m.detach(), self.c.detach(), self.s))
        x = x.double()
        ones = torch.ones_like(x)
        slope = (1 - 2 * c) * x + mu - 2 * m
        return {"phi": ([slope, x * slope], [-2 * s * ones, -2 * s * x]),
                "theta": ([m + c * x - mu], [s * ones])}

    def exact_noise(self, x: torch.Tensor, batch_size: int, particles: int,
                    replacement: bool = True) -> dict[str, float]:
        """The four ``gradient_noise`` columns in closed form, per group and in total."""
        n = x.numel()
        correction = 1.0 if replacement else (n - batch_size) / (n - 1)
        out: dict[str, float] = {}
        for name, (a, b) in self.coefficients(x).items():
            batch = sum(float(ai.var(unbiased=False)) for ai in a) / batch_size * correction
            latent = sum(float((bi**2).mean()) for bi in b) / (batch_size * particles)
            out[f"grad_var_batch_{name}"] = batch
            out[f"grad_var_latent_{name}"] = latent
            out[f"grad_var_total_{name}"] = batch + latent
            out[f"grad_mean_norm_sq_{name}"] = sum(float(ai.mean()) ** 2 for ai in a)
        for key in NOISE_COLUMNS:
            out[key] = out[f"{key}_phi"] + out[f"{key}_theta"]
        return out

    def exact_snr(self, x: torch.Tensor, batch_size: int, particles: int, draws: int,
                  resample: bool = True) -> dict[str, float]:
        """``snr`` columns in closed form: for batches drawn afresh with replacement
        (``resample_batch``), or for latent noise only on the batch ``x`` (all of it).

        ``snr_<group>`` is the expectation of the plug-in mean over coordinates of |gbar_j| / sd_j
        from ``draws`` gradients: E|gbar_j| is a folded normal's mean (gbar_j ~ N(mu_j, v_j / M)),
        which exceeds |mu_j| noticeably for a coordinate with little signal (here d/dm: its mean
        over the training set is 0)."""
        out: dict[str, float] = {}
        for name, (a, b) in self.coefficients(x).items():
            means = [float(ai.mean()) for ai in a]
            variances = [float(ai.var(unbiased=False)) / batch_size * resample
                         + float((bi**2).mean()) / (batch_size * particles) for ai, bi in zip(a, b)]
            out[f"snr_{name}"] = float(np.mean([folded_normal_mean(mu, math.sqrt(v / draws)) / math.sqrt(v)
                                                for mu, v in zip(means, variances)]))
            out[f"snr_norm_{name}"] = sum(mu**2 for mu in means) / sum(variances)
        return out


def folded_normal_mean(mu: float, sd: float) -> float:
    """E|Y| for Y ~ N(mu, sd^2)."""
    return sd * math.sqrt(2 / math.pi) * math.exp(-mu**2 / (2 * sd**2)) + mu * math.erf(mu / (sd * math.sqrt(2)))


X_TRAIN = torch.linspace(-1.0, 3.0, 64)


def trainer_for(net: nn.Module, objective: Objective, batch_size: int = 8, estimator: Estimator | None = None,
                **training: Any) -> Trainer:
    return Trainer(net.model, net.guide, objective=objective, estimator=estimator or Pathwise(), optimizer=SGD(lr=0.01),
                   training=TrainingOptions(batch_size=batch_size, progress=False, device="cpu", **training),
                   parameter_groups=net.groups, modules=[net], max_plate_nesting=1)


def context_for(trainer: Trainer, x: torch.Tensor = X_TRAIN) -> DiagnosticContext:
    return DiagnosticContext(trainer.training_state, TensorDataset(x), None, step=0, epoch=0)


def replicated(diagnostic: Diagnostic, context: DiagnosticContext,
               reps: int) -> tuple[dict[str, float], dict[str, float]]:
    """Mean and standard error of each column over ``reps`` independent measurements."""
    rows = []
    for rep in range(reps):
        torch.manual_seed(rep)
        rows.append(diagnostic.measure(context))
    columns = {k: np.array([r[k] for r in rows], dtype=float) for k in rows[0]}
    return ({k: float(v.mean()) for k, v in columns.items()},
            {k: float(v.std(ddof=1) / math.sqrt(reps)) for k, v in columns.items()})


# -- gradient_noise ------------------------------------------------------------------------------
NET = dict(mu=0.0, m=0.2, c=0.3, s=0.4)  # batch and latent parts of similar size in both groups
NOISE_REPS = 40  # x the default R * S = 32 passes each: 1280 gradients per setting


@pytest.fixture(scope="module")
def noise_estimates() -> dict[tuple[int, int], tuple[dict[str, float], dict[str, float]]]:
    """Replicated gradient_noise measurements at B in {4, 16}, K in {1, 4} (default R, S)."""
    out = {}
    for batch_size in (4, 16):
        for particles in (1, 4):
            pyro.clear_param_store()
            net = Conjugate(**NET)
            context = context_for(trainer_for(net, ELBO(num_particles=particles), batch_size=batch_size))
            out[batch_size, particles] = replicated(GradientNoise(), context, NOISE_REPS)
    return out


@pytest.mark.parametrize("batch_size,particles", [(4, 1), (4, 4), (16, 1), (16, 4)])
def test_noise_parts_match_the_closed_form(noise_estimates, batch_size: int, particles: int) -> None:  # noqa: ANN001
    mean, se = noise_estimates[batch_size, particles]
    exact = Conjugate(**NET).exact_noise(X_TRAIN, batch_size, particles)
    assert mean["batch_size"] == batch_size and mean["num_particles"] == particles
    for key, value in exact.items():
        # 5 standard errors: 64 comparisons, and replicate sds of skewed estimates
        assert abs(mean[key] - value) < 5 * se[key], (key, mean[key], value, se[key])
        assert se[key] < 0.25 * value, key  # precise enough to tell the parts apart
    # the totals are the sums of the parts and of the groups
    assert mean["grad_var_total"] == pytest.approx(mean["grad_var_batch"] + mean["grad_var_latent"])
    assert mean["grad_var_latent"] == pytest.approx(mean["grad_var_latent_phi"] + mean["grad_var_latent_theta"])


def _log_ratio(noise_estimates, key: str, a: tuple[int, int],  # noqa: ANN001
               b: tuple[int, int]) -> tuple[float, float]:
    (ma, sa), (mb, sb) = noise_estimates[a], noise_estimates[b]
    return math.log(ma[key] / mb[key]), math.hypot(sa[key] / ma[key], sb[key] / mb[key])


def test_batch_part_scales_as_one_over_b_and_latent_part_as_one_over_b_k(noise_estimates) -> None:  # noqa: ANN001
    # 4x the batch: both parts fall 4x; 4x the particles: the latent part falls 4x, the batch part stays
    for key, a, b, expected in [
        ("grad_var_batch", (4, 1), (16, 1), 4.0),
        ("grad_var_batch", (4, 4), (16, 4), 4.0),
        ("grad_var_latent", (4, 1), (16, 1), 4.0),
        ("grad_var_latent", (4, 1), (4, 4), 4.0),
        ("grad_var_latent", (16, 1), (16, 4), 4.0),
        ("grad_var_batch", (4, 1), (4, 4), 1.0),
        ("grad_var_batch", (16, 1), (16, 4), 1.0),
    ]:
        log_ratio, se = _log_ratio(noise_estimates, key, a, b)
        assert abs(log_ratio - math.log(expected)) < 4 * se, (key, a, b, math.exp(log_ratio))
        assert se < 0.35


def test_batches_of_distinct_examples_carry_the_finite_population_factor() -> None:
    x = torch.linspace(-1.0, 3.0, 20)
    net = Conjugate(**NET)
    context = context_for(trainer_for(net, ELBO(num_particles=1)), x)
    mean, se = replicated(GradientNoise(batch_size=16, replacement=False), context, 40)
    exact = net.exact_noise(x, 16, 1, replacement=False)  # (N - B) / (N - 1) = 4 / 19
    iid = net.exact_noise(x, 16, 1, replacement=True)
    for key in ("grad_var_batch", "grad_var_latent", "grad_var_total"):
        assert abs(mean[key] - exact[key]) < 5 * se[key], (key, mean[key], exact[key])
    assert abs(mean["grad_var_batch"] - iid["grad_var_batch"]) > 6 * se["grad_var_batch"]  # iid is ruled out
    with pytest.raises(InputError, match="distinct examples from a training set of 20"):
        GradientNoise(batch_size=21, replacement=False).measure(context)


def test_measuring_leaves_gradients_buffers_parameters_and_baselines_alone() -> None:
    net = Conjugate(**NET)
    trainer = trainer_for(net, ELBO(num_particles=2), estimator=ScoreFunction(baseline="running_mean"))
    trainer.loss(X_TRAIN[:8])  # the running baseline now has a value
    baseline = trainer.loss.estimator.state_dict()["running_mean"].clone()
    for p in net.parameters():
        p.grad = torch.full_like(p, 7.0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    values = GradientNoise(num_batches=3, samples_per_batch=2).measure(context_for(trainer))
    values.update(GradientSNR(num_draws=3, resample_batch=True).measure(context_for(trainer)))
    assert all(math.isfinite(v) for v in values.values())
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k  # parameters and the buffer the guide bumps
    assert all(torch.equal(p.grad, torch.full_like(p, 7.0)) for p in net.parameters())
    assert torch.equal(trainer.loss.estimator.state_dict()["running_mean"], baseline)
    assert not trainer.groups  # found for the measurement, not stored on the trainer


# -- snr -----------------------------------------------------------------------------------------
class GlobalLatent(nn.Module):
    """z ~ N(theta, 1), x_i | z ~ N(z, 1), q(z) = N(loc, 1): with z = loc + eps, the gradient of
    the per-example loss -(1/(K B)) sum_k log w_k on a batch of B values is, per draw,

        d/d theta = -(loc - theta)/B - eps_bar / B,
        d/d loc   = -(sum x - (B+1) loc + theta)/B + (B+1) eps_bar / B,

    eps_bar the mean of K standard normals: mean plus sd times a normal, SNR known exactly."""

    def __init__(self, theta: float, loc: float) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.tensor(theta))
        self.loc = nn.Parameter(torch.tensor(loc))

    def model(self, x: torch.Tensor) -> None:
        z = pyro.sample("z", dist.Normal(self.theta, 1.0))
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        pyro.sample("z", dist.Normal(self.loc, 1.0))

    def groups(self) -> dict[str, list[torch.Tensor]]:
        return {"phi": [self.loc], "theta": [self.theta]}


@pytest.mark.parametrize("particles", [1, 4])
def test_snr_of_a_gaussian_gradient_matches_mean_over_sd(particles: int) -> None:
    theta, loc, x = 0.0, 0.5, torch.tensor([1.0, 2.0, 3.0, 4.0])
    b = x.numel()
    exact = {"theta": abs(loc - theta) * math.sqrt(particles),
             "phi": abs(float(x.sum()) - (b + 1) * loc + theta) * math.sqrt(particles) / (b + 1)}
    net = GlobalLatent(theta, loc)
    trainer = trainer_for(net, ELBO(num_particles=particles))
    draws = 400
    torch.manual_seed(0)
    # the whole (4-example) training set is the batch: sum x is known
    values = GradientSNR(num_draws=draws, batch_size=4, replacement=False).measure(context_for(trainer, x))
    for name, r in exact.items():
        # |mean| / sd from M normal draws: delta-method standard errors
        se = math.sqrt(1 / draws + r**2 / (2 * (draws - 1)))
        assert abs(values[f"snr_{name}"] - r) < 4 * se, (name, values[f"snr_{name}"], r)
        se_norm = math.sqrt(4 * r**2 / draws + 2 * r**4 / (draws - 1))
        assert abs(values[f"snr_norm_{name}"] - r**2) < 4 * se_norm, (name, values[f"snr_norm_{name}"], r**2)
    assert values["num_particles"] == particles and values["batch_size"] == 4


def test_snr_with_resampled_batches_matches_the_closed_form() -> None:
    net = Conjugate(**NET)
    trainer = trainer_for(net, ELBO(num_particles=2))
    mean, se = replicated(GradientSNR(num_draws=100, batch_size=4, resample_batch=True), context_for(trainer), 10)
    exact = net.exact_snr(X_TRAIN, 4, 2, draws=100)
    for key, value in exact.items():
        # ratios with an estimated sd: allow an O(1/M) bias on top of the replicates' spread
        assert abs(mean[key] - value) < 5 * se[key] + 0.03 * value, (key, mean[key], value, se[key])
    # a fixed batch (here all of a 16-example training set): the latent noise only
    x = torch.linspace(-1.0, 3.0, 16)
    fixed = GradientSNR(num_draws=100, batch_size=16, replacement=False)
    mean, se = replicated(fixed, context_for(trainer, x), 10)
    exact_fixed = net.exact_snr(x, 16, 2, draws=100, resample=False)
    for key, value in exact_fixed.items():
        assert abs(mean[key] - value) < 5 * se[key] + 0.03 * value, (key, mean[key], value, se[key])
        assert value > 1.5 * exact[key]  # the mini-batch noise is gone


def _log_log_slope(ks: list[int], values: list[float]) -> float:
    return float(np.polyfit(np.log(ks), np.log(values), 1)[0])


def test_iwae_snr_rises_for_theta_and_falls_for_phi_with_k() -> None:
    """Rainforth et al. (2018): for the pathwise IWAE gradient SNR(theta) ~ sqrt(K) and
    SNR(phi) ~ 1/sqrt(K). A good but inexact encoder (posterior N((mu + x)/2, 1/2)), theta away
    from its optimum; one fixed batch of 16, M = 1000 draws per K."""
    ks = [1, 4, 16, 64]
    net = Conjugate(mu=-2.0, m=-0.7, c=0.4, s=math.sqrt(0.5))
    values = []
    for k in ks:
        torch.manual_seed(0)  # the same batch for every K
        trainer = trainer_for(net, IWAE(num_particles=k))
        values.append(GradientSNR(num_draws=1000, batch_size=16).measure(context_for(trainer)))
    phi, theta = [v["snr_phi"] for v in values], [v["snr_theta"] for v in values]
    assert all(a > b for a, b in zip(phi, phi[1:])), phi
    assert all(a < b for a, b in zip(theta, theta[1:])), theta
    assert -0.8 < _log_log_slope(ks, phi) < -0.3, phi
    assert 0.3 < _log_log_slope(ks, theta) < 0.7, theta
    # the squared, norm-based ratio: slopes about -1 and +1
    assert -1.5 < _log_log_slope(ks, [v["snr_norm_phi"] for v in values]) < -0.6
    assert 0.6 < _log_log_slope(ks, [v["snr_norm_theta"] for v in values]) < 1.3


def test_elbo_snr_rises_as_sqrt_k_for_both_groups() -> None:
    """The contrast: K particles averaged (ELBO) leave the mean alone and divide the sd by sqrt K."""
    net = Conjugate(mu=-2.0, m=-0.7, c=0.4, s=math.sqrt(0.5))
    values = {}
    for k in (1, 16):
        torch.manual_seed(0)
        trainer = trainer_for(net, ELBO(num_particles=k))
        values[k] = GradientSNR(num_draws=400, batch_size=16).measure(context_for(trainer))
    for name in ("phi", "theta"):
        assert 4 / 1.3 < values[16][f"snr_{name}"] / values[1][f"snr_{name}"] < 4 * 1.3, name


# -- in a training run -------------------------------------------------------------------------
def test_a_run_records_both_diagnostics_without_changing_its_trajectory() -> None:
    info = DataInfo(name="toy", shape=(6,), num_train=40, num_test=12)
    g = torch.Generator().manual_seed(0)
    train, test = TensorDataset(torch.rand(40, 6, generator=g)), TensorDataset(torch.rand(12, 6, generator=g))

    def fit(diagnostics: dict[str, Diagnostic] | None) -> Any:
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        vae = GaussianVAE(info, latent_dim=2, hidden=[5])
        trainer = Trainer(vae.model, vae.guide, objective=IWAE(num_particles=3), estimator=Pathwise(),
                          optimizer=SGD(lr=0.01), parameter_groups=vae.parameter_groups, modules=[vae],
                          training=TrainingOptions(batch_size=8, epochs=2, seed=0, progress=False, device="cpu"),
                          diagnostics=diagnostics)
        return trainer.fit(train, test)

    history = fit({"gradient_noise": GradientNoise(every=4, num_batches=3, samples_per_batch=2),
                   "snr": GradientSNR(num_draws=4)})
    plain = fit(None)
    assert [r["loss"] for r in history.metrics] == [r["loss"] for r in plain.metrics]
    noise = history.diagnostics["gradient_noise"]
    assert [r["step"] for r in noise] == [4, 8, 10]
    assert list(noise[0]) == (["step", "epoch"] + NOISE_COLUMNS
                              + [f"{c}_{g}" for g in ("phi", "theta") for c in NOISE_COLUMNS]
                              + ["batch_size", "num_particles", "time"])
    assert noise[0]["batch_size"] == 8 and noise[0]["num_particles"] == 3
    assert all(r["grad_var_latent"] > 0 and r["grad_var_total"] > 0 for r in noise)
    snr = history.diagnostics["snr"]
    assert [r["step"] for r in snr] == [5, 10]  # every: null -> with each evaluation
    assert list(snr[0]) == ["step", "epoch", "snr_phi", "snr_norm_phi", "snr_theta", "snr_norm_theta",
                            "batch_size", "num_particles", "time"]
    assert all(r["snr_phi"] > 0 and r["snr_theta"] > 0 for r in snr)
    assert diagnostic_registry.get("gradient_noise") is GradientNoise
    assert diagnostic_registry.get("snr") is GradientSNR


def test_recipes_take_both_diagnostics_with_their_options(tmp_path) -> None:  # noqa: ANN001
    from bbvi_kit.recipe import load_recipe

    path = tmp_path / "r.yaml"
    path.write_text("model: {name: gaussian_vae}\ndiagnostics: [{name: gradient_noise, every: 100, num_batches: 4}, "
                    "{name: snr, num_draws: 32, resample_batch: true}]\n")
    assert load_recipe(path).as_dict()["diagnostics"] == [
        {"name": "gradient_noise", "every": 100, "schedule": "grid", "num_batches": 4, "samples_per_batch": 4, "batch_size": None,
         "replacement": True, "estimators": None},
        {"name": "snr", "every": None, "schedule": "grid", "num_draws": 32, "batch_size": None, "resample_batch": True,
         "replacement": True, "num_particles": None, "estimators": None},
    ]
    path.write_text("model: {name: gaussian_vae}\ndiagnostics: [{name: gradient_noise, samples_per_batch: 1}]\n")
    with pytest.raises(InputError, match=r"diagnostics.0.samples_per_batch"):
        load_recipe(path)
