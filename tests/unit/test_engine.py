"""The training loop: gradient-norm recording, schedules of recording and evaluation, determinism,
non-finite losses, devices."""

from __future__ import annotations

import math
from typing import Any

import pyro
import pytest
import torch
from torch.utils.data import TensorDataset

from bbvi_kit import (
    ELBO,
    IWAE,
    SGD,
    Adam,
    DataInfo,
    Pathwise,
    ScoreFunction,
    Trainer,
    TrainingError,
    TrainingOptions,
)
from bbvi_kit.devices import resolve_device
from bbvi_kit.objectives import BetaELBO
from bbvi_kit.optim import InverseSqrtIteration
from bbvi_kit_plugins.gaussian_vae import GaussianVAE

INFO = DataInfo(name="toy", shape=(6,), num_train=40, num_test=12)


def toy_data(n: int, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.rand(n, 6, generator=g))


class RecordingSGD(SGD):
    """SGD whose optimizer records the squared gradient norm it sees when it steps."""

    seen: list[float]

    def build(self, params: Any) -> torch.optim.Optimizer:
        params = list(params)
        self.seen = []
        optimizer = super().build(params)
        original_step = optimizer.step

        def step(*args: Any, **kwargs: Any) -> Any:
            self.seen.append(sum(float((p.grad**2).sum()) for p in params if p.grad is not None))
            return original_step(*args, **kwargs)

        optimizer.step = step  # type: ignore[method-assign]
        return optimizer


def make_trainer(seed: int = 0, *, optimizer: Any = None, objective: Any = None, estimator: Any = None,
                 **training: Any) -> tuple[Trainer, GaussianVAE]:
    pyro.set_rng_seed(seed)
    vae = GaussianVAE(INFO, latent_dim=2, hidden=[5])
    options = dict(batch_size=8, epochs=2, seed=seed, progress=False, device="cpu")
    options.update(training)
    trainer = Trainer(
        vae.model,
        vae.guide,
        objective=objective or ELBO(),
        estimator=estimator or Pathwise(),
        optimizer=optimizer or SGD(lr=0.01),
        training=TrainingOptions(**options),
        parameter_groups=vae.parameter_groups,
        modules=[vae],
    )
    return trainer, vae


def test_grad_norm_is_recorded_before_clipping_and_step() -> None:
    optimizer = RecordingSGD(lr=0.01)
    trainer, vae = make_trainer(optimizer=optimizer, grad_clip=0.5, epochs=1)
    history = trainer.fit(toy_data(40))
    recorded = [row["minibatch_grad_norm_sq"] for row in history.metrics]
    assert len(recorded) == len(optimizer.seen) == 5
    for before, after in zip(recorded, optimizer.seen):
        assert before > 0.5**2 * 1.01  # the recorded value is the unclipped one ...
        assert after == pytest.approx(0.5**2, rel=1e-4)  # ... the optimizer saw the clipped one


def test_grad_norm_equals_sum_of_squared_gradients_and_splits_into_groups() -> None:
    optimizer = RecordingSGD(lr=0.01)
    trainer, vae = make_trainer(optimizer=optimizer, epochs=1)
    history = trainer.fit(toy_data(40))
    for row, seen in zip(history.metrics, optimizer.seen):
        assert row["minibatch_grad_norm_sq"] == pytest.approx(seen, rel=1e-5)
        parts = row["minibatch_grad_norm_sq_phi"] + row["minibatch_grad_norm_sq_theta"]
        assert parts == pytest.approx(row["minibatch_grad_norm_sq"], rel=1e-5)
        assert row["minibatch_grad_norm_sq_phi"] > 0 and row["minibatch_grad_norm_sq_theta"] > 0
    groups = vae.parameter_groups()
    assert {id(p) for g in groups.values() for p in g} == {id(p) for p in vae.parameters()}


def test_running_average_covers_every_iteration_whatever_is_recorded() -> None:
    every = make_trainer(record_every=1)[0].fit(toy_data(40)).metrics
    sparse = make_trainer(record_every=3)[0].fit(toy_data(40)).metrics
    values = [row["minibatch_grad_norm_sq"] for row in every]
    for n, row in enumerate(every, start=1):
        assert row["minibatch_grad_norm_sq_avg"] == pytest.approx(sum(values[:n]) / n, rel=1e-5)
    assert [row["step"] for row in sparse] == [3, 6, 9, 10]  # the last step is always recorded
    by_step = {row["step"]: row for row in every}
    for row in sparse:
        assert row["minibatch_grad_norm_sq_avg"] == pytest.approx(by_step[row["step"]]["minibatch_grad_norm_sq_avg"], rel=1e-5)


