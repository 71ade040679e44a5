"""The full_gradient and smoothness diagnostics against closed forms.

Full gradient. Model z_i ~ N(0, 1), x_i | z_i ~ N(z_i + t, sigma^2) (t: theta), guide
q(z_i | x_i) = N(a x_i, s^2) (a, log s: phi). With z = a x + s eps, r = x - t - z,
kappa = 1 + 1/sigma^2, u = (1 - a) x - t and h = u / sigma^2 - a x, one particle's ELBO gradient
for one example is

    d/da = (h - s kappa eps) x,   d/dlog s = (h - s kappa eps) s eps + 1,   d/dt = (u - s eps) / sigma^2,

so the exact full-data gradient is (mean h x, 1 - s^2 kappa, mean u / sigma^2), and one particle's
noise is s eps w + (eps^2 - 1) (0, -s^2 kappa, 0) with w = (-kappa x, h, -1/sigma^2): covariance
s^2 w w' + 2 s^4 kappa^2 e2 e2'. A pass over n examples with K particles each has covariance
Sigma = (1 / (n^2 K)) sum_i Cov_i. Everything below is float64.

Smoothness. Model z_i ~ N(mu0, 1), x_i | z_i ~ N(z_i, sigma^2), guide N(a x_i + m, s^2) with s
fixed: for fixed eps the loss is exactly quadratic in (m, a, mu0), with Hessian
mean_i [grad z grad z' / sigma^2 + grad(z - mu0) grad(z - mu0)'], grad z = (1, x_i, 0),
grad(z - mu0) = (1, x_i, -1), whatever eps is.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from bbvi_kit import ELBO, SGD, DataInfo, Diagnostic, Pathwise, ScoreFunction, Trainer, TrainingOptions
from bbvi_kit.diagnostics.base import DiagnosticContext, run_diagnostic
from bbvi_kit.diagnostics.full_gradient import (
    FullGradient,
    fixed_subset,
    gram_matrix,
    interval_multiplier,
    preserved_training_state,
    u_statistic,
)
from bbvi_kit.diagnostics.smoothness import Smoothness
from bbvi_kit.registry import diagnostics as diagnostic_registry
from bbvi_kit_plugins.gaussian_vae import GaussianVAE

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIGMA = 0.7
KAPPA = 1 + 1 / SIGMA**2
D = torch.float64


class ShiftedLinearGaussian(nn.Module):
    """The full-gradient model of the module docstring, parameters as float64 ``nn.Parameter``s."""

    def __init__(self, a: float, s: float, t: float) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a, dtype=D))
        self.log_s = nn.Parameter(torch.tensor(math.log(s), dtype=D))
        self.t = nn.Parameter(torch.tensor(t, dtype=D))

    def model(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0))
            pyro.sample("x", dist.Normal(z + self.t, SIGMA), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.Normal(self.a * x, self.log_s.exp()))

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"phi": [self.a, self.log_s], "theta": [self.t]}

    def exact(self, x: torch.Tensor, num_particles: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """The full-data gradient of the loss (-ELBO per example) in the order (a, log s, t), and
        the covariance of one pass's gradient estimate."""
        a, s, t = float(self.a.detach()), float(self.log_s.detach().exp()), float(self.t.detach())
        u = (1 - a) * x - t
        h = u / SIGMA**2 - a * x
        mean = torch.stack([(h * x).mean(), torch.tensor(1 - s**2 * KAPPA, dtype=D), (u / SIGMA**2).mean()])
        w = torch.stack([-KAPPA * x, h, torch.full_like(x, -1 / SIGMA**2)], dim=1)  # [n, 3]
        cov = s**2 * w.T @ w
        cov[1, 1] += x.numel() * 2 * s**4 * KAPPA**2
        return -mean, cov / (x.numel() ** 2 * num_particles)


def closed_form_trainer(module: nn.Module, batch_size: int, num_particles: int = 1) -> Trainer:
    """A Trainer on ``module`` with its groups set as the first training step would set them."""
    trainer = Trainer(module.model, module.guide, objective=ELBO(num_particles=num_particles), estimator=Pathwise(),
                      optimizer=SGD(lr=0.01), training=TrainingOptions(batch_size=batch_size, device="cpu",
                                                                        progress=False),
                      parameter_groups=module.parameter_groups, modules=[module], max_plate_nesting=1)
    trainer.groups = module.parameter_groups()
    trainer.parameters = [p for group in trainer.groups.values() for p in group]
    return trainer


