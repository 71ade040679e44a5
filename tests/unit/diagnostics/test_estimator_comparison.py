"""The snr and gradient_noise diagnostics comparing estimators on the same parameters and batch
(``estimators: [...]``, :mod:`bbvi_kit.diagnostics.variants`): against a closed form (STL's
encoder gradient vanishes at the exact posterior), on common random numbers, and against the
scaling laws of the literature measured on a small VAE at fixed parameters."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyro
import pytest
import torch
from torch.utils.data import TensorDataset

from bbvi_kit import ELBO, IWAE, SGD, DataInfo, Pathwise, Trainer, TrainingOptions
from bbvi_kit.diagnostics.base import Diagnostic, DiagnosticContext
from bbvi_kit.diagnostics.noise import GradientNoise, GradientSNR
from bbvi_kit.errors import InputError
from bbvi_kit.objectives.base import Objective
from bbvi_kit.ppca import fit_ppca
from bbvi_kit_plugins.linear_vae import LinearVAE
from tests.unit.diagnostics.test_noise import NOISE_COLUMNS, Conjugate, context_for, trainer_for


def test_stl_has_no_encoder_noise_at_the_exact_posterior_and_the_same_decoder_gradient() -> None:
    """Conjugate model, encoder at the exact posterior N((mu + x)/2, 1/2): the STL gradient in phi
    is (d/dz log p(x, z) - d/dz log q(z)) dz/dphi = 0 for every draw (Roeder et al. 2017), while
    the pathwise one keeps its latent noise mean(b^2) / (B K); theta's gradient is the same
    function of the same draws under both, so its columns agree to rounding."""
    net = Conjugate(mu=0.6, m=0.3, c=0.5, s=math.sqrt(0.5))
    trainer = trainer_for(net, ELBO(num_particles=2), batch_size=8)
    torch.manual_seed(0)
    out = GradientNoise(estimators=["stl", "pathwise"]).measure(context_for(trainer))
    exact = net.exact_noise(torch.linspace(-1.0, 3.0, 64), batch_size=8, particles=2)
    assert out["grad_var_latent_phi"] > 0.3 * exact["grad_var_latent_phi"]
    for column in ("grad_var_latent_phi", "grad_var_batch_phi", "grad_mean_norm_sq_phi"):
        assert abs(out[f"{column}_stl"]) < 1e-12, column
    for column in [f"{c}_theta" for c in NOISE_COLUMNS] + NOISE_COLUMNS:
        assert out[f"{column}_pathwise"] == pytest.approx(out[column], rel=1e-12, abs=1e-15), column
    for column in (f"{c}_theta" for c in NOISE_COLUMNS):
        assert out[f"{column}_stl"] == pytest.approx(out[column], rel=1e-9), column


def small_linear_vae_near_its_optimum() -> tuple[Trainer, TensorDataset]:
    """A linear VAE (the linear_vae plugin) on 5-dimensional data with 2 latent dims: decoder at
    the exact pPCA maximum likelihood, encoder at 0.9 times the exact posterior's mean map and
    its variance 1.22 times the exact one (a good, inexact encoder, as in Rainforth et al.)."""
    d, q = 5, 2
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, q, generator=g) @ torch.randn(q, d, generator=g) + 0.5 * torch.randn(256, d, generator=g)
    fit = fit_ppca(x.double(), q)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    vae = LinearVAE(DataInfo(name="toy", shape=(d,), num_train=256, num_test=0), latent_dim=q)
    with torch.no_grad():
        w, noise = fit.W.float(), float(fit.sigma2)
        m = w.T @ w + noise * torch.eye(q)  # diagonal: pPCA's columns are orthogonal
        vae.W.copy_(w)
        vae.mu.copy_(fit.mean.float())
        vae.log_sigma.fill_(0.5 * math.log(noise))
        vae.V.copy_(0.9 * torch.linalg.solve(m, w.T))
        vae.log_D.copy_(torch.log(noise / torch.diagonal(m)) + 0.2)
    trainer = Trainer(vae.model, vae.guide, objective=IWAE(num_particles=4), estimator=Pathwise(),
                      optimizer=SGD(lr=0.01), parameter_groups=vae.parameter_groups, modules=[vae],
                      training=TrainingOptions(batch_size=8, progress=False, device="cpu"), max_plate_nesting=1)
    return trainer, TensorDataset(x)


def slope(ks: list[int], values: list[float]) -> float:
    return float(np.polyfit(np.log(ks), np.log(values), 1)[0])


def test_the_snr_laws_of_pathwise_and_dreg_on_a_small_vae() -> None:
    """Under IWAE, the encoder's SNR falls as 1/sqrt(K) with the pathwise gradient (Rainforth
    et al., ICML 2018) and rises as sqrt(K) with DReG (Tucker et al., ICLR 2019); the decoder's
    rises as sqrt(K) under both. One snr measurement at fixed parameters, both estimators and
    K in {4, 16, 64} on the same batch. Measured: snr_norm (the squared ratio) slopes -0.99
    (pathwise) and +0.93 (DReG); per-coordinate SNR(phi) under DReG +0.47, SNR(theta) +0.51 and
    +0.48. (The per-coordinate pathwise SNR(phi) flattens towards the plug-in floor
    sqrt(2 / (pi M)) = 0.056 at M = 200 draws, so its fall is checked on the norm ratio.)"""
    trainer, train = small_linear_vae_near_its_optimum()
    ks = [4, 16, 64]
    torch.manual_seed(0)
    out = GradientSNR(num_draws=200, batch_size=8, estimators=["pathwise", "dreg"], num_particles=ks).measure(
        DiagnosticContext(trainer.training_state, train, None, step=0, epoch=0))

    def series(column: str, estimator: str) -> list[float]:
        return [out[f"{column}_{estimator}_K{k}"] for k in ks]

    assert -1.4 < slope(ks, series("snr_norm_phi", "pathwise")) < -0.6
    assert 0.6 < slope(ks, series("snr_norm_phi", "dreg")) < 1.4
    assert 0.3 < slope(ks, series("snr_phi", "dreg")) < 0.7
    pathwise_phi = series("snr_phi", "pathwise")
    assert pathwise_phi[0] > pathwise_phi[1] > pathwise_phi[2]
    for estimator in ("pathwise", "dreg"):
        assert 0.3 < slope(ks, series("snr_theta", estimator)) < 0.7, estimator
    assert all(d > 10 * p for d, p in zip(series("snr_phi", "dreg"), pathwise_phi))
    # the run's own measurement (pathwise, K = 4) is the pathwise variant at K = 4: same batch, same draws
    assert out["snr_phi"] == out["snr_phi_pathwise_K4"] and out["snr_phi_K4"] == out["snr_phi"]


def trainer_with(net: Conjugate, objective: Objective, diagnostics: dict[str, Diagnostic] | None,
                 **training: Any) -> Trainer:
    return Trainer(net.model, net.guide, objective=objective, estimator=Pathwise(), optimizer=SGD(lr=0.01),
                   training=TrainingOptions(batch_size=8, progress=False, device="cpu", **training),
                   parameter_groups=net.groups, modules=[net], max_plate_nesting=1, diagnostics=diagnostics)


def test_an_estimator_the_objective_cannot_take_is_one_line_naming_the_key(tmp_path) -> None:  # noqa: ANN001
    from bbvi_kit.recipe import load_recipe

    path = tmp_path / "r.yaml"
    path.write_text("model: {name: gaussian_vae}\nobjective: {name: elbo}\n"
                    "diagnostics: [{name: snr, estimators: [pathwise, dreg]}]\n")
    with pytest.raises(InputError, match=r"^.*r\.yaml: diagnostics\.0\.estimators: estimator dreg needs objective iwae"):
        load_recipe(path)
    path.write_text("model: {name: gaussian_vae}\ndiagnostics: [{name: snr, estimators: [split]}]\n")
    with pytest.raises(InputError, match=r"diagnostics\.0\.estimators: estimator split needs options \(phi: Field required\)"):
        load_recipe(path)
    path.write_text("model: {name: gaussian_vae}\ndiagnostics: [{name: gradient_noise, estimators: [drag]}]\n")
    with pytest.raises(InputError, match=r"diagnostics\.0\.estimators: unknown estimator plugin 'drag'.*did you mean 'dreg'"):
        load_recipe(path)
    with pytest.raises(InputError, match=r"^diagnostics\.snr\.estimators: estimator dreg needs objective iwae"):
        trainer_with(Conjugate(mu=0.0, m=0.2, c=0.3, s=0.4), ELBO(), {"snr": GradientSNR(estimators=["dreg"])})


def test_a_run_records_the_comparison_columns_without_changing_its_trajectory() -> None:
    net_args = dict(mu=0.0, m=0.2, c=0.3, s=0.4)
    x = torch.linspace(-1.0, 3.0, 32)

    def fit(diagnostics: dict[str, Diagnostic] | None) -> tuple[list, dict]:
        pyro.clear_param_store()
        trainer = trainer_with(Conjugate(**net_args), IWAE(num_particles=2), diagnostics, epochs=1, seed=0)
        history = trainer.fit(TensorDataset(x), TensorDataset(x[:8]))
        return history.metrics, history.diagnostics

    metrics, diagnostics = fit({"snr": GradientSNR(num_draws=4, estimators=["stl", "dreg"])})
    assert [r["loss"] for r in metrics] == [r["loss"] for r in fit(None)[0]]
    row = diagnostics["snr"][-1]
    assert [c for c in row if c.startswith("snr_phi")] == ["snr_phi", "snr_phi_stl", "snr_phi_dreg"]


def test_the_report_states_which_estimator_gives_the_encoder_the_most_signal() -> None:
    from bbvi_kit.results.table import Table

    row = {"step": 10.0, "snr_phi": 0.3, "snr_theta": 2.0, "snr_phi_pathwise": 0.3, "snr_phi_dreg": 1.7,
           "snr_phi_stl": 1.2, "snr_phi_dreg_K4": 9.0, "snr_phi_K4": 0.2}
    table = Table({column: np.array([value]) for column, value in row.items()})
    (plain, compared) = GradientSNR.findings(table, run=None)  # type: ignore[arg-type]
    assert plain.level == "warning"
    assert compared.text == ("at n = 10, SNR(φ) by estimator on the same parameters and draws: pathwise 0.3, "
                             "dreg 1.7, stl 1.2; dreg gives the encoder the most signal.")
    assert compared.numbers["snr_phi_dreg"] == 1.7 and "snr_phi_dreg_K4" not in compared.numbers