def test_iterations_epochs_and_evaluation_schedule() -> None:
    trainer, _ = make_trainer(epochs=3)
    history = trainer.fit(toy_data(40), toy_data(12, seed=1))
    assert [row["step"] for row in history.metrics] == list(range(1, 16))
    assert [row["epoch"] for row in history.metrics] == [0] * 5 + [1] * 5 + [2] * 5
    assert [row["step"] for row in history.evals] == [5, 10, 15]  # each epoch's end
    capped = make_trainer(epochs=3, iterations=7, eval_every=3)[0].fit(toy_data(40), toy_data(12, seed=1))
    assert len(capped.metrics) == 7
    assert [row["step"] for row in capped.evals] == [3, 6, 7]


def test_evaluation_does_not_change_the_training_trajectory() -> None:
    with_eval = make_trainer(eval_every=1)[0].fit(toy_data(40), toy_data(12, seed=1)).metrics
    without = make_trainer()[0].fit(toy_data(40)).metrics
    assert [r["loss"] for r in with_eval] == [r["loss"] for r in without]


def test_test_loss_is_the_per_example_negative_elbo() -> None:
    trainer, vae = make_trainer(epochs=1)
    test = toy_data(12, seed=1)
    first = trainer.evaluate(test, seed=5)
    again = trainer.evaluate(test, seed=5)
    assert first == again  # seeded: reproducible
    # One pass over all 12 examples at once gives the same per-example mean.
    trainer.training = trainer.training.model_copy(update={"eval_batch_size": 12})
    whole = trainer.evaluate(test, seed=5)
    assert whole["test_loss"] == pytest.approx(first["test_loss"], rel=0.2)
    assert math.isfinite(whole["test_loss"])


def test_same_seed_same_metrics_different_seed_different() -> None:
    def run(seed: int) -> list[dict[str, float]]:
        trainer, _ = make_trainer(seed, objective=IWAE(num_particles=3), estimator=ScoreFunction(baseline="leave_one_out"))
        return [{k: v for k, v in r.items() if k != "time"} for r in trainer.fit(toy_data(40)).metrics]

    assert run(0) == run(0)
    assert run(0) != run(1)


def test_schedule_sets_the_step_size() -> None:
    trainer, _ = make_trainer(optimizer=SGD(lr=0.5))
    trainer.schedule = InverseSqrtIteration()
    history = trainer.fit(toy_data(40))
    for row in history.metrics:
        assert row["lr"] == pytest.approx(0.5 / math.sqrt(row["step"]))
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.5 / math.sqrt(10))


@pytest.mark.parametrize(("validation", "message"), [
    ("first_step", r"non-finite loss or gradient at step 3 \(epoch 0\): loss=nan"),
    # with validation on every step, a distribution refuses the NaN argument first
    ("every_step", "step 3 .*invalid values"),
])
def test_non_finite_loss_stops_naming_the_step(validation: str, message: str) -> None:
    """NaN activations stop the run in one line naming the step, before the update."""
    trainer, vae = make_trainer(epochs=1, validation=validation)
    original = vae.decoder.forward

    def poisoned(z: torch.Tensor) -> torch.Tensor:
        out = original(z)
        return out * float("nan") if trainer.step == 3 else out

    vae.decoder.forward = poisoned  # type: ignore[method-assign]
    before = [p.detach().clone() for p in vae.parameters()]
    with pytest.raises(TrainingError, match=message):
        trainer.fit(toy_data(40))
    # Steps 1-2 were taken; step 3's update never reached the parameters.
    assert trainer.step == 3
    assert all(torch.isfinite(p).all() for p in vae.parameters())
    assert any(not torch.equal(b, p) for b, p in zip(before, vae.parameters()))


def test_overflowing_loss_is_caught_before_the_step() -> None:
    trainer, vae = make_trainer(epochs=1, batch_size=40)
    data = torch.rand(40, 6)
    data[17] = 1e30  # (x - mean)^2 / c^2 overflows float32: the loss is +inf
    before = [p.detach().clone() for p in vae.parameters()]
    with pytest.raises(TrainingError, match="non-finite loss or gradient at step 1"):
        trainer.fit(TensorDataset(data))
    assert all(torch.equal(b, p) for b, p in zip(before, vae.parameters()))