def measure(diagnostic: Diagnostic, trainer: Trainer, data: TensorDataset, step: int, seed: int) -> dict[str, Any]:
    return run_diagnostic(diagnostic, DiagnosticContext(trainer.training_state, data, None, step=step, epoch=0), seed)


# sorted and uneven, so that the batches (16, 16, 8) differ: a wrong weighting would show
X = torch.linspace(-1.5, 2.5, 40, dtype=D) ** 3 / 4


# -- the U-statistic ------------------------------------------------------------------------------
def test_u_statistic_and_jackknife_against_brute_force() -> None:
    g = torch.randn(5, 7, dtype=D, generator=torch.Generator().manual_seed(3))
    gram = gram_matrix([[row[:3], row[3:]] for row in g])
    torch.testing.assert_close(gram, g @ g.T)
    u, se, biased = u_statistic(gram)

    def pairs_mean(rows: list[int]) -> torch.Tensor:
        return torch.stack([g[i] @ g[j] for i in rows for j in rows if i != j]).mean()

    torch.testing.assert_close(u, pairs_mean(list(range(5))))
    loo = torch.stack([pairs_mean([i for i in range(5) if i != k]) for k in range(5)])
    torch.testing.assert_close(se, ((4 / 5) * (loo - loo.mean()).square().sum()).sqrt())
    torch.testing.assert_close(biased, g.mean(0).square().sum())
    # ||mean g||^2 >= U always: their difference is (1/M^2) sum_{i<j} ||g_i - g_j||^2 / (M - 1)
    assert biased > u


# -- unbiasedness, bias of the naive estimate, honest standard error ------------------------------
@pytest.mark.parametrize("point", ["away", "stationary"])
def test_full_gradient_is_unbiased_with_an_honest_standard_error(point: str) -> None:
    if point == "away":
        module, x = ShiftedLinearGaussian(a=0.2, s=1.1, t=0.3), X
    else:  # the exact posterior and t = 0 with symmetric data: grad L = 0 exactly
        module = ShiftedLinearGaussian(a=1 / (1 + SIGMA**2), s=SIGMA / math.sqrt(1 + SIGMA**2), t=0.0)
        x = torch.cat([X, -X])
    mean, cov = module.exact(x)
    exact = float(mean @ mean)
    m, reps = 4, 120
    trainer = closed_form_trainer(module, batch_size=16)
    diagnostic = FullGradient(num_estimates=m, every=1)
    rows = [measure(diagnostic, trainer, TensorDataset(x), step=1, seed=r) for r in range(reps)]
    u = torch.tensor([r["full_grad_norm_sq"] for r in rows], dtype=D)
    se = torch.tensor([r["full_grad_norm_sq_se"] for r in rows], dtype=D)
    biased = torch.tensor([r["full_grad_norm_sq_biased"] for r in rows], dtype=D)
    assert rows[0]["num_examples"] == x.numel() and rows[0]["num_estimates"] == m

    # unbiased: the average of the estimates is within 4 of its standard errors of the exact value
    assert abs(float(u.mean()) - exact) < 4 * float(u.std()) / math.sqrt(reps)
    # its spread is the U-statistic's: Var U = 4 mu'Sigma mu / M + 2 tr(Sigma^2) / (M(M-1))
    a_term, b_term = float(mean @ cov @ mean), float((cov @ cov).trace())
    variance = 4 * a_term / m + 2 * b_term / (m * (m - 1))
    assert 0.6 < float(u.var()) / variance < 1.6
    # the naive ||mean g||^2 is too large by tr(Sigma)/M on average, detectably so
    bias = float(cov.trace()) / m
    gap = biased - u
    assert abs(float(gap.mean()) - bias) < 4 * float(gap.std()) / math.sqrt(reps)
    assert float(gap.mean()) > 6 * float(gap.std()) / math.sqrt(reps)
    # the jackknife errs on the safe side, as derived: E[SE^2] = 4a/M + 4b/(M(M-2)) >= Var U
    jackknife = 4 * a_term / m + 4 * b_term / (m * (m - 2))
    assert 0.65 < float(se.square().mean()) / jackknife < 1.5
    # coverage: the exact value lies within 3 standard errors in most repetitions
    assert float(((u - exact).abs() <= 3 * se).double().mean()) >= 0.85
    # the groups' U-statistics add up to the total and are unbiased for their parts
    phi = torch.tensor([r["full_grad_norm_sq_phi"] for r in rows], dtype=D)
    theta = torch.tensor([r["full_grad_norm_sq_theta"] for r in rows], dtype=D)
    torch.testing.assert_close(phi + theta, u)
    assert abs(float(phi.mean()) - float(mean[:2] @ mean[:2])) < 4 * float(phi.std()) / math.sqrt(reps)
    assert abs(float(theta.mean()) - float(mean[2] ** 2)) < 4 * float(theta.std()) / math.sqrt(reps)
    if point == "stationary":
        assert (u < 0).any() and (biased > 0).all()  # a negative U means zero within its error


