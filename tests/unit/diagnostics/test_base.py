"""Diagnostic plugins: the engine hook (frequency, files, no effect on the trajectory, errors),
recipes, and each diagnostic against a closed form.

Closed-form model: z_i ~ N(0, 1), x_i | z_i ~ N(z_i, sigma^2), q(z_i | x_i) = N(a x_i, s^2), so
log p(x_i) = log N(x_i; 0, 1 + sigma^2) and the ELBO is a Gaussian expectation; the exact
posterior is a = 1 / (1 + sigma^2), s^2 = sigma^2 / (1 + sigma^2).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.utils.data import TensorDataset

from bbvi_kit import ELBO, SGD, DataInfo, Diagnostic, DiagnosticOptions, Pathwise, Trainer, TrainingOptions
from bbvi_kit.diagnostics import HeldOutIWAE
from bbvi_kit.errors import InputError, TrainingError
from bbvi_kit.recipe import load_recipe
from bbvi_kit.registry import diagnostics as diagnostic_registry
from bbvi_kit.runs import RunDirectory
from bbvi_kit_plugins.gaussian_vae import GaussianVAE
from tests.support import REPO

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIGMA = 0.7


class LinearGaussian:
    """The closed-form model above, with q's (a, s) as arguments."""

    def __init__(self, a: float, s: float) -> None:
        self.a, self.s = a, s

    def model(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0))
            pyro.sample("x", dist.Normal(z, SIGMA), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.Normal(self.a * x, self.s))

    def log_evidence(self, x: torch.Tensor) -> torch.Tensor:
        return dist.Normal(0.0, math.sqrt(1 + SIGMA**2)).log_prob(x.double())

    def elbo(self, x: torch.Tensor) -> torch.Tensor:
        x, a, s = x.double(), self.a, self.s
        m = a * x
        return (
            -0.5 * math.log(2 * math.pi * SIGMA**2) - ((x - m) ** 2 + s**2) / (2 * SIGMA**2)
            - 0.5 * math.log(2 * math.pi) - (m**2 + s**2) / 2
            + 0.5 * math.log(2 * math.pi * s**2) + 0.5
        )


EXACT = LinearGaussian(a=1 / (1 + SIGMA**2), s=math.sqrt(SIGMA**2 / (1 + SIGMA**2)))
X = torch.linspace(-2.0, 2.0, 64, dtype=torch.float64)


# -- held-out IWAE ------------------------------------------------------------------------------
def test_at_the_exact_posterior_every_estimate_is_log_p_x() -> None:
    elbo, iwae = HeldOutIWAE(num_samples=7, chunk_size=3).per_example(EXACT.model, EXACT.guide, (X,), 1)
    torch.testing.assert_close(elbo, EXACT.log_evidence(X))
    torch.testing.assert_close(iwae, EXACT.log_evidence(X))


def test_elbo_and_iwae_against_closed_forms_with_a_wrong_posterior() -> None:
    q = LinearGaussian(a=0.2, s=1.1)
    torch.manual_seed(0)
    elbo, iwae_k = HeldOutIWAE(num_samples=4000, chunk_size=500).per_example(q.model, q.guide, (X,), 1)
    # per example, the K-sample average of log w has standard deviation sd(log w)/sqrt(K) ~ 0.04;
    # over the 64 examples, the mean error has ~0.005
    assert (elbo - q.elbo(X)).abs().max() < 0.2 and (elbo - q.elbo(X)).mean().abs() < 0.02
    gap = EXACT.log_evidence(X) - q.elbo(X)
    assert gap.min() > 0.1  # the test means something: the ELBO is far below log p(x)
    # IWAE_4000 closes nearly all of the gap, and never exceeds log p(x) by more than noise
    assert ((EXACT.log_evidence(X) - iwae_k) / gap).abs().max() < 0.05
    torch.manual_seed(0)
    _, iwae_1 = HeldOutIWAE(num_samples=1).per_example(q.model, q.guide, (X,), 1)
    torch.manual_seed(0)
    _, iwae_10 = HeldOutIWAE(num_samples=10).per_example(q.model, q.guide, (X,), 1)
    assert iwae_1.mean() < iwae_10.mean() < iwae_k.mean()  # the bound tightens with K


def test_chunking_does_not_change_the_estimate_beyond_monte_carlo_noise() -> None:
    q = LinearGaussian(a=0.2, s=1.1)
    torch.manual_seed(1)
    _, one_pass = HeldOutIWAE(num_samples=2000, chunk_size=2000).per_example(q.model, q.guide, (X,), 1)
    torch.manual_seed(2)
    _, chunked = HeldOutIWAE(num_samples=2000, chunk_size=37).per_example(q.model, q.guide, (X,), 1)
    assert (one_pass - chunked).abs().max() < 0.2 and (one_pass - chunked).mean().abs() < 0.02


