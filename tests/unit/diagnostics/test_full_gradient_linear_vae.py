"""The full-data gradient estimate of a real run against the exact gradient: a Linear VAE on the
embedded digits, whose ELBO has a closed form.

With q(z|x) = N(m, diag D), m = V(x - mu), and p(x|z) = N(W z + mu, sigma^2 I), p(z) = N(0, I):

    ELBO(x) = -d/2 log(2 pi sigma^2) - (||x - mu - W m||^2 + sum_j D_j ||W_j||^2) / (2 sigma^2)
              - 1/2 sum_j (D_j + m_j^2 - 1 - log D_j),

so the exact full-data loss L = -mean ELBO and its gradient come from autograd. A test-only
diagnostic records ||grad L||^2 after every step; the ``full_gradient`` diagnostic (stratified)
measures the same quantity at its own steps from sampled passes. The two must agree within the
estimator's interval, the stratified running average must cover the exact running average, and
the report's verdict must be about the full-data series.
"""

from __future__ import annotations

import html
import math
import re
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

from bbvi_kit.diagnostics.base import Diagnostic, DiagnosticContext
from bbvi_kit.diagnostics.full_gradient import interval_multiplier
from bbvi_kit.recipe import resolve
from bbvi_kit.registry import register_diagnostic
from bbvi_kit.report import build_report
from bbvi_kit.runner import run_recipe
from bbvi_kit.runs import read_csv

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXACT = f"exact_linear_vae_gradient_{uuid.uuid4().hex[:8]}"


def exact_loss(vae: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """-mean ELBO of the Linear VAE over the rows of ``x`` (module docstring), in nats per example."""
    variances, sigma_sq = vae.log_D.exp(), (2 * vae.log_sigma).exp()
    means = (x - vae.mu) @ vae.V.T
    residual = x - vae.mu - means @ vae.W.T
    expected_loglik = (-0.5 * x.shape[1] * torch.log(2 * math.pi * sigma_sq)
                       - (residual.square().sum(1) + (vae.W.square() * variances).sum()) / (2 * sigma_sq))
    kl = 0.5 * (variances + means.square() - 1 - vae.log_D).sum(1)
    return -(expected_loglik - kl).mean()


@register_diagnostic(EXACT)
class ExactGradient(Diagnostic):
    """||grad L||^2 of the exact full-data loss, from the Linear VAE's closed-form ELBO."""

    def measure(self, context: DiagnosticContext) -> dict[str, float]:
        (vae,) = context.training.modules
        (args,) = list(context.batches(context.train, len(context.train)))
        x = args[0].flatten(1).double()
        params = [p for group in context.training.groups.values() for p in group]
        with torch.enable_grad():
            doubled = {name: p.detach().double().requires_grad_() for name, p in vae.named_parameters()}
            view = type("View", (), doubled)
            grads = torch.autograd.grad(exact_loss(view, x), [doubled[n] for n, p in vae.named_parameters()
                                                             if any(p is q for q in params)])
        return {"exact_grad_norm_sq": float(sum(g.square().sum() for g in grads))}


@pytest.fixture(scope="module")
def linear_vae_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("linear_vae")
    recipe = resolve({
        "name": "linear_exact",
        "model": {"name": "linear_vae", "latent_dim": 4, "ppca_reference": False},
        "data": {"name": "digits"},
        "objective": {"name": "elbo", "num_particles": 1},
        "estimator": {"name": "pathwise"},
        "optimizer": {"name": "adam", "lr": 0.02},
        "training": {"batch_size": 64, "epochs": 20, "iterations": 240, "seed": 0, "device": "cpu", "progress": False,
                     "eval_every": None},
        "diagnostics": [
            {"name": "full_gradient", "every": 20, "schedule": "stratified", "num_estimates": 8, "batch_size": 2048},
            {"name": EXACT, "every": 1},
        ],
    })
    history = run_recipe(recipe, out_root=out)
    return Path(history.run_dir)


def test_the_recorded_estimate_agrees_with_the_exact_gradient(linear_vae_run: Path) -> None:
    full = read_csv(linear_vae_run / "diagnostics" / "full_gradient.csv")
    exact = {int(r["step"]): r["exact_grad_norm_sq"] for r in read_csv(linear_vae_run / "diagnostics" / f"{EXACT}.csv")}
    assert len(exact) == 240 and len(full) >= 15
    t = interval_multiplier(8)
    inside = [abs(r["full_grad_norm_sq"] - exact[int(r["step"])]) <= t * r["full_grad_norm_sq_se"] for r in full]
    assert sum(inside) >= 0.8 * len(full), [(r["step"], r["full_grad_norm_sq"], r["full_grad_norm_sq_se"],
                                            exact[int(r["step"])]) for r in full]
    # relative errors scatter around zero: no bias
    relative = np.array([r["full_grad_norm_sq"] / exact[int(r["step"])] - 1 for r in full])
    assert abs(np.median(relative)) < 0.1
    # the stratified running average covers the exact average over all iterations 1..n
    exact_series = np.array([exact[n] for n in range(1, 241)])
    for r in full[len(full) // 2:]:
        end = int(r["block_end"])
        truth = exact_series[:end].mean()
        assert abs(r["full_grad_norm_sq_avg"] - truth) <= 3 * r["full_grad_norm_sq_avg_se"], (end, truth, r)
    # blocks tile 1..240: widths 1, 1, 2, 4, 8, 16, then 20
    assert [(int(r["block_start"]), int(r["block_end"])) for r in full[:7]] == [
        (1, 1), (2, 2), (3, 4), (5, 8), (9, 16), (17, 32), (33, 52)]
    assert int(full[-1]["block_end"]) == 240
    assert all(r["block_start"] <= r["step"] <= r["block_end"] for r in full)


def test_the_report_verdict_is_about_the_full_data_series(linear_vae_run: Path) -> None:
    page = build_report(linear_vae_run)
    texts = [html.unescape(t) for t in re.findall(r'<li class="finding \w+" data-topic="rate">(.*?)</li>', page, re.S)]
    full = [t for t in texts if "full-data ‖∇L‖² (full_gradient" in t or "full-data ‖∇L‖² is zero" in t
            or "full-data ‖∇L‖² was measured" in t]
    minibatch = [t for t in texts if t.startswith("The mini-batch ‖g‖²")]
    assert full and minibatch, texts
    # the running average the theorems bound is quoted with its standard error
    last = read_csv(linear_vae_run / "diagnostics" / "full_gradient.csv")[-1]
    assert f"is {last['full_grad_norm_sq_avg']:.3g} ± {last['full_grad_norm_sq_avg_se']:.3g} at n = 240" in full[0]