@pytest.mark.parametrize(("m", "two_se_range"), [(4, (0.78, 0.92)), (8, (0.85, 0.96))])
def test_the_standard_error_has_the_level_the_docs_state(m: int, two_se_range: tuple[float, float]) -> None:
    """Away from a stationary point, U +- 2 SE covers the exact value in about 85% (M = 4) or 91%
    (M = 8) of measurements, and U +- t SE (Student's t, M - 1 degrees of freedom) in about 95%."""
    module = ShiftedLinearGaussian(a=0.2, s=1.1, t=0.3)
    mean, _ = module.exact(X)
    exact = float(mean @ mean)
    trainer = closed_form_trainer(module, batch_size=40)
    diagnostic = FullGradient(num_estimates=m, every=1)
    rows = [measure(diagnostic, trainer, TensorDataset(X), step=1, seed=1000 + r) for r in range(400)]
    u = torch.tensor([r["full_grad_norm_sq"] for r in rows], dtype=D)
    se = torch.tensor([r["full_grad_norm_sq_se"] for r in rows], dtype=D)
    two_se = float(((u - exact).abs() <= 2 * se).double().mean())
    with_t = float(((u - exact).abs() <= interval_multiplier(m) * se).double().mean())
    assert two_se_range[0] <= two_se <= two_se_range[1], two_se
    assert with_t >= 0.91, with_t


def test_batches_are_weighted_by_size_and_a_fixed_subset_is_used() -> None:
    # a small guide scale makes the noise negligible: every estimate is the exact gradient up to
    # ~1e-5 (not smaller: z - a x = s eps would lose its digits to rounding)
    module = ShiftedLinearGaussian(a=0.2, s=1e-5, t=0.3)
    trainer = closed_form_trainer(module, batch_size=16)
    row = measure(FullGradient(every=1), trainer, TensorDataset(X), step=1, seed=0)
    mean, _ = module.exact(X)
    assert row["full_grad_norm_sq"] == pytest.approx(float(mean @ mean), rel=1e-4)
    assert row["full_grad_norm_sq_theta"] == pytest.approx(float(mean[2] ** 2), rel=1e-4)
    # the mean of the three batches' gradients (sizes 16, 16, 8) is not the full-data gradient
    batch_means = torch.stack([module.exact(X[i:i + 16])[0] for i in (0, 16, 32)]).mean(0)
    assert float(batch_means @ batch_means) != pytest.approx(float(mean @ mean), rel=1e-3)

    subset = fixed_subset(TensorDataset(X), 10)
    assert len(subset) == 10 and torch.equal(subset[list(range(10))][0], fixed_subset(TensorDataset(X), 10)[:][0])
    rows = [measure(FullGradient(every=1, max_examples=10, batch_size=3), trainer, TensorDataset(X), step=1, seed=s)
            for s in (0, 1)]
    sub_mean, _ = module.exact(subset[:][0])
    first_mean, _ = module.exact(X[:10])
    for row in rows:
        assert row["num_examples"] == 10
        assert row["full_grad_norm_sq"] == pytest.approx(float(sub_mean @ sub_mean), rel=1e-4)
    assert float(first_mean @ first_mean) != pytest.approx(float(sub_mean @ sub_mean), rel=1e-3)


