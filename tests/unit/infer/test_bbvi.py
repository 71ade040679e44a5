"""The public step, :class:`bbvi_kit.BBVI`, against Pyro's own SVI and Trace_ELBO at the same seed."""

from __future__ import annotations

import copy
import math
import re

import pyro
import pyro.distributions as dist
import pytest
import torch

import bbvi_kit as bk
from tests.support import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")


def model(x: torch.Tensor) -> None:
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)


def guide(x: torch.Tensor) -> None:
    w = pyro.param("w", torch.tensor(0.3))
    s = pyro.param("s", torch.tensor(0.8), constraint=dist.constraints.positive)
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(w * x, s).to_event(1))


@pytest.fixture(autouse=True)
def _fresh_param_store() -> None:
    pyro.clear_param_store()


def test_readme_loop_takes_the_steps_of_pyros_svi_and_finds_the_exact_posterior() -> None:
    bbvi_block, svi_block = [b for b in re.findall(r"```python\n(.*?)```", README, flags=re.S)
                             if "bk.BBVI(" in b or "pyro.infer.SVI(" in b]
    namespace: dict = {}
    exec(compile(bbvi_block.replace("print(", "_ = ("), "README-bbvi", "exec"), namespace)
    ours = {name: pyro.param(name).item() for name in ("w", "s")}
    assert isinstance(namespace["result"], bk.StepResult) and not namespace["result"].skipped
    exec(compile(svi_block.replace("print(", "_ = ("), "README-svi", "exec"), namespace)
    theirs = {name: pyro.param(name).item() for name in ("w", "s")}
    # Same draws, Adam is invariant to the loss's scale (per example here, summed in Pyro) up to eps.
    assert ours == pytest.approx(theirs, abs=1e-4)
    assert ours["w"] == pytest.approx(0.5, abs=0.05) and ours["s"] == pytest.approx(math.sqrt(0.5), abs=0.05)


def test_step_loss_and_norms_are_trace_elbos_per_example_at_the_same_seed() -> None:
    x = torch.randn(16, 2)
    pyro.set_rng_seed(3)
    elbo = pyro.infer.Trace_ELBO().differentiable_loss(model, guide, x) / len(x)
    params = [pyro.param("w").unconstrained(), pyro.param("s").unconstrained()]
    grads = torch.autograd.grad(elbo, params)
    expected_norm = sum(g.pow(2).sum() for g in grads)
    pyro.set_rng_seed(3)
    bbvi = bk.BBVI(model, guide, bk.ELBO(), bk.Pathwise(), bk.SGD(lr=0.1), device="cpu")
    before = [p.detach().clone() for p in params]
    result = bbvi.step(x)
    torch.testing.assert_close(result.loss, elbo.detach())
    torch.testing.assert_close(result.norms["total"], expected_norm)
    torch.testing.assert_close(result.norms["phi"], expected_norm)  # both parameters are the guide's
    assert result.lr == 0.1 and not result.skipped and bbvi.num_steps == 1
    for p, old, g in zip(params, before, grads):  # plain SGD: theta <- theta - lr g
        torch.testing.assert_close(p.detach(), old - 0.1 * g)


def test_a_nonfinite_step_is_skipped_and_changes_nothing() -> None:
    bbvi = bk.BBVI(model, guide, bk.ELBO(), bk.Pathwise(), bk.Adam(lr=0.1), device="cpu", on_nonfinite="skip")
    bbvi.step(torch.randn(8, 2))
    before = {name: pyro.param(name).detach().clone() for name in ("w", "s")}
    nan_batch = torch.full((8, 2), math.nan)
    with pyro.validation_enabled(False):
        result = bbvi.step(nan_batch)
    assert result.skipped and "non-finite loss or gradient at step 2" in result.problem
    for name, value in before.items():
        assert torch.equal(pyro.param(name).detach(), value)
    with pyro.validation_enabled(True):  # a refused value is a skipped step under skip ...
        assert bbvi.step(nan_batch).skipped
    stopping = bk.BBVI(model, guide, bk.ELBO(), bk.Pathwise(), bk.Adam(lr=0.1), device="cpu")
    with pyro.validation_enabled(True), pytest.raises(bk.TrainingError, match="step 1 .*model or guide failed"):
        stopping.step(nan_batch)  # ... and stops the loop under stop


def test_evaluate_loss_is_the_bound_without_an_update() -> None:
    x = torch.randn(32, 2)
    bbvi = bk.BBVI(model, guide, bk.ELBO(num_particles=4000), bk.Pathwise(), bk.Adam(lr=0.1), device="cpu")
    value = bbvi.evaluate_loss(x)
    assert pyro.param("w").item() == pytest.approx(0.3) and bbvi.num_steps == 0
    # Closed form: E_q[log p(x, z) - log q(z)] for Gaussians, per example.
    w, s = 0.3, 0.8
    mean = w * x
    expected_log_p_z = -0.5 * (mean.pow(2) + s**2).sum(-1) - math.log(2 * math.pi)
    expected_log_p_x = -0.5 * ((x - mean).pow(2) + s**2).sum(-1) - math.log(2 * math.pi)
    entropy = 2 * (0.5 * math.log(2 * math.pi * math.e) + math.log(s))
    exact = -(expected_log_p_z + expected_log_p_x + entropy).mean().item()
    assert value == pytest.approx(exact, abs=0.05)


def test_state_dict_round_trip_continues_the_same_steps() -> None:
    batches = list(torch.randn(64, 2).split(16))
    first = bk.BBVI(model, guide, bk.IWAE(num_particles=3), bk.ScoreFunction(baseline="running_mean"),
                    bk.Adam(lr=0.05), device="cpu")
    for x in batches[:2]:
        first.step(x)
    state = copy.deepcopy(first.state_dict())  # (the optimizer's state is shared, as in torch)
    pyro.set_rng_seed(9)
    expected = [first.step(x).loss.item() for x in batches[2:]]
    pyro.clear_param_store()
    second = bk.BBVI(model, guide, bk.IWAE(num_particles=3), bk.ScoreFunction(baseline="running_mean"),
                     bk.Adam(lr=0.05), device="cpu")
    second.load_state_dict(state, [(batches[0],)])  # batches of model arguments
    assert second.num_steps == 2
    pyro.set_rng_seed(9)
    assert [second.step(x).loss.item() for x in batches[2:]] == expected