def test_standard_error_is_the_spread_over_examples(tmp_path: Path) -> None:
    trainer, train, test = tiny_vae_trainer()
    torch.manual_seed(0)
    values = HeldOutIWAE(num_samples=20, chunk_size=8).measure(context(trainer, train, test))
    torch.manual_seed(0)
    with torch.no_grad():
        elbo, iwae = HeldOutIWAE(num_samples=20, chunk_size=8).per_example(
            trainer.model, trainer.guide, (test.tensors[0],), 1)
    assert values["num_examples"] == len(test) == 12 and values["num_samples"] == 20
    assert values["test_neg_elbo"] == pytest.approx(-float(elbo.mean()))
    assert values["test_neg_iwae"] == pytest.approx(-float(iwae.mean()))
    assert values["test_neg_elbo_se"] == pytest.approx(float(elbo.std() / math.sqrt(12)))
    assert values["test_neg_iwae_se"] == pytest.approx(float(iwae.std() / math.sqrt(12)))
    assert values["test_neg_iwae"] < values["test_neg_elbo"]  # log-mean-exp >= mean, per example


def test_max_examples_and_batches() -> None:
    trainer, train, test = tiny_vae_trainer()
    some = HeldOutIWAE(num_samples=5, max_examples=7, batch_size=3).measure(context(trainer, train, test))
    assert some["num_examples"] == 7


def test_a_model_without_per_example_latents_is_refused() -> None:
    def model(x: torch.Tensor) -> None:
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x: torch.Tensor) -> None:
        pyro.sample("z", dist.Normal(0.0, 1.0))

    with pytest.raises(InputError, match="latents are all global"):
        HeldOutIWAE(num_samples=3).per_example(model, guide, (X,), 1)


# -- the engine hook ----------------------------------------------------------------------------
INFO = DataInfo(name="toy", shape=(6,), num_train=40, num_test=12)


def tiny_vae_trainer(**training: Any) -> tuple[Trainer, TensorDataset, TensorDataset]:
    pyro.set_rng_seed(0)
    vae = GaussianVAE(INFO, latent_dim=2, hidden=[5])
    g = torch.Generator().manual_seed(0)
    train, test = TensorDataset(torch.rand(40, 6, generator=g)), TensorDataset(torch.rand(12, 6, generator=g))
    options = dict(batch_size=8, epochs=2, seed=0, progress=False, device="cpu")
    options.update(training)
    diagnostics = options.pop("diagnostics", None)
    trainer = Trainer(vae.model, vae.guide, objective=ELBO(), estimator=Pathwise(), optimizer=SGD(lr=0.01),
                      training=TrainingOptions(**options), parameter_groups=vae.parameter_groups, modules=[vae],
                      diagnostics=diagnostics)
    return trainer, train, test


def context(trainer: Trainer, train: TensorDataset, test: TensorDataset):  # noqa: ANN201
    from bbvi_kit.diagnostics import DiagnosticContext

    trainer.loss.max_plate_nesting = 1
    return DiagnosticContext(trainer.training_state, train, test, step=0, epoch=0)


class Recorder(Diagnostic):
    """Records when it runs, what mode the modules are in, and leaves gradients behind."""

    calls: list[int]

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.calls = []

    def measure(self, context):  # noqa: ANN001, ANN201
        self.calls.append(context.step)
        loss = context.training.loss(*next(context.batches(context.train, 8))).surrogate
        loss.backward()  # gradients left behind must not reach the next step
        return {"value": float(torch.rand(())), "step_seen": context.step}


def test_diagnostics_run_when_due_and_never_change_the_trajectory(tmp_path: Path) -> None:
    every_3, at_eval = Recorder(every=3), Recorder()
    trainer, train, test = tiny_vae_trainer(diagnostics={"every_3": every_3, "at_eval": at_eval})
    run = RunDirectory.create(tmp_path, "diag")
    history = trainer.fit(train, test, run=run)
    run.close()
    plain_trainer, _, _ = tiny_vae_trainer()
    plain = plain_trainer.fit(train, test)
    assert [r["loss"] for r in history.metrics] == [r["loss"] for r in plain.metrics]
    assert every_3.calls == [3, 6, 9, 10]  # every 3 iterations and at the last
    assert at_eval.calls == [5, 10]  # with each evaluation (epoch ends)
    rows = list(csv.DictReader(open(run.path / "diagnostics" / "every_3.csv")))
    assert [r["step"] for r in rows] == ["3", "6", "9", "10"]
    assert list(rows[0]) == ["step", "epoch", "value", "step_seen", "time"]
    assert [r["step"] for r in history.diagnostics["at_eval"]] == [5, 10]
    # forked, seeded streams: the same run measures the same values
    again, _, _ = tiny_vae_trainer(diagnostics={"every_3": Recorder(every=3), "at_eval": Recorder()})
    repeated = again.fit(train, test).diagnostics["every_3"]
    strip = lambda rows: [{k: v for k, v in r.items() if k != "time"} for r in rows]  # noqa: E731
    assert strip(repeated) == strip(history.diagnostics["every_3"])
    assert len({r["value"] for r in repeated}) == len(repeated)  # each measurement its own stream


