"""The training step, three ways: bbvi-kit's engine, a hand-written PyTorch loop, and Pyro's SVI.

For each case (model, batch, particles, estimator) the same Gaussian VAE plugin, initialised from
the same seed, is trained by

(a) ``bbvi-kit``: :class:`bbvi_kit.Trainer` with everything it does per iteration (batch order,
    loss, backward, squared gradient norms per group and their running average, finiteness check,
    Adam step, recorded rows), timed between consecutive optimizer steps;
(b) ``hand-written``: a plain loop over :mod:`benchmarks.handwritten`'s losses (the same math,
    bit-identical values) with ``torch.optim.Adam``;
(c) ``pyro <ELBO>``: ``pyro.infer.SVI`` with ``pyro.optim.Adam`` and the model and guide
    registered with ``pyro.module``, as the Pyro tutorials write it.

Run it through ``python -m benchmarks``; ``python -m benchmarks.training_step --memory CASE`` is
the child process that measures the contenders' peak memory.
"""

from __future__ import annotations

import argparse
import gc
import json
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, RenyiELBO, Trace_ELBO, TraceGraph_ELBO
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.utils.data import TensorDataset

from benchmarks import handwritten
from benchmarks.harness import Timing, interleaved, measure_in_child, median_call_time, peak_memory, synchronize
from bbvi_kit import ELBO, IWAE, Adam, Pathwise, ScoreFunction, Trainer, TrainingOptions
from bbvi_kit.data.base import DataInfo
from bbvi_kit.diagnostics.gradients import squared_grad_norms
from bbvi_kit.devices import resolve_device
from bbvi_kit_plugins.gaussian_vae import GaussianVAE

LR = 1e-3
SOFT_CLIP = {"name": "generalized_soft_clipping", "s1": 0.0, "s2": 50.0, "sharpness": 5.0}


@dataclass(frozen=True)
class Case:
    """One benchmark case: a Gaussian VAE, its data shape, batch, objective and estimator."""

    name: str
    title: str
    model: dict[str, Any]
    data_shape: tuple[int, ...]
    batch_size: int
    objective: str  # "elbo" or "iwae"
    num_particles: int
    estimator: str  # "pathwise" or "score"
    pyro_loss: str  # the Pyro ELBO it is compared with
    rounds: int = 6
    steps: int = 40
    warmup: int = 5
    cuda_only: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


MLP = {"hidden": [400], "latent_dim": 20, "likelihood": "bernoulli", "activation": "relu"}
CIFAR = {"network": "conv", "channels": [32, 64, 128], "hidden": [256], "latent_dim": 100,
         "likelihood": "bernoulli", "activation": SOFT_CLIP}
CELEBA = {"network": "conv", "channels": [64, 128, 256, 512], "hidden": [1024], "latent_dim": 100,
          "likelihood": "bernoulli", "activation": SOFT_CLIP}

CASES = [
    Case("mlp_pathwise_k1", "MLP VAE 784-400-20, B=128, pathwise ELBO, K=1", MLP, (784,), 128,
         "elbo", 1, "pathwise", "Trace_ELBO"),
    Case("mlp_iwae_k5", "MLP VAE 784-400-20, B=128, pathwise IWAE, K=5", MLP, (784,), 128,
         "iwae", 5, "pathwise", "RenyiELBO"),
    Case("mlp_iwae_k50", "MLP VAE 784-400-20, B=128, pathwise IWAE, K=50", MLP, (784,), 128,
         "iwae", 50, "pathwise", "RenyiELBO", rounds=5, steps=14, warmup=2),
    Case("mlp_score_k5", "MLP VAE 784-400-20, B=128, score-function ELBO, K=5", MLP, (784,), 128,
         "elbo", 5, "score", "TraceGraph_ELBO"),
    Case("cifar_conv_b256", "CIFAR-100 conv VAE (paper), B=256, pathwise ELBO, K=1", CIFAR, (3, 32, 32), 256,
         "elbo", 1, "pathwise", "Trace_ELBO", rounds=3, steps=8, warmup=2),
    Case("celeba_conv_b256", "CelebA conv VAE (paper), B=256, pathwise ELBO, K=1", CELEBA, (3, 64, 64), 256,
         "elbo", 1, "pathwise", "Trace_ELBO", rounds=3, steps=30, warmup=5, cuda_only=True),
]


def smoke(case: Case) -> Case:
    """A tiny version of ``case`` (a few seconds for all cases), to check the benchmark runs."""
    model = dict(case.model)
    if model.get("network") == "conv":
        model.update(channels=[4, 8], hidden=[16], latent_dim=4)
        shape = (3, 16, 16)
    else:
        model.update(hidden=[16], latent_dim=4)
        shape = (32,)
    return replace(case, model=model, data_shape=shape, batch_size=8, rounds=2, steps=4, warmup=1,
                   num_particles=min(case.num_particles, 3))


