"""Posterior collapse (active units, per-unit KL) against closed forms and simulations of known truth."""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.utils.data import TensorDataset

from bbvi_kit import ELBO, Adam, DataInfo, Pathwise, Trainer, TrainingOptions
from bbvi_kit.diagnostics.base import DiagnosticContext
from bbvi_kit.diagnostics.collapse import PosteriorCollapse, PosteriorCollapseWarning, latent_units
from bbvi_kit.errors import InputError
from bbvi_kit.registry import diagnostics as diagnostic_registry
from bbvi_kit.runs import RunDirectory
from bbvi_kit_plugins.gaussian_vae import GaussianVAE

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# =============================================================================================
# posterior collapse
# =============================================================================================
SCALES = torch.tensor([0.5, 1.0, 2.0, 0.1], dtype=torch.float64)


class PartlyCollapsed:
    """q(z|x) = N(mu(x), diag SCALES^2) with mu(x) = (x_0, 0.05 x_1, 0.3, -2): unit 0 active,
    unit 1 depends on x too weakly (A = 0.0025 Var x_1 < 0.01), units 2 and 3 collapsed (their
    mean ignores x). Prior N(prior_loc, prior_scale^2) per unit."""

    def __init__(self, prior_loc: float = 0.0, prior_scale: float = 1.0) -> None:
        self.prior_loc, self.prior_scale = prior_loc, prior_scale

    def means(self, x: torch.Tensor) -> torch.Tensor:
        const = torch.tensor([0.3, -2.0], dtype=x.dtype).expand(x.shape[0], 2)
        return torch.cat([x[:, :1], 0.05 * x[:, 1:2], const], dim=1)

    def model(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            loc = torch.full((x.shape[0], 4), self.prior_loc, dtype=x.dtype)
            z = pyro.sample("z", dist.Normal(loc, self.prior_scale).to_event(1))
            pyro.sample("x", dist.Normal(z[:, :2], 1.0).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(self.means(x), SCALES.to(x.dtype)).to_event(1))


def gaussian_kl(mu: torch.Tensor, sigma: torch.Tensor, m: float = 0.0, s: float = 1.0) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(m, s^2)), elementwise; the textbook formula."""
    if m == 0.0 and s == 1.0:
        return 0.5 * (mu**2 + sigma**2 - 1 - torch.log(sigma**2))
    return math.log(s) - torch.log(sigma) + (sigma**2 + (mu - m) ** 2) / (2 * s**2) - 0.5


def batched(x: torch.Tensor, size: int) -> list[tuple[torch.Tensor]]:
    return [(x[i : i + size],) for i in range(0, x.shape[0], size)]


X = torch.randn(50, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * torch.tensor([1.0, 1.5])


def test_active_units_and_per_unit_kl_against_closed_forms() -> None:
    q = PartlyCollapsed()
    with torch.no_grad():
        sites = latent_units(q.model, q.guide, batched(X, 7))  # 7 batches, the last of 1 example
    (z,) = sites.values()
    mu = q.means(X)
    torch.testing.assert_close(z.activity, mu.var(0))  # unbiased variance over the 50 examples
    assert z.activity[0] > 0.5 and 0.0005 < z.activity[1] < 0.01 and z.activity[2:].abs().max() < 1e-20
    torch.testing.assert_close(z.kl, gaussian_kl(mu, SCALES.expand(50, 4)).mean(0))
    assert z.site_kl == pytest.approx(float(z.kl.sum()))
    assert z.num_examples == 50 and z.units == ["z[0]", "z[1]", "z[2]", "z[3]"]

    diag = PosteriorCollapse(warn_below=0.2)
    row = diag.summarise(sites, 50)
    assert row["active_units"] == 1 and row["num_units"] == 4 and row["active_fraction"] == 0.25
    assert row["kl_total"] == pytest.approx(float(gaussian_kl(mu, SCALES.expand(50, 4)).sum(1).mean()))
    assert [row[f"au_z_{j}"] for j in range(4)] == pytest.approx(mu.var(0).tolist())
    # the threshold decides: unit 1 (A = 0.0025 Var x_1) becomes active below it
    lower = PosteriorCollapse(threshold=0.1 * float(z.activity[1]), warn_below=0)
    assert lower.summarise(sites, 50)["active_units"] == 2


def test_a_general_normal_prior_uses_the_general_closed_form() -> None:
    q = PartlyCollapsed(prior_loc=0.7, prior_scale=1.8)
    with torch.no_grad():
        (z,) = latent_units(q.model, q.guide, batched(X, 16)).values()
    torch.testing.assert_close(z.kl, gaussian_kl(q.means(X), SCALES.expand(50, 4), 0.7, 1.8).mean(0))


def test_the_collapse_warning_fires_below_warn_below_only() -> None:
    q = PartlyCollapsed()
    with torch.no_grad():
        sites = latent_units(q.model, q.guide, batched(X, 50))
    message = r"^posterior collapse: 1 of 4 latent units active \(A_u > 0.01\)$"
    with pytest.warns(PosteriorCollapseWarning, match=message):
        PosteriorCollapse().summarise(sites, 50)  # 0.25 < 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        row = PosteriorCollapse(warn_below=0.25, per_unit=False).summarise(sites, 50)
    assert sorted(row) == ["active_fraction", "active_units", "kl_total", "num_examples", "num_units"]


def test_registered_and_monte_carlo_kls_for_non_gaussian_posteriors() -> None:
    """Unit 0: Laplace q against N(0, 1) (torch's registered closed form); unit 1: Student-t q
    (no registered KL: Monte Carlo), checked by quadrature."""
    x = torch.linspace(-1.0, 1.0, 6, dtype=torch.float64)

    def model(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            a = pyro.sample("a", dist.Normal(torch.zeros_like(x), 1.0))
            b = pyro.sample("b", dist.Normal(torch.zeros_like(x), 1.0))
            pyro.sample("x", dist.Normal(a + b, 1.0), obs=x)

    def guide(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.sample("a", dist.Laplace(x, 0.6))
            pyro.sample("b", dist.StudentT(5.0, 0.5 * x, 0.8))

    torch.manual_seed(0)
    with torch.no_grad():
        sites = latent_units(model, guide, [(x,)], mc_samples=20_000)
    # KL(Laplace(m, b) || N(0, 1)) = -log(2b) - 1 + log sqrt(2 pi) + (2 b^2 + m^2) / 2
    laplace = -math.log(1.2) - 1 + 0.5 * math.log(2 * math.pi) + (2 * 0.36 + x**2) / 2
    torch.testing.assert_close(sites["a"].kl, laplace.mean().reshape(1))
    grid = torch.linspace(-30, 30, 200_001, dtype=torch.float64)
    per_x = []
    for m in (0.5 * x).tolist():
        q = dist.StudentT(5.0, m, 0.8).log_prob(grid)
        p = dist.Normal(0.0, 1.0).log_prob(grid)
        per_x.append(float(torch.trapezoid(q.exp() * (q - p), grid)))
    # the Monte Carlo mean over 6 x 20000 draws: standard error ~ 0.003
    assert float(sites["b"].kl) == pytest.approx(np.mean(per_x), abs=0.015)
    torch.testing.assert_close(sites["b"].activity, (0.5 * x).var().reshape(1))  # StudentT.mean = loc


def test_units_flatten_non_example_dims_and_global_latents_are_skipped() -> None:
    """z: [examples, 2, 3] in a plate (event dims (2, 3)); only z[i, 0, 1] = x_i varies, so unit
    j = 0 * 3 + 1 = 1 of the C-order flattening is the one active unit. g: a global latent."""
    x = torch.randn(20, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    pattern = torch.zeros(2, 3, dtype=torch.float64)
    pattern[0, 1] = 1.0

    def model(x: torch.Tensor) -> None:
        g = pyro.sample("g", dist.Normal(torch.tensor(0.0, dtype=x.dtype), 1.0))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], 2, 3, dtype=x.dtype), 1.0).to_event(2))
            pyro.sample("x", dist.Normal(z[:, 0, 1] + g, 1.0), obs=x)

    def guide(x: torch.Tensor) -> None:
        pyro.sample("g", dist.Normal(torch.tensor(0.5, dtype=x.dtype), 0.1))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x[:, None, None] * pattern, 0.5).to_event(2))

    with torch.no_grad():
        sites = latent_units(model, guide, batched(x, 6))
    assert list(sites) == ["z"] and sites["z"].units == [f"z[{j}]" for j in range(6)]
    activity = sites["z"].activity
    assert activity[1] == pytest.approx(float(x.var())) and activity[[0, 2, 3, 4, 5]].abs().max() < 1e-20
    expected = gaussian_kl(x[:, None, None] * pattern, torch.tensor(0.5, dtype=torch.float64)).mean(0).flatten()
    torch.testing.assert_close(sites["z"].kl, expected)


def test_a_multivariate_posterior_counts_in_kl_total_with_nan_per_unit() -> None:
    x = torch.linspace(-1.0, 1.0, 8, dtype=torch.float64)
    cov = torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=torch.float64)

    def model(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.MultivariateNormal(torch.zeros(x.shape[0], 2, dtype=x.dtype),
                                                         torch.eye(2, dtype=x.dtype)))
            pyro.sample("x", dist.Normal(z[:, 0], 1.0), obs=x)

    def guide(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(torch.stack([x, 0 * x], -1), cov))

    with torch.no_grad():
        (z,) = latent_units(model, guide, [(x,)]).values()
    assert torch.isnan(z.kl).all()
    mu2 = (x**2).mean()  # KL(N(mu, S) || N(0, I)) = (tr S + |mu|^2 - 2 - log det S) / 2
    assert z.site_kl == pytest.approx(float((cov.trace() + mu2 - 2 - torch.logdet(cov)) / 2))
    torch.testing.assert_close(z.activity, torch.stack([x.var(), torch.tensor(0.0, dtype=x.dtype)]))


def test_a_mean_without_closed_form_and_an_unregistered_kl_fall_back_to_monte_carlo() -> None:
    """q(z|x) = logit-normal, sigmoid(N(x, 0.3^2)), against a Uniform(0, 1) prior: neither its mean
    nor the KL has a closed form in torch; both against Gauss-Hermite quadrature."""
    x = torch.linspace(-1.0, 1.0, 9, dtype=torch.float64)

    def model(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Uniform(torch.zeros_like(x), torch.ones_like(x)))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.TransformedDistribution(dist.Normal(x, 0.3), [dist.transforms.SigmoidTransform()]))

    torch.manual_seed(0)
    with torch.no_grad():
        (z,) = latent_units(model, guide, [(x,)], mc_samples=40_000).values()
    nodes, weights = np.polynomial.hermite_e.hermegauss(60)
    weights = weights / weights.sum()
    y = x.numpy()[:, None] + 0.3 * nodes[None, :]  # y = logit z ~ N(x, 0.3^2)
    sig = 1 / (1 + np.exp(-y))
    means = (sig * weights).sum(1)
    # KL(q || U(0, 1)) = E log q(z) = -log(0.3 sqrt(2 pi e)) - E[log sigmoid(y) + log(1 - sigmoid(y))]
    kl = -np.log(0.3 * np.sqrt(2 * np.pi * np.e)) - ((np.log(sig) + np.log1p(-sig)) * weights).sum(1)
    assert float(z.activity) == pytest.approx(np.var(means, ddof=1), rel=0.01)
    assert float(z.kl) == pytest.approx(kl.mean(), abs=0.01)  # Monte Carlo standard error ~0.002


def test_a_categorical_latent_has_no_mean_and_is_left_out_of_the_fraction() -> None:
    x = torch.linspace(-1.0, 1.0, 10, dtype=torch.float64)

    def model(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Categorical(logits=torch.zeros(x.shape[0], 3, dtype=x.dtype)))
            z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0))
            pyro.sample("x", dist.Normal(z + c, 1.0), obs=x)

    def guide(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            logits = torch.stack([x, -x, 0 * x], -1)
            pyro.sample("c", dist.Categorical(logits=logits))
            pyro.sample("z", dist.Normal(x, 0.5))

    with torch.no_grad():
        sites = latent_units(model, guide, [(x,)])
    assert torch.isnan(sites["c"].activity).all()
    probs = torch.softmax(torch.stack([x, -x, 0 * x], -1), -1)
    torch.testing.assert_close(sites["c"].kl, (probs * torch.log(3 * probs)).sum(-1).mean().reshape(1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 1 of 1 defined units active: no collapse warning
        row = PosteriorCollapse().summarise(sites, 10)
    assert (row["active_units"], row["num_units"], row["active_fraction"]) == (1, 2, 1.0)
    assert math.isnan(row["au_c_0"]) and row["kl_total"] == pytest.approx(sites["c"].site_kl + sites["z"].site_kl)


def test_models_without_per_example_latents_or_observations_are_refused() -> None:
    def global_model(x: torch.Tensor) -> None:
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def global_guide(x: torch.Tensor) -> None:
        pyro.sample("z", dist.Normal(0.0, 1.0))

    with pytest.raises(InputError, match="latents are all global"):
        latent_units(global_model, global_guide, [(X[:, 0],)])

    def unobserved(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0))

    with pytest.raises(InputError, match="observed sites inside a plate"):
        latent_units(unobserved, unobserved, [(X[:, 0],)])


INFO = DataInfo(name="toy", shape=(6,), num_train=48, num_test=20)


def tiny_vae(device: str = "cpu", **diagnostics: PosteriorCollapse
             ) -> tuple[GaussianVAE, Trainer, TensorDataset, TensorDataset]:
    pyro.set_rng_seed(0)
    vae = GaussianVAE(INFO, latent_dim=3, hidden=[5])
    g = torch.Generator().manual_seed(0)
    train, test = TensorDataset(torch.rand(48, 6, generator=g)), TensorDataset(torch.rand(20, 6, generator=g))
    trainer = Trainer(vae.model, vae.guide, objective=ELBO(), estimator=Pathwise(), optimizer=Adam(lr=0.01),
                      training=TrainingOptions(batch_size=8, epochs=2, seed=0, progress=False, device=device),
                      parameter_groups=vae.parameter_groups, modules=[vae], diagnostics=diagnostics or None)
    return vae, trainer, train, test


def test_gaussian_vae_run_records_collapse_matching_its_own_encoder(tmp_path: Path) -> None:
    diag = PosteriorCollapse(every=5, warn_below=0.0)
    vae, trainer, train, test = tiny_vae(posterior_collapse=diag)
    run = RunDirectory.create(tmp_path, "collapse")
    history = trainer.fit(train, test, run=run)
    run.close()
    rows = history.diagnostics["posterior_collapse"]
    assert [r["step"] for r in rows] == [5, 10, 12]  # every 5 and the last of 2 x 6 iterations
    units = [f"z_{j}" for j in range(3)]
    columns = ["step", "epoch", "active_units", "num_units", "active_fraction", "kl_total", "num_examples",
               *(f"au_{u}" for u in units), *(f"kl_{u}" for u in units), "time"]
    assert list(rows[0]) == columns
    with open(run.path / "diagnostics" / "posterior_collapse.csv") as fh:
        assert next(csv.reader(fh)) == columns
    # the last row was measured after the final step: recompute from the model's own encoder
    vae.eval()
    with torch.no_grad():
        loc, scale = vae.encode(test.tensors[0])
    loc, scale = loc.double(), scale.double()
    last = rows[-1]
    assert [last[f"au_{u}"] for u in units] == pytest.approx(loc.var(0).tolist(), rel=1e-5)
    assert [last[f"kl_{u}"] for u in units] == pytest.approx(gaussian_kl(loc, scale).mean(0).tolist(), rel=1e-5)
    assert last["kl_total"] == pytest.approx(float(gaussian_kl(loc, scale).sum(1).mean()), rel=1e-5)
    assert last["active_units"] == int((loc.var(0) > 0.01).sum()) and last["num_units"] == 3
    assert last["num_examples"] == 20
    # the diagnostic never changes the trajectory
    _, plain, _, _ = tiny_vae()
    assert [r["loss"] for r in plain.fit(train, test).metrics] == [r["loss"] for r in history.metrics]


@pytest.mark.gpu
def test_collapse_on_cuda_matches_the_encoder() -> None:
    vae, trainer, train, test = tiny_vae("cuda", posterior_collapse=PosteriorCollapse(every=6, warn_below=0.0))
    last = trainer.fit(train, test).diagnostics["posterior_collapse"][-1]
    vae.eval()
    with torch.no_grad():
        loc, scale = vae.encode(test.tensors[0].cuda())
    assert [last[f"au_z_{j}"] for j in range(3)] == pytest.approx(loc.double().var(0).tolist(), rel=1e-4)
    assert last["kl_total"] == pytest.approx(float(gaussian_kl(loc.double(), scale.double()).sum(1).mean()), rel=1e-4)


def test_measure_on_the_training_split_with_max_examples_and_warn() -> None:
    _, trainer, train, test = tiny_vae()
    context = DiagnosticContext(trainer.training_state, train, test, step=12, epoch=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        row = PosteriorCollapse(split="train", max_examples=30, batch_size=7, threshold=1e9).measure(context)
    assert row["num_examples"] == 30 and row["active_units"] == 0
    assert [str(w.message) for w in caught if w.category is PosteriorCollapseWarning] == [
        "posterior collapse: 0 of 3 latent units active (A_u > 1e+09)"]
    with pytest.raises(InputError, match="needs a test set"):
        PosteriorCollapse().measure(DiagnosticContext(trainer.training_state, train, None, step=12, epoch=1))
    assert diagnostic_registry.get("posterior_collapse") is PosteriorCollapse