def test_a_failing_diagnostic_stops_the_run_naming_it_and_the_step() -> None:
    class Broken(Diagnostic):
        def measure(self, context):  # noqa: ANN001, ANN201
            raise ValueError("bad\nsecond line")

    trainer, train, test = tiny_vae_trainer(diagnostics={"broken": Broken(every=4)})
    with pytest.raises(TrainingError, match=r"^step 4 \(epoch 0\): diagnostic broken failed: ValueError: bad$"):
        trainer.fit(train, test)


def test_recipes_list_diagnostics_with_their_options(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("model: {name: gaussian_vae}\ndiagnostics: [{name: heldout_iwae, num_samples: 50}, "
                    "{name: heldout_iwae, every: 10}]\n")
    recipe = load_recipe(path)
    assert recipe.as_dict()["diagnostics"] == [
        {"name": "heldout_iwae", "every": None, "schedule": "grid", "num_samples": 50, "chunk_size": 100, "batch_size": None,
         "max_examples": None},
        {"name": "heldout_iwae", "every": 10, "schedule": "grid", "num_samples": 100, "chunk_size": 100, "batch_size": None,
         "max_examples": None},
    ]
    assert list(recipe.diagnostic_plugins()) == ["heldout_iwae", "heldout_iwae_2"]
    path.write_text("model: {name: gaussian_vae}\ndiagnostics: [{name: heldout_iwea}]\n")
    with pytest.raises(InputError, match=r"diagnostics.0.name: unknown diagnostic plugin 'heldout_iwea'.*heldout_iwae"):
        load_recipe(path)
    path.write_text("model: {name: gaussian_vae}\ndiagnostics: [{name: heldout_iwae, samples: 5}]\n")
    with pytest.raises(InputError, match=r"diagnostics.0.samples"):
        load_recipe(path)


def test_a_recipe_run_writes_the_heldout_diagnostic(tmp_path: Path, cli_run) -> None:  # noqa: ANN001
    code, out, err = cli_run(["run", REPO / "recipes" / "quickstart.yaml", "training.iterations=6",
                              "training.progress=false", "training.eval_every=3", "model.hidden=[8]",
                              "diagnostics=[{name: heldout_iwae, num_samples: 20, max_examples: 50}]",
                              "--out", tmp_path])
    assert code == 0, err
    run_dir = Path(out.split("run directory: ")[1].strip())
    rows = list(csv.DictReader(open(run_dir / "diagnostics" / "heldout_iwae.csv")))
    assert [r["step"] for r in rows] == ["3", "6"]
    for row in rows:
        assert float(row["test_neg_iwae"]) < float(row["test_neg_elbo"])
        assert float(row["test_neg_iwae_se"]) > 0 and row["num_examples"] == "50"
    assert issubclass(diagnostic_registry.get("heldout_iwae"), Diagnostic)
    assert issubclass(HeldOutIWAE.Options, DiagnosticOptions)


def test_snr_at_several_k_uses_the_same_parameters_and_batch() -> None:
    from bbvi_kit import IWAE
    from bbvi_kit.diagnostics import GradientSNR

    trainer, train, test = tiny_vae_trainer()
    trainer.loss.objective = trainer.objective = IWAE(num_particles=2)
    trainer.fit(train, test)  # parameters and groups of a trained model
    objective = trainer.loss.objective
    snr = GradientSNR(num_draws=8, num_particles=[2, 16])
    torch.manual_seed(3)
    values = snr.measure(context(trainer, train, test))
    assert trainer.loss.objective is objective  # put back
    # the repetition at the run's own K starts from the same random state: the same numbers
    for key in ("snr_phi", "snr_theta", "snr_norm_phi", "snr_norm_theta"):
        assert values[f"{key}_K2"] == values[key]
        assert math.isfinite(values[f"{key}_K16"]) and values[f"{key}_K16"] != values[key]
    assert values["num_particles"] == 2
    with pytest.raises(Exception, match="num_particles"):
        GradientSNR(num_particles=[])


def test_the_cli_prints_every_collapse_warning_on_one_line(tmp_path: Path, cli_run) -> None:  # noqa: ANN001
    code, out, err = cli_run(["run", REPO / "recipes" / "quickstart.yaml", "training.iterations=6",
                              "training.progress=false", "model.hidden=[8]",
                              "diagnostics=[{name: posterior_collapse, every: 2, threshold: 1.0e9}]",  # no unit active
                              "--out", tmp_path])
    assert code == 0, err
    warnings_printed = [line for line in err.splitlines() if line.startswith("warning: posterior collapse: ")]
    assert len(warnings_printed) == 3  # steps 2, 4, 6: repeated messages are not swallowed
    assert all("latent units active" in line for line in warnings_printed)
    assert "collapse.py" not in err  # no file:line or source echo
