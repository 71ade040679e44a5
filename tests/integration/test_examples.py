"""The runnable examples under examples/: run in-process through ``main(argv)`` and as scripts."""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.support import REPO

LOGREG = REPO / "examples" / "bayesian_logistic_regression.py"


def _load_example(path: Path):
    spec = importlib.util.spec_from_file_location(f"bbvi_kit_example_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def logreg():
    return _load_example(LOGREG)


# (estimator, optimizer, iterations, accuracy to beat). Score-function gradients are much
# noisier: with Adam the loss first rises for a few dozen steps before it falls, so those runs
# get more (cheap) iterations. Ten classes: chance accuracy is 0.1. Measured at seeds 0-2:
# pathwise >= 0.93 after 60 steps, score >= 0.79 after 200.
COMBINATIONS = [
    ("pathwise", "adam", 60, 0.8),
    ("pathwise", "sgd", 60, 0.8),
    ("score", "adam", 250, 0.6),
    ("score", "sgd", 250, 0.6),
]


@pytest.mark.parametrize(("estimator", "optimizer", "iterations", "min_accuracy"), COMBINATIONS,
                         ids=[f"{e}-{o}" for e, o, _, _ in COMBINATIONS])
def test_logreg_example_learns(logreg, estimator, optimizer, iterations, min_accuracy, capsys):
    result = logreg.main(
        ["--estimator", estimator, "--optimizer", optimizer, "--iterations", str(iterations), "--seed", "0"]
    )
    history = result["history"]
    rows = history.metrics
    assert len(rows) == iterations
    for column in ("loss", "minibatch_grad_norm_sq", "minibatch_grad_norm_sq_avg", "lr", "step"):
        assert column in rows[0], f"history column {column!r} missing: {sorted(rows[0])}"
    # The model has no parameters of its own: all trainable parameters are the guide's (phi).
    assert "minibatch_grad_norm_sq_phi" in rows[0] and "minibatch_grad_norm_sq_theta" not in rows[0]
    assert [r["step"] for r in rows] == list(range(1, iterations + 1))
    losses = [r["loss"] for r in rows]
    assert all(math.isfinite(v) for v in losses)
    assert all(math.isfinite(r["minibatch_grad_norm_sq"]) and r["minibatch_grad_norm_sq"] >= 0 for r in rows)
    last10 = sum(losses[-10:]) / 10
    assert last10 < losses[0], f"loss did not go down: first {losses[0]:.4g}, mean of last 10 {last10:.4g}"
    # the running average is the mean of the recorded squared norms (record_every = 1)
    running = sum(r["minibatch_grad_norm_sq"] for r in rows) / len(rows)
    assert rows[-1]["minibatch_grad_norm_sq_avg"] == pytest.approx(running, rel=1e-4)

    # The returned final metrics are those of the last recorded row and the last evaluation.
    for key in ("loss", "minibatch_grad_norm_sq", "minibatch_grad_norm_sq_avg", "minibatch_grad_norm_sq_phi"):
        assert result[key] == rows[-1][key]
    assert result["test_loss"] == history.evals[-1]["test_loss"]
    assert history.evals[-1]["step"] == iterations
    assert math.isfinite(result["test_loss"])
    assert result["run_dir"] is None and history.run_dir is None
    assert result["test_accuracy"] > min_accuracy, result["test_accuracy"]

    printed = capsys.readouterr().out
    for key in ("loss", "minibatch_grad_norm_sq", "minibatch_grad_norm_sq_avg", "minibatch_grad_norm_sq_phi", "test_loss", "test_accuracy"):
        assert key in printed


def test_logreg_example_is_reproducible(logreg):
    """main() clears the param store and seeds everything: two runs in one process agree."""
    a = logreg.main(["--iterations", "5", "--quiet"])
    b = logreg.main(["--iterations", "5", "--quiet"])
    assert [r["loss"] for r in a["history"].metrics] == [r["loss"] for r in b["history"].metrics]
    assert a["test_accuracy"] == b["test_accuracy"]


@pytest.mark.slow
def test_logreg_example_script_writes_run_directory(tmp_path):
    out = tmp_path / "runs"
    proc = subprocess.run(
        [sys.executable, str(LOGREG), "--iterations", "20", "--out", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dirs = [p for p in (out / "logreg_example").iterdir() if p.is_dir()]
    assert len(run_dirs) == 1
    run_dir = run_dirs[0]
    metrics = (run_dir / "metrics.csv").read_text().splitlines()
    header = metrics[0].split(",")
    for column in ("step", "loss", "minibatch_grad_norm_sq", "minibatch_grad_norm_sq_avg", "lr"):
        assert column in header
    assert len(metrics) == 1 + 20
    assert (run_dir / "eval.csv").is_file()
    assert (run_dir / "plots" / "loss.png").is_file()
    assert (run_dir / "plots" / "grad_norm_sq.png").is_file()
    assert '"status": "completed"' in (run_dir / "run.json").read_text()
    assert f"run directory: {run_dir}" in proc.stdout
    assert "test_accuracy" in proc.stdout