def build_vae(case: Case) -> GaussianVAE:
    torch.manual_seed(0)
    info = DataInfo(name="benchmark", shape=case.data_shape, num_train=case.batch_size, num_test=0)
    return GaussianVAE(info, **case.model)


def make_data(case: Case, steps: int) -> torch.Tensor:
    """``steps`` batches of data on the CPU: binary pixels for the MLP, uniform [0, 1] images."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand((steps * case.batch_size, *case.data_shape), generator=g)
    return (x > 0.5).float() if len(case.data_shape) == 1 else x


def shuffled_batches(case: Case, steps: int, device: torch.device) -> Iterator[torch.Tensor]:
    """One shuffled epoch of ``steps`` batches on ``device``, as a hand-written loop draws them."""
    data = make_data(case, steps)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    b = case.batch_size
    for i in range(steps):
        yield data[order[i * b:(i + 1) * b]].to(device, non_blocking=True)


class StepClock:
    """Times steps: ``tick()`` after each one. On CPU every step is timed on its own; on CUDA,
    where work is queued ahead, the steps after warm-up are timed together up to a final
    synchronisation and each gets the mean."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        synchronize()
        self.stamps = [_now()]

    def tick(self) -> None:
        self.stamps.append(_now())

    def times(self, warmup: int) -> list[float]:
        if self.cuda:
            synchronize()
            self.stamps[-1] = _now()
            n = len(self.stamps) - 1 - warmup
            return [(self.stamps[-1] - self.stamps[warmup]) / n] * n
        return [b - a for a, b in zip(self.stamps[warmup:-1], self.stamps[warmup + 1:])]


def _now() -> float:
    import time

    return time.perf_counter()


class EngineContender:
    """(a) bbvi-kit's :class:`Trainer`, one ``fit`` of ``steps`` iterations per round."""

    name = "bbvi-kit"

    def __init__(self, case: Case, device: torch.device) -> None:
        self.case, self.device = case, device
        self.vae = build_vae(case).to(device)
        self.trainer: Trainer | None = None

    def _trainer(self, steps: int) -> Trainer:
        c = self.case
        objective = (IWAE if c.objective == "iwae" else ELBO)(num_particles=c.num_particles)
        estimator = Pathwise() if c.estimator == "pathwise" else ScoreFunction()
        training = TrainingOptions(batch_size=c.batch_size, epochs=1, iterations=steps, progress=False,
                                   device=str(self.device), seed=0)
        return Trainer(self.vae.model, self.vae.guide, objective=objective, estimator=estimator,
                       optimizer=Adam(lr=LR), training=training, modules=[self.vae],
                       parameter_groups=self.vae.parameter_groups)

    def run(self, steps: int, warmup: int) -> list[float]:
        data = TensorDataset(make_data(self.case, steps))
        self.trainer = self._trainer(steps)
        clock = StepClock(self.device)
        handle = register_optimizer_step_post_hook(lambda *_: clock.tick())
        try:
            self.trainer.fit(data)
        finally:
            handle.remove()
        return clock.times(warmup)

    def norm_cost(self) -> float:
        """Median time of the squared gradient norms the engine records every step."""
        assert self.trainer is not None
        return median_call_time(lambda: squared_grad_norms(self.trainer.groups))


def handwritten_loss(case: Case) -> Callable[[GaussianVAE, torch.Tensor], torch.Tensor]:
    if case.estimator == "score":
        return lambda vae, x: handwritten.score_elbo_loss(vae, x, case.num_particles)
    if case.objective == "iwae":
        return lambda vae, x: handwritten.iwae_loss(vae, x, case.num_particles)
    return lambda vae, x: handwritten.elbo_loss(vae, x, case.num_particles)


class HandwrittenContender:
    """(b) A plain PyTorch loop: batch, loss, backward, ``torch.optim.Adam`` step."""

    name = "hand-written"

    def __init__(self, case: Case, device: torch.device) -> None:
        self.case, self.device = case, device
        self.vae = build_vae(case).to(device)
        self.loss = handwritten_loss(case)
        self.optimizer = torch.optim.Adam(self.vae.parameters(), lr=LR)

    def run(self, steps: int, warmup: int) -> list[float]:
        clock = StepClock(self.device)
        for x in shuffled_batches(self.case, steps, self.device):
            loss = self.loss(self.vae, x)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            clock.tick()
        return clock.times(warmup)