def test_python_model_and_guide_functions_get_phi_and_theta_groups() -> None:
    """A plain Pyro model/guide with pyro.param sites: params are found on the first step."""

    def model(x: torch.Tensor) -> None:
        loc = pyro.param("prior_loc", torch.zeros(2))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", pyro.distributions.Normal(loc, 1.0).to_event(1))
            pyro.sample("x", pyro.distributions.Normal(z.sum(-1, keepdim=True), 1.0).to_event(1), obs=x)

    def guide(x: torch.Tensor) -> None:
        loc = pyro.param("q_loc", torch.zeros(2))
        scale = pyro.param("q_scale", torch.ones(2), constraint=pyro.distributions.constraints.positive)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", pyro.distributions.Normal(loc, scale).to_event(1))

    pyro.set_rng_seed(0)
    data = TensorDataset(torch.randn(16, 1) + 2.0)
    trainer = Trainer(model, guide, objective=ELBO(), estimator=Pathwise(), optimizer=SGD(lr=0.05),
                      training=TrainingOptions(batch_size=4, epochs=5, progress=False, device="cpu"))
    history = trainer.fit(data)
    assert sorted(trainer.groups) == ["phi", "theta"]
    assert len(trainer.groups["phi"]) == 2 and len(trainer.groups["theta"]) == 1
    row = history.metrics[-1]
    assert row["minibatch_grad_norm_sq_phi"] + row["minibatch_grad_norm_sq_theta"] == pytest.approx(row["minibatch_grad_norm_sq"], rel=1e-5)
    # The guide mean moved towards the posterior of z given x ~ 2 (sum of the two latents).
    assert pyro.param("q_loc").sum().item() > 0.5


def test_auto_device_is_cpu_without_cuda() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu").type == "cpu"


@pytest.mark.gpu
def test_training_runs_on_cuda() -> None:
    trainer, vae = make_trainer(device="cuda", epochs=1)
    history = trainer.fit(toy_data(40), toy_data(12, seed=1))
    assert all(p.device.type == "cuda" for p in vae.parameters())
    assert all(math.isfinite(r["loss"]) for r in history.metrics)
    assert math.isfinite(history.evals[-1]["test_loss"])


@pytest.mark.gpu
def test_on_cuda_adam_skips_a_nan_step_on_the_device() -> None:
    """The CUDA default: a fused Adam that skips a non-finite update on the device, found at flush."""
    trainer, vae = make_trainer(device="cuda", epochs=1, optimizer=Adam(lr=1e-3), on_nonfinite="skip")
    original = vae.decoder.forward

    def poisoned(z: torch.Tensor) -> torch.Tensor:
        out = original(z)
        return out * float("nan") if trainer.step == 3 else out

    vae.decoder.forward = poisoned  # type: ignore[method-assign]
    history = trainer.fit(toy_data(40))
    assert trainer.optimizer.defaults["fused"] is True
    assert [r["skipped_steps"] for r in history.metrics] == [0, 0, 1, 1, 1]
    assert all(torch.isfinite(p).all() for p in vae.parameters())
    steps = {float(s["step"]) for s in trainer.optimizer.state.values()}
    assert steps == {4.0}


def test_interrupt_keeps_every_recorded_row(tmp_path) -> None:
    from bbvi_kit.runs import RunDirectory, read_csv

    trainer, vae = make_trainer(epochs=3)
    original = vae.decoder.forward

    def interrupted(z: torch.Tensor) -> torch.Tensor:
        if trainer.step == 7:
            raise KeyboardInterrupt
        return original(z)

    vae.decoder.forward = interrupted  # type: ignore[method-assign]
    run = RunDirectory.create(tmp_path, "interrupt")
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(toy_data(40), run=run)
    run.close()
    rows = read_csv(run.path / "metrics.csv")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]  # flush_every=50: all were still pending