# -- smoothness: an exactly quadratic loss ------------------------------------------------------------
class QuadraticGaussian(nn.Module):
    """The smoothness model of the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.m = nn.Parameter(torch.tensor(0.1, dtype=D))
        self.a = nn.Parameter(torch.tensor(0.3, dtype=D))
        self.mu0 = nn.Parameter(torch.tensor(-0.2, dtype=D))

    def model(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(self.mu0.expand(x.shape), 1.0))
            pyro.sample("x", dist.Normal(z, SIGMA), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.Normal(self.a * x + self.m, 0.5))

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"phi": [self.m, self.a], "theta": [self.mu0]}

    @staticmethod
    def hessian(x: torch.Tensor) -> torch.Tensor:
        """Hessian of the loss in the order (m, a, mu0)."""
        one, zero = torch.ones_like(x), torch.zeros_like(x)
        grad_z = torch.stack([one, x, zero], 1)
        grad_prior = torch.stack([one, x, -one], 1)
        return (grad_z.T @ grad_z / SIGMA**2 + grad_prior.T @ grad_prior) / x.numel()


def test_smoothness_is_exact_on_a_quadratic_loss() -> None:
    x = X[::3]
    module = QuadraticGaussian()
    trainer = closed_form_trainer(module, batch_size=x.numel(), num_particles=3)  # one batch: all of x
    data = TensorDataset(x)
    hessian = QuadraticGaussian.hessian(x)
    top = float(torch.linalg.eigvalsh(hessian).max())
    eigenvectors = torch.linalg.eigh(hessian).eigenvectors
    diagnostic = Smoothness(every=1)
    params = trainer.parameters
    generator = torch.Generator().manual_seed(0)
    first = measure(diagnostic, trainer, data, step=1, seed=0)
    assert math.isnan(first["lipschitz"]) and math.isnan(first["param_step_norm"]) and first["steps_apart"] == 0
    directions = [torch.randn(3, dtype=D, generator=generator) * 0.3 for _ in range(4)] + [eigenvectors[:, -1] * 0.1]
    for k, d in enumerate(directions):
        with torch.no_grad():
            for p, step in zip(params, d):
                p.add_(step)
        target = [p.detach().clone() for p in params]
        row = measure(diagnostic, trainer, data, step=3 + 2 * k, seed=10 + k)
        assert all(torch.equal(p, q) for p, q in zip(params, target))  # parameters put back bit for bit
        change = hessian @ d
        assert row["lipschitz"] == pytest.approx(float(change.norm() / d.norm()), rel=1e-9)
        assert row["lipschitz_phi"] == pytest.approx(float(change[:2].norm() / d.norm()), rel=1e-9)
        assert row["lipschitz_theta"] == pytest.approx(float(change[2].abs() / d.norm()), rel=1e-9)
        assert row["param_step_norm"] == pytest.approx(float(d.norm()), rel=1e-12)
        assert row["param_step_norm_phi"] == pytest.approx(float(d[:2].norm()), rel=1e-12)
        assert row["steps_apart"] == 2
        assert row["lipschitz"] <= top * (1 + 1e-9)
    assert row["lipschitz"] == pytest.approx(top, rel=1e-9)  # the top eigenvector attains the bound
    # no movement: no slope
    assert math.isnan(measure(diagnostic, trainer, data, step=20, seed=0)["lipschitz"])


# -- in a training run ----------------------------------------------------------------------------
INFO = DataInfo(name="toy", shape=(6,), num_train=40, num_test=12)


def tiny_vae_trainer(estimator: Any = None, **training: Any) -> tuple[Trainer, TensorDataset, TensorDataset]:
    pyro.set_rng_seed(0)
    vae = GaussianVAE(INFO, latent_dim=2, hidden=[5])
    g = torch.Generator().manual_seed(0)
    train, test = TensorDataset(torch.rand(40, 6, generator=g)), TensorDataset(torch.rand(12, 6, generator=g))
    options = dict(batch_size=8, epochs=2, seed=0, progress=False, device="cpu")
    options.update(training)
    diagnostics = options.pop("diagnostics", None)
    trainer = Trainer(vae.model, vae.guide, objective=ELBO(num_particles=2), estimator=estimator or Pathwise(),
                      optimizer=SGD(lr=0.05), training=TrainingOptions(**options),
                      parameter_groups=vae.parameter_groups, modules=[vae], diagnostics=diagnostics)
    return trainer, train, test


class ParameterSnapshots(Diagnostic):
    """Keeps a copy of the parameters at every iteration."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.snapshots: dict[int, torch.Tensor] = {}

    def measure(self, context):  # noqa: ANN001, ANN201
        self.snapshots[context.step] = torch.cat([p.detach().flatten() for p in context.training.parameters])
        return {"kept": 1}


