"""The short loop (:func:`bbvi_kit.train.fit`) and its callbacks: user callbacks see every step,
their state is part of every checkpoint and comes back on resume, and the loop drives a plain
:class:`BBVI` step with no trainer around it."""

from __future__ import annotations

from typing import Any, Mapping

import pyro
import pytest
import pyro.distributions as dist
import torch
from torch.utils.data import TensorDataset

from bbvi_kit import ELBO, SGD, Adam, BBVI, DataInfo, Pathwise, StepResult, Trainer, TrainingOptions
from bbvi_kit.checkpoint import Checkpoints
from bbvi_kit.runs import RunDirectory
from bbvi_kit.train import Callback, LoopState, fit
from bbvi_kit_plugins.gaussian_vae import GaussianVAE


class CountingCallback(Callback):
    """Counts steps and sums their losses; its state is the count and the sum."""

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.loss_sum = 0.0
        self.closed = False

    def on_step(self, loop: LoopState, result: StepResult) -> None:
        self.steps.append(loop.step)
        self.loss_sum += float(result.loss)

    def close(self, loop: LoopState) -> None:
        self.closed = True

    def state_dict(self) -> dict[str, Any]:
        return {"counting_steps": len(self.steps), "counting_loss_sum": self.loss_sum}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.steps = list(range(1, int(state["counting_steps"]) + 1))
        self.loss_sum = float(state["counting_loss_sum"])


def make_trainer(**training: Any) -> Trainer:
    pyro.set_rng_seed(0)
    vae = GaussianVAE(DataInfo(name="toy", shape=(6,), num_train=40, num_test=12), latent_dim=2, hidden=[5])
    options = TrainingOptions(batch_size=8, progress=False, device="cpu", **training)
    return Trainer(vae.model, vae.guide, objective=ELBO(), estimator=Pathwise(), optimizer=Adam(lr=1e-2),
                   training=options, modules=[vae])


def data() -> TensorDataset:
    return TensorDataset(torch.rand(40, 6, generator=torch.Generator().manual_seed(0)))


def test_a_user_callback_sees_every_step_and_its_state_is_checkpointed_and_resumed(tmp_path) -> None:
    counting = CountingCallback()
    run = RunDirectory.create(tmp_path, "callbacks")
    history = make_trainer(epochs=2).fit(data(), run=run, callbacks=[counting])
    run.close()
    assert counting.steps == list(range(1, 11)) and counting.closed
    assert counting.loss_sum == sum(row["loss"] for row in history.metrics)  # the same losses the log wrote
    checkpoints = Checkpoints(run.path, keep=2)
    first = checkpoints.load(checkpoints.records()[0])  # at the first epoch's end
    assert first["step"] == 5 and first["loop"]["counting_steps"] == 5
    assert first["loop"]["last_eval_step"] == -1 and "good_steps" in first["loop"]  # the built-in callbacks' too

    resumed = CountingCallback()
    trainer = make_trainer(epochs=2)
    again = trainer.fit(data(), resume=first, history=type(history)(metrics=history.metrics[:5]), callbacks=[resumed])
    assert resumed.steps == list(range(1, 11))
    assert resumed.loss_sum == counting.loss_sum  # the resumed steps took the same losses
    assert [r["loss"] for r in again.metrics] == [r["loss"] for r in history.metrics]


def test_the_loop_drives_a_plain_bbvi_step() -> None:
    def model(x: torch.Tensor) -> None:
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x: torch.Tensor) -> None:
        w = pyro.param("w", torch.tensor(0.0))
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(w * x, 0.7))

    pyro.clear_param_store()
    bbvi = BBVI(model, guide, ELBO(), Pathwise(), SGD(lr=0.05), device="cpu")
    counting = CountingCallback()
    loop = fit(bbvi, TensorDataset(torch.randn(64) * 2**0.5), TrainingOptions(batch_size=16, epochs=30, progress=False),
               [counting])
    assert loop.step == bbvi.num_steps == 120 and counting.steps == list(range(1, 121))
    assert pyro.param("w").item() == pytest.approx(0.5, abs=0.08)  # the exact posterior mean x/2