class _PyroProgram:
    """The plugin's model and guide with their networks registered in Pyro's parameter store
    (``pyro.module``), as ``SVI`` needs; ``score`` draws z without reparameterisation."""

    def __init__(self, vae: GaussianVAE, score: bool) -> None:
        self.vae, self.score = vae, score

    def model(self, x: torch.Tensor) -> None:
        pyro.module("decoder", self.vae.decoder)
        self.vae.model(x)

    def guide(self, x: torch.Tensor) -> None:
        for name in ("encoder", "loc_head", "logvar_head"):
            pyro.module(name, getattr(self.vae, name))
        if not self.score:
            self.vae.guide(x)
            return
        with pyro.plate("data", x.shape[0], dim=-1):
            loc, scale = self.vae.encode(x)
            pyro.sample("z", _NotReparameterized(dist.Normal(loc, scale), 1))


class _NotReparameterized(dist.Independent):
    """``Normal(loc, scale).to_event(1)`` that Pyro's ELBOs treat as not reparameterisable, so
    ``TraceGraph_ELBO`` uses the score function for it (``has_rsample_(False)`` does not survive
    the plate's ``expand`` of an ``Independent``)."""

    has_rsample = False  # type: ignore[assignment]


def pyro_elbo(case: Case) -> Any:
    k = case.num_particles
    if case.pyro_loss == "Trace_ELBO":
        return Trace_ELBO(num_particles=k, vectorize_particles=k > 1, max_plate_nesting=1)
    if case.pyro_loss == "RenyiELBO":
        return RenyiELBO(alpha=0.0, num_particles=k, vectorize_particles=True, max_plate_nesting=1)
    if case.pyro_loss == "TraceGraph_ELBO":
        return TraceGraph_ELBO(num_particles=k, vectorize_particles=True, max_plate_nesting=1)
    raise ValueError(case.pyro_loss)


class PyroContender:
    """(c) ``pyro.infer.SVI`` with ``pyro.optim.Adam`` and the case's Pyro ELBO."""

    def __init__(self, case: Case, device: torch.device) -> None:
        self.case, self.device = case, device
        self.name = f"pyro {case.pyro_loss}"
        self.vae = build_vae(case).to(device)
        pyro.clear_param_store()
        program = _PyroProgram(self.vae, score=case.estimator == "score")
        self.svi = SVI(program.model, program.guide, pyro.optim.Adam({"lr": LR}), loss=pyro_elbo(case))

    def run(self, steps: int, warmup: int) -> list[float]:
        clock = StepClock(self.device)
        for x in shuffled_batches(self.case, steps, self.device):
            self.svi.step(x)
            clock.tick()
        return clock.times(warmup)


CONTENDERS = {"bbvi-kit": EngineContender, "hand-written": HandwrittenContender, "pyro": PyroContender}


def run_case(case: Case, device: torch.device, *, memory: bool = True, smoke_run: bool = False) -> dict[str, Any]:
    """Every contender's median step time, ratios, peak memory and the engine's norm cost."""
    engine = EngineContender(case, device)
    contenders = [engine, HandwrittenContender(case, device), PyroContender(case, device)]
    timings: dict[str, Timing] = interleaved(contenders, rounds=case.rounds, steps=case.steps, warmup=case.warmup)
    medians = {name: t.median for name, t in timings.items()}
    result: dict[str, Any] = {
        "case": case.name,
        "title": case.title,
        "steps_timed": {name: len(t.times) for name, t in timings.items()},
        "median_ms": {name: 1e3 * m for name, m in medians.items()},
        "iqr_ms": {name: [1e3 * q for q in t.iqr] for name, t in timings.items()},
        "engine_vs_handwritten": medians["bbvi-kit"] / medians["hand-written"],
        "engine_vs_pyro": medians["bbvi-kit"] / medians[contenders[2].name],
        "norm_ms": 1e3 * engine.norm_cost(),
    }
    result["norm_share"] = result["norm_ms"] / result["median_ms"]["bbvi-kit"]
    if memory:
        args = ["--smoke"] if smoke_run else []
        peaks = measure_in_child("benchmarks.training_step", "--memory", case.name, *args)
        result["peak_mib"] = {c.name: peaks[key] for key, c in zip(CONTENDERS, contenders)}
    return result


def _memory_probe(case: Case) -> dict[str, dict[str, float]]:
    """In a fresh process, for each contender in turn: how far its training raises resident
    memory above its built model (gradients, optimizer state, activations). A throw-away
    instance trains two steps first, so that modules imported lazily are not counted; the
    parent sets a fixed mmap threshold so that what one contender freed is not kept for the next."""
    device = resolve_device("auto")
    peaks = {}
    for key, make in CONTENDERS.items():
        make(case, device).run(2, 1)
        gc.collect()
        contender = make(case, device)
        peaks[key] = peak_memory(lambda c=contender: c.run(max(case.warmup + 2, 4), 1))
        del contender
        gc.collect()
    return peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory", metavar="CASE", required=True)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    cases = {c.name: (smoke(c) if args.smoke else c) for c in CASES}
    print(json.dumps(_memory_probe(cases[args.memory])))


if __name__ == "__main__":
    main()