def test_a_vae_run_records_both_diagnostics_without_changing_the_trajectory() -> None:
    snapshots, smoothness = ParameterSnapshots(every=1), Smoothness(every=2)
    diagnostics = {"snapshots": snapshots, "full_gradient": FullGradient(every=4, num_estimates=3, batch_size=16),
                   "smoothness": smoothness}
    trainer, train, test = tiny_vae_trainer(diagnostics=diagnostics)
    history = trainer.fit(train, test)
    plain_trainer, _, _ = tiny_vae_trainer()
    plain = plain_trainer.fit(train, test)
    assert [r["loss"] for r in history.metrics] == [r["loss"] for r in plain.metrics]

    full = history.diagnostics["full_gradient"]
    assert [r["step"] for r in full] == [4, 8, 10]
    columns = ["full_grad_norm_sq", "full_grad_norm_sq_se", "full_grad_norm_sq_biased", "full_grad_norm_sq_phi",
               "full_grad_norm_sq_phi_se", "full_grad_norm_sq_theta", "full_grad_norm_sq_theta_se",
               "num_examples", "num_estimates"]
    assert list(full[0]) == ["step", "epoch", *columns, "time"]
    for row in full:
        assert row["num_examples"] == 40 and row["num_estimates"] == 3
        assert row["full_grad_norm_sq_biased"] >= row["full_grad_norm_sq"] and row["full_grad_norm_sq_se"] > 0
        assert row["full_grad_norm_sq_phi"] + row["full_grad_norm_sq_theta"] == pytest.approx(row["full_grad_norm_sq"])

    rows = history.diagnostics["smoothness"]
    assert [r["step"] for r in rows] == [2, 4, 6, 8, 10]
    assert list(rows[0]) == ["step", "epoch", "lipschitz", "lipschitz_phi", "lipschitz_theta", "param_step_norm",
                             "param_step_norm_phi", "param_step_norm_theta", "steps_apart", "time"]
    assert math.isnan(rows[0]["lipschitz"])
    for row in rows[1:]:
        n = row["step"]
        assert row["steps_apart"] == 2
        moved = snapshots.snapshots[n] - snapshots.snapshots[n - 2]
        assert row["param_step_norm"] == pytest.approx(float(moved.norm()), rel=1e-5)
        assert row["lipschitz"] > 0 and math.isfinite(row["lipschitz"])
        assert row["lipschitz_phi"] ** 2 + row["lipschitz_theta"] ** 2 == pytest.approx(row["lipschitz"] ** 2)
    # the same diagnostic object in a new run starts afresh
    again, _, _ = tiny_vae_trainer(diagnostics={"smoothness": smoothness}, iterations=4)
    assert math.isnan(again.fit(train).diagnostics["smoothness"][0]["lipschitz"])


def test_a_running_baseline_is_left_as_the_run_had_it() -> None:
    # every loss call advances the score-function estimator's running mean: the diagnostics must
    # not, or the training run would follow another trajectory
    def run(diagnostics: dict | None) -> list[float]:
        trainer, train, test = tiny_vae_trainer(ScoreFunction(baseline="running_mean"), diagnostics=diagnostics,
                                                iterations=6)
        return [r["loss"] for r in trainer.fit(train, test).metrics]

    measured = run({"full_gradient": FullGradient(every=2, num_estimates=3), "smoothness": Smoothness(every=1)})
    assert measured == run(None)


def test_module_buffers_are_restored() -> None:
    norm = nn.BatchNorm1d(3)
    state = {"running_mean": torch.tensor(1.5)}
    estimator = SimpleNamespace(state_dict=lambda: dict(state), load_state_dict=lambda s: state.update(s))
    trainer = SimpleNamespace(loss=SimpleNamespace(estimator=estimator), modules=[norm])
    before = norm.running_mean.clone()
    with preserved_training_state(trainer) as saved:
        norm(torch.randn(8, 3) + 5.0)
        state["running_mean"] = torch.tensor(9.0)
        assert not torch.equal(norm.running_mean, before)
    assert torch.equal(norm.running_mean, before) and float(state["running_mean"]) == 1.5
    assert float(saved["running_mean"]) == 1.5


def test_registered_with_their_options() -> None:
    assert diagnostic_registry.get("full_gradient") is FullGradient
    assert diagnostic_registry.get("smoothness") is Smoothness
    assert FullGradient().options.model_dump() == {"every": None, "schedule": "grid", "max_examples": None,
                                                   "batch_size": None, "num_estimates": 4}
    assert Smoothness().options.model_dump() == {"every": None, "schedule": "grid", "batch_size": None}
    with pytest.raises(ValueError, match="num_estimates"):
        FullGradient(num_estimates=2)
