"""Step-size schedules, optimizer plugins, and the learning rate and step the trainer applies."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pydantic import ValidationError
from torch.utils.data import TensorDataset

import bbvi_kit
from bbvi_kit import ELBO, SGD, Adam, AdamW, DataInfo, Pathwise, Trainer, TrainingOptions
from bbvi_kit.data.base import batch_loader
from bbvi_kit.optim import (
    Adagrad,
    Constant,
    InverseSqrtEpoch,
    InverseSqrtIteration,
    OptimizerPlugin,
    RMSprop,
    Warmup,
)
from bbvi_kit.registry import optimizers, schedules
from bbvi_kit_plugins.linear_vae import LinearVAE

ITERATIONS = [1, 2, 3, 4, 10, 99, 100, 101, 1000, 12345]
EPOCHS = [0, 1, 2, 7, 100]


# -- schedules -------------------------------------------------------------------------------
def test_builtin_schedules_registered():
    assert {"constant", "inv_sqrt_iteration", "inv_sqrt_epoch", "warmup"} <= set(schedules.names())
    assert schedules.get("constant") is Constant
    assert schedules.get("inv_sqrt_iteration") is InverseSqrtIteration
    assert schedules.get("inv_sqrt_epoch") is InverseSqrtEpoch
    assert schedules.get("warmup") is Warmup


def test_constant_schedule():
    s = Constant()
    assert all(s.factor(n, e) == 1.0 for n in ITERATIONS for e in EPOCHS)


def test_inv_sqrt_iteration_schedule():
    s = InverseSqrtIteration()
    for n in ITERATIONS:
        for e in EPOCHS:
            assert s.factor(n, e) == pytest.approx(1.0 / math.sqrt(n), rel=1e-15)
    assert s.factor(1, 0) == 1.0
    assert s.factor(4, 0) == 0.5
    assert s.factor(100, 0) == pytest.approx(0.1)


def test_inv_sqrt_epoch_schedule():
    s = InverseSqrtEpoch()
    for e in EPOCHS:
        for n in ITERATIONS:
            assert s.factor(n, e) == pytest.approx(1.0 / math.sqrt(e + 1), rel=1e-15)
    assert s.factor(1, 0) == 1.0
    assert s.factor(50, 3) == 0.5


@pytest.mark.parametrize("warmup", [1, 2, 10, 100])
def test_warmup_then_constant(warmup):
    s = Warmup(warmup_iterations=warmup, then="constant")
    for n in range(1, 3 * warmup + 5):
        expected = n / warmup if n < warmup else 1.0
        assert s.factor(n, 0) == pytest.approx(expected, rel=1e-15)
    # linear: equal increments during the warm-up
    if warmup > 2:
        steps = [s.factor(n + 1, 0) - s.factor(n, 0) for n in range(1, warmup - 1)]
        assert all(d == pytest.approx(1.0 / warmup) for d in steps)
    assert s.factor(warmup, 0) == 1.0


@pytest.mark.parametrize("warmup", [1, 2, 10, 100])
def test_warmup_then_inv_sqrt(warmup):
    s = Warmup(warmup_iterations=warmup, then="inv_sqrt_iteration")
    for n in range(1, 5 * warmup + 5):
        expected = n / warmup if n < warmup else math.sqrt(warmup / n)
        assert s.factor(n, 3) == pytest.approx(expected, rel=1e-15)
    # continuous at n = W: the linear ramp's limit (W / W = 1) is the decay's value sqrt(W / W) = 1
    assert s.factor(warmup, 0) == pytest.approx(1.0)
    if warmup > 1:
        assert s.factor(warmup - 1, 0) == pytest.approx(1.0 - 1.0 / warmup)
        assert s.factor(warmup + 1, 0) == pytest.approx(math.sqrt(warmup / (warmup + 1)))
    # peaks at W and is monotone on both sides
    values = [s.factor(n, 0) for n in range(1, 5 * warmup + 5)]
    peak = values.index(max(values)) + 1
    assert peak == warmup
    assert all(a <= b for a, b in zip(values[: warmup - 1], values[1:warmup]))
    assert all(a >= b for a, b in zip(values[warmup - 1 :], values[warmup:]))


def test_warmup_options_validated():
    with pytest.raises(ValidationError):
        Warmup(warmup_iterations=0)
    with pytest.raises(ValidationError):
        Warmup(then="cosine")
    with pytest.raises(ValidationError):
        Constant(period=3)  # schedules without options reject any


# -- optimizer plugins -----------------------------------------------------------------------
TORCH_CLASS = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
}


def _params():
    return [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.zeros(2))]


def _assert_group_carries(group: dict, options: dict) -> None:
    for key, value in options.items():
        assert key in group, f"option {key!r} not passed to torch (group keys: {sorted(group)})"
        got = group[key]
        if isinstance(value, tuple):
            assert tuple(got) == value, key
        else:
            assert got == value, key


@pytest.mark.parametrize("name", optimizers.names())
def test_every_registered_optimizer_builds_with_its_options(name):
    cls = optimizers.get(name)
    assert issubclass(cls, OptimizerPlugin)
    plugin = cls(lr=0.0123)
    assert plugin.lr == 0.0123
    params = _params()
    opt = plugin.build(params)
    assert isinstance(opt, torch.optim.Optimizer)
    if name in TORCH_CLASS:
        assert type(opt) is TORCH_CLASS[name]
    assert len(opt.param_groups) == 1
    group = opt.param_groups[0]
    assert [id(p) for p in group["params"]] == [id(p) for p in params]
    _assert_group_carries(group, plugin.options.model_dump())
    # and it can take a step
    sum((p**2).sum() for p in params).backward()
    before = [p.detach().clone() for p in params]
    opt.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, params))


@pytest.mark.parametrize("name", optimizers.names())
def test_every_registered_optimizer_rejects_bad_lr(name):
    cls = optimizers.get(name)
    for bad in (-1e-3, 0.0, 1e4):
        with pytest.raises(ValidationError):
            cls(lr=bad)
    with pytest.raises(ValidationError):
        cls(weight_decay=-0.1)
    with pytest.raises(ValidationError):
        cls(learning_rate=0.1)  # unknown key, not silently ignored


@pytest.mark.parametrize("cls", [Adam, AdamW], ids=["adam", "adamw"])
def test_adam_options_reach_torch(cls):
    plugin = cls(lr=0.02, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.01, amsgrad=True)
    group = plugin.build(_params()).param_groups[0]
    assert group["lr"] == 0.02
    assert tuple(group["betas"]) == (0.8, 0.95)
    assert group["eps"] == 1e-6
    assert group["weight_decay"] == 0.01
    assert group["amsgrad"] is True


def test_sgd_options_reach_torch():
    group = SGD(lr=0.5, momentum=0.9, nesterov=True, weight_decay=1e-4).build(_params()).param_groups[0]
    assert (group["lr"], group["momentum"], group["nesterov"], group["dampening"], group["weight_decay"]) == (
        0.5, 0.9, True, 0.0, 1e-4
    )
    group = SGD(lr=0.1, momentum=0.5, dampening=0.3).build(_params()).param_groups[0]
    assert (group["momentum"], group["dampening"], group["nesterov"]) == (0.5, 0.3, False)


def test_rmsprop_and_adagrad_options_reach_torch():
    group = RMSprop(lr=0.01, alpha=0.9, eps=1e-5, momentum=0.5).build(_params()).param_groups[0]
    assert (group["alpha"], group["eps"], group["momentum"]) == (0.9, 1e-5, 0.5)
    group = Adagrad(lr=0.1, eps=1e-6).build(_params()).param_groups[0]
    assert group["eps"] == 1e-6


def test_invalid_optimizer_options_rejected():
    with pytest.raises(ValidationError, match="nesterov"):
        SGD(nesterov=True)  # no momentum
    with pytest.raises(ValidationError, match="nesterov"):
        SGD(nesterov=True, momentum=0.9, dampening=0.1)
    for bad in ((0.9, 1.0), (1.0, 0.999), (-0.1, 0.999), (0.9, -0.5), (0.9, 1.5)):
        with pytest.raises(ValidationError):
            Adam(betas=bad)
        with pytest.raises(ValidationError):
            AdamW(betas=bad)
    with pytest.raises(ValidationError):
        Adam(betas=(0.9,))  # not a pair
    with pytest.raises(ValidationError):
        Adam(eps=0.0)
    with pytest.raises(ValidationError):
        SGD(momentum=1.0)
    with pytest.raises(ValidationError):
        SGD(momentum=-0.1)
    Adam(betas=(0.0, 0.0))  # the closed end of [0, 1) is allowed


def test_optimizer_plugins_are_exported():
    assert bbvi_kit.SGD is SGD and bbvi_kit.Adam is Adam and bbvi_kit.AdamW is AdamW
    assert {"sgd", "adam", "adamw", "rmsprop", "adagrad"} <= set(optimizers.names())


# -- the trainer applies lr * factor(n, epoch) -----------------------------------------------
INFO = DataInfo(name="t", shape=(3,), num_train=32, num_test=8)


def _linear_vae_data(seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(32, 3, generator=g)), TensorDataset(torch.randn(8, 3, generator=g))


class _RecordingSGD(torch.optim.SGD):
    """torch SGD that records the lr of every group at each step (what was really applied)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.applied: list[list[float]] = []

    def step(self, closure=None):
        self.applied.append([g["lr"] for g in self.param_groups])
        return super().step(closure)