def test_score_estimator_trains_and_evaluates_a_discrete_latent_model() -> None:
    """Evaluation must not require reparameterisable guides."""
    probs_logit = torch.zeros(3, requires_grad=True)

    def model(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", pyro.distributions.Categorical(logits=torch.zeros(3)))
            pyro.sample("x", pyro.distributions.Normal(c.float() * 2.0, 0.5), obs=x)

    def guide(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.sample("c", pyro.distributions.Categorical(logits=probs_logit.expand(x.shape[0], 3)))

    trainer = Trainer(
        model, guide, objective=ELBO(num_particles=4), estimator=ScoreFunction(baseline="leave_one_out"),
        optimizer=SGD(lr=0.1), parameter_groups=lambda: {"phi": [probs_logit]},
        training=TrainingOptions(batch_size=16, epochs=10, progress=False, device="cpu"),
    )
    data = TensorDataset(torch.full((32,), 4.0))  # every x says c = 2
    history = trainer.fit(data, TensorDataset(torch.full((8,), 4.0)))
    assert history.evals[-1]["test_loss"] < history.evals[0]["test_loss"]
    assert torch.softmax(probs_logit, 0)[2] > 0.6


def test_eval_train_and_reference_gaps_are_recorded() -> None:
    train, test = toy_data(40), toy_data(12, seed=1)
    reference = {"train_loss": 1.5, "test_loss": -2.0, "not_a_column": 0.0}
    trainer, _ = make_trainer(eval_train=True)
    trainer.reference = reference
    history = trainer.fit(train, test)
    plain = make_trainer()[0].fit(train, test)
    assert [r["loss"] for r in history.metrics] == [r["loss"] for r in plain.metrics]  # same trajectory
    for row, plain_row in zip(history.evals, plain.evals):
        assert set(row) == {"step", "epoch", "test_loss", "test_objective_loss", "train_loss",
                            "train_objective_loss", "train_loss_gap", "test_loss_gap", "time"}
        assert row["test_loss"] == plain_row["test_loss"]
        assert row["train_loss_gap"] == row["train_loss"] - 1.5
        assert row["test_loss_gap"] == row["test_loss"] + 2.0
    # the train evaluation is the same evaluation, run on the training split
    final = trainer.evaluate(train, seed=trainer.training.seed + trainer.step, split="train")
    assert final == {k: history.evals[-1][k] for k in ("train_loss", "train_objective_loss")}


class ItemDataset(torch.utils.data.Dataset):
    """A dataset read one example at a time (as images decoded from files are)."""

    def __init__(self, data: TensorDataset) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor]:
        return self.data[i]


def test_worker_processes_do_not_change_the_run() -> None:
    train, test = ItemDataset(toy_data(40)), ItemDataset(toy_data(12, seed=1))
    serial = make_trainer()[0].fit(train, test)
    parallel = make_trainer(num_workers=2)[0].fit(train, test)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "time"} for r in rows]  # noqa: E731
    assert strip(serial.metrics) == strip(parallel.metrics)
    assert strip(serial.evals) == strip(parallel.evals)
    # and a per-example dataset gives the run an in-memory TensorDataset gives
    assert strip(make_trainer()[0].fit(toy_data(40), toy_data(12, seed=1)).metrics) == strip(serial.metrics)


@pytest.mark.parametrize("estimator", [Pathwise(), ScoreFunction(baseline="running_mean")])
def test_training_steps_read_nothing_back_from_the_device_until_a_flush(
    monkeypatch: pytest.MonkeyPatch, estimator: Any
) -> None:
    """What a GPU needs: between flushes a step queues work and never waits for a value. Every
    way a tensor's value reaches Python is counted; with the check at flush (the default on
    CUDA), only the first step (validation, parameter discovery) and the flushes read any."""
    trainer, _ = make_trainer(optimizer=Adam(lr=1e-3), estimator=estimator, batch_size=4, epochs=1,
                              nonfinite_check="at_flush", on_nonfinite="skip", flush_every=1000)
    reads: list[int] = []
    for name in ("item", "tolist", "__bool__", "__float__", "__int__", "__index__"):
        original = getattr(torch.Tensor, name)

        def counted(self: torch.Tensor, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            reads.append(trainer.step)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    history = trainer.fit(toy_data(40))
    monkeypatch.undo()
    assert trainer.optimizer.defaults["fused"] is True
    assert len(history.metrics) == 10
    assert set(reads) <= {1, 10}, f"values read back at steps {sorted(set(reads) - {1, 10})}"


def test_a_beta_schedule_is_recorded_in_the_metrics_and_a_constant_beta_is_not() -> None:
    trainer, _ = make_trainer(objective=BetaELBO(beta=2.0, beta_schedule="linear", warmup_steps=4), epochs=1)
    rows = trainer.fit(toy_data(40)).metrics
    assert [r["beta"] for r in rows] == [2.0 * min(1.0, (r["step"] - 1) / 4) for r in rows]
    assert "beta" not in make_trainer(objective=BetaELBO(beta=2.0), epochs=1)[0].fit(toy_data(40)).metrics[0]
