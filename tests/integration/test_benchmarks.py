"""The benchmarks compare like with like, and ``python -m benchmarks`` keeps working.

The hand-written baseline must compute what the engine computes: for one seed its losses are
bit-identical to :class:`bbvi_kit.BBVILoss` on the Gaussian VAE plugin's Pyro model and guide,
and its gradients agree. No timing is asserted anywhere (speed lives in benchmarks/RESULTS.md).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyro
import pytest
import torch

from benchmarks import handwritten
from benchmarks.training_step import CASES, build_vae, handwritten_loss, make_data, smoke
from bbvi_kit import ELBO, IWAE, BBVILoss, Pathwise, ScoreFunction
from tests.support import REPO

CPU_CASES = [c for c in CASES if not c.cuda_only]


def engine_loss(case, vae) -> BBVILoss:  # noqa: ANN001
    objective = (IWAE if case.objective == "iwae" else ELBO)(num_particles=case.num_particles)
    estimator = Pathwise() if case.estimator == "pathwise" else ScoreFunction()
    return BBVILoss(vae.model, vae.guide, objective, estimator, max_plate_nesting=1)


@pytest.mark.parametrize("case", [smoke(c) for c in CPU_CASES], ids=[c.name for c in CPU_CASES])
def test_the_hand_written_loss_is_the_engine_loss_bit_for_bit(case) -> None:  # noqa: ANN001
    vae = build_vae(case)
    x = make_data(case, 1)
    loss = engine_loss(case, vae)

    pyro.set_rng_seed(7)
    engine = loss(x)
    engine.surrogate.backward()
    engine_grads = [p.grad.clone() for p in vae.parameters()]
    vae.zero_grad(set_to_none=True)

    pyro.set_rng_seed(7)
    mine = handwritten_loss(case)(vae, x)
    mine.backward()
    mine_grads = [p.grad.clone() for p in vae.parameters()]

    # The surrogates are the same number; for the score function the reported loss is the bound.
    assert torch.equal(engine.surrogate.detach(), mine.detach())
    for a, b in zip(engine_grads, mine_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_the_hand_written_log_weights_are_the_pyro_model_s() -> None:
    """A Gaussian likelihood too (the Deep Gaussian VAE), with images as events."""
    case = smoke(CASES[-2])  # conv
    vae = build_vae(case)
    vae.options.likelihood = "gaussian"
    x = make_data(case, 1)
    pyro.set_rng_seed(3)
    engine = engine_loss(case, vae)(x)
    pyro.set_rng_seed(3)
    assert torch.equal(engine.loss, handwritten.elbo_loss(vae, x).detach())


@pytest.mark.slow
def test_the_benchmark_command_writes_its_results(tmp_path: Path) -> None:
    """``python -m benchmarks --smoke`` runs every group on tiny sizes and writes the report."""
    import subprocess

    out = tmp_path / "RESULTS.md"
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--smoke", "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    for case in CPU_CASES:
        assert case.title.split(",")[0] in text
    assert "bbvi-kit / hand-written" in text and "K_eval" in text and "JPEG" in text
    assert "Estimators: STL, DReG, analytic KL, split and Rao-Blackwellisation" in text
    results = json.loads(out.with_suffix(".json").read_text())
    ratios = [r["engine_vs_handwritten"] for r in results["training_step"]]
    assert len(ratios) == len(CPU_CASES) and all(r > 0 and r == r for r in ratios)
    first = results["training_step"][0]["peak_mib"]  # memory, in a child process: the first case under --smoke
    assert len(first) == 3 and all(m["rss_mib"] == m["rss_mib"] for m in first.values())
    # --only measures one group again and keeps the others' figures, each with its date
    earlier = json.loads(out.with_suffix(".json").read_text())
    earlier["date"] = "2026-01-01"
    out.with_suffix(".json").write_text(json.dumps(earlier))
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--smoke", "--only", "heldout", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    merged = json.loads(out.with_suffix(".json").read_text())
    assert merged["training_step"] == earlier["training_step"] and merged["estimators"] == earlier["estimators"]
    assert merged["dates"]["heldout"] == merged["date"] != "2026-01-01" == merged["dates"]["training_step"]
    assert "bbvi-kit / hand-written" in out.read_text() and "K_eval" in out.read_text()