class _RecordingSGDPlugin(SGD):
    def build(self, params):
        o = self.options
        return _RecordingSGD(params, lr=o.lr, momentum=o.momentum)


def _train_linear_vae(schedule, lr=0.05, epochs=3, batch_size=8, seed=0, optimizer=None, **training):
    pyro.clear_param_store()
    torch.manual_seed(seed)
    model = LinearVAE(INFO, latent_dim=1)
    train, test = _linear_vae_data(seed)
    trainer = Trainer(
        model.model,
        model.guide,
        objective=ELBO(num_particles=1),
        estimator=Pathwise(),
        optimizer=optimizer or _RecordingSGDPlugin(lr=lr),
        schedule=schedule,
        training=TrainingOptions(batch_size=batch_size, epochs=epochs, progress=False, device="cpu", seed=seed,
                                 **training),
        parameter_groups=model.parameter_groups,
        modules=[model],
    )
    history = trainer.fit(train, test)
    return trainer, history, model


@pytest.mark.parametrize(
    "schedule",
    [Constant(), InverseSqrtIteration(), InverseSqrtEpoch(), Warmup(warmup_iterations=5, then="inv_sqrt_iteration")],
    ids=["constant", "inv_sqrt_iteration", "inv_sqrt_epoch", "warmup"],
)
def test_trainer_applies_lr_times_schedule_factor(schedule):
    lr = 0.05
    trainer, history, _ = _train_linear_vae(schedule, lr=lr)
    rows = history.metrics
    per_epoch = 32 // 8
    assert [r["step"] for r in rows] == list(range(1, 3 * per_epoch + 1))
    assert [r["epoch"] for r in rows] == [(n - 1) // per_epoch for n in range(1, 3 * per_epoch + 1)]
    expected = [lr * schedule.factor(n, (n - 1) // per_epoch) for n in range(1, 3 * per_epoch + 1)]
    assert [r["lr"] for r in rows] == pytest.approx(expected, rel=1e-12)
    # what the optimizer really used at each step, in every parameter group
    applied = trainer.optimizer.applied
    assert len(applied) == len(rows)
    for n, lrs in enumerate(applied, start=1):
        assert lrs == pytest.approx([expected[n - 1]] * len(lrs), rel=1e-12)
    # recorded gradient norms per group (LinearVAE: phi and theta)
    assert {"minibatch_grad_norm_sq_phi", "minibatch_grad_norm_sq_theta"} <= set(rows[0])
    for r in rows:
        assert r["minibatch_grad_norm_sq"] == pytest.approx(r["minibatch_grad_norm_sq_phi"] + r["minibatch_grad_norm_sq_theta"], rel=1e-5)


def test_inv_sqrt_schedules_match_their_formulas_in_the_trainer():
    _, it_hist, _ = _train_linear_vae(InverseSqrtIteration(), lr=0.1)
    assert [r["lr"] for r in it_hist.metrics] == pytest.approx(
        [0.1 / math.sqrt(r["step"]) for r in it_hist.metrics], rel=1e-12
    )
    _, ep_hist, _ = _train_linear_vae(InverseSqrtEpoch(), lr=0.1)
    assert [r["lr"] for r in ep_hist.metrics] == pytest.approx(
        [0.1 / math.sqrt(r["epoch"] + 1) for r in ep_hist.metrics], rel=1e-12
    )
    assert sorted({r["lr"] for r in ep_hist.metrics}, reverse=True) == pytest.approx(
        [0.1, 0.1 / math.sqrt(2), 0.1 / math.sqrt(3)]
    )


def test_lr_with_record_every_and_iterations_limit():
    """Rows recorded every 3rd step and at the last step still carry that step's lr."""
    _, history, _ = _train_linear_vae(InverseSqrtIteration(), lr=0.2, epochs=5, record_every=3, iterations=10)
    assert [r["step"] for r in history.metrics] == [3, 6, 9, 10]
    assert [r["lr"] for r in history.metrics] == pytest.approx([0.2 / math.sqrt(n) for n in (3, 6, 9, 10)])


# -- plain SGD moves the parameters by exactly -lr * grad --------------------------------------
def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def test_sgd_step_is_minus_lr_times_gradient():
    lr, seed = 0.05, 3
    # the model's initial parameters, as _train_linear_vae will create them
    torch.manual_seed(seed)
    initial = _snapshot(LinearVAE(INFO, latent_dim=1))
    trainer, history, model = _train_linear_vae(
        Constant(), lr=lr, seed=seed, epochs=1, iterations=1, optimizer=SGD(lr=lr)
    )
    assert trainer.step == 1
    after = _snapshot(model)

    # 1. against the gradient the trainer left on the parameters (the zero_grad comes before
    #    backward, so .grad is the gradient of the one step taken)
    grads = {k: p.grad.detach().clone() for k, p in model.named_parameters()}
    for k in initial:
        torch.testing.assert_close(after[k], initial[k] - lr * grads[k], rtol=1e-6, atol=1e-7)
        assert not torch.equal(after[k], initial[k])

    # 2. against a gradient computed independently: same initial parameters, same batch (the
    #    loader's shuffle is seeded by the training seed) and the same random stream (fit seeds
    #    Pyro, then creating the loader's iterator draws one number from the global generator)
    torch.manual_seed(seed)
    fresh = LinearVAE(INFO, latent_dim=1)
    train, _ = _linear_vae_data(seed)
    loss = bbvi_kit.BBVILoss(fresh.model, fresh.guide, ELBO(num_particles=1), Pathwise())
    pyro.set_rng_seed(seed)
    loader = batch_loader(train, 8, shuffle=True, generator=torch.Generator().manual_seed(seed))
    (x,) = next(iter(loader))
    result = loss(x)
    result.surrogate.backward()
    for k, p in fresh.named_parameters():
        torch.testing.assert_close(p.grad, grads[k], rtol=1e-5, atol=1e-7)
    assert history.metrics[0]["loss"] == pytest.approx(result.loss.item(), rel=1e-6)
    # and the recorded squared gradient norm is that gradient's
    total = sum((g.double() ** 2).sum().item() for g in grads.values())
    assert history.metrics[0]["minibatch_grad_norm_sq"] == pytest.approx(total, rel=1e-5)


# -- the same checks with a Pyro-native guide whose parameters the trainer discovers -----------
def _pyro_native_trainer(lr: float, guide_kind: str):
    """Gaussian mean model: x_i ~ N(mu, 1), mu ~ N(0, 10); the guide's parameters are found
    by the trainer itself (no parameter_groups)."""
    pyro.clear_param_store()
    data = TensorDataset(torch.linspace(-1.0, 3.0, 16).unsqueeze(-1))

    def model(x):
        mu = pyro.sample("mu", dist.Normal(torch.zeros(1), 10.0).to_event(1))
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("x", dist.Normal(mu, 1.0).to_event(1), obs=x)

    if guide_kind == "autonormal":
        guide = pyro.infer.autoguide.AutoNormal(model)
    else:
        def guide(x):
            loc = pyro.param("loc", torch.tensor([0.5]))
            scale = pyro.param("scale", torch.tensor([0.3]), constraint=dist.constraints.positive)
            pyro.sample("mu", dist.Normal(loc, scale).to_event(1))

    trainer = Trainer(
        model, guide, objective=ELBO(num_particles=2), estimator=Pathwise(), optimizer=SGD(lr=lr),
        training=TrainingOptions(batch_size=16, epochs=1, progress=False, device="cpu"),
    )
    return trainer, data


def _check_one_sgd_step(guide_kind: str):
    lr = 0.01
    trainer, data = _pyro_native_trainer(lr, guide_kind)
    trainer.loss(*data.tensors)  # creates the guide's parameters (a throwaway pass)
    store = pyro.get_param_store()
    before = {k: v.detach().clone() for k, v in store.named_parameters()}
    history = trainer.fit(data)
    params = dict(store.named_parameters())
    assert set(params) == set(before) and params
    total = 0.0
    for k, p in params.items():
        assert p.grad is not None, k
        total += (p.grad.double() ** 2).sum().item()
        torch.testing.assert_close(p.detach(), before[k] - lr * p.grad, rtol=1e-6, atol=1e-7)
    assert history.metrics[0]["minibatch_grad_norm_sq"] == pytest.approx(total, rel=1e-5)


def test_sgd_step_with_a_param_store_guide():
    _check_one_sgd_step("pyro.param")


@pytest.mark.filterwarnings("error:optimizer contains a parameter group with duplicate parameters")
def test_sgd_step_with_an_autoguide():
    """Regression: an autoguide (a PyroModule) reaches each parameter twice, as a param site's
    ``.unconstrained()`` and as a module parameter; listed twice, torch stepped it twice (SGD
    moved by -2 lr grad) and minibatch_grad_norm_sq counted its gradient twice."""
    _check_one_sgd_step("autonormal")


@pytest.mark.filterwarnings("error:optimizer contains a parameter group with duplicate parameters")
def test_discovered_groups_hold_each_parameter_once():
    trainer, data = _pyro_native_trainer(0.01, "autonormal")
    trainer.fit(data)
    params = trainer.parameters
    assert len(params) == len({id(p) for p in params}), f"{len(params)} listed, {len({id(p) for p in params})} distinct"
