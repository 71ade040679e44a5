"""Data-parallel training under torchrun, on the CPU with the gloo backend.

A 2-process run with global batch B must give the loss and gradient-norm trace of a plain
(not distributed) run with batch B: exactly so, up to floating-point rounding, for a model whose gradient does
not depend on random draws (a VAE whose encoder is a point mass); the shards are uneven (B=99)
and so is the last batch. With the score-function estimator every rank must hold the same
running-mean baseline and make the same update. Only rank 0 writes.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest
import yaml

from tests.support.cli import run_dir_from

pytestmark = [pytest.mark.skipif(sys.platform == "win32", reason="gloo on POSIX"), pytest.mark.slow]

PLUGIN = '''\
import json
import os

import pyro
import pyro.distributions as dist

import bbvi_kit.engine as engine
from bbvi_kit import register_model
from bbvi_kit_plugins.gaussian_vae import GaussianVAE


@register_model("delta_vae")
class DeltaVAE(GaussianVAE):
    """The Gaussian VAE with a point-mass encoder: loss and gradient are functions of the data."""

    def guide(self, x):
        with pyro.plate("data", x.shape[0], dim=-1):
            loc, _ = self.encode(x)
            pyro.sample("z", dist.Delta(loc).to_event(1))


_dump = os.environ.get("BBVI_TEST_STATE_DIR")
if _dump:  # every rank leaves its final estimator state and parameters for the test to compare
    _fit = engine.Trainer.fit

    def fit(self, *args, **kwargs):
        history = _fit(self, *args, **kwargs)
        state = {k: v.tolist() for k, v in self.loss.estimator.state_dict().items() if v is not None}
        state["parameters"] = [p.detach().flatten().tolist() for p in self.parameters]
        with open(os.path.join(_dump, "rank" + os.environ.get("RANK", "0") + ".json"), "w") as fh:
            json.dump(state, fh)
        return history

    engine.Trainer.fit = fit
'''

RECIPE = {
    "name": "ddp",
    "plugins": ["ddp_plugin.py"],
    "model": {"name": "delta_vae", "latent_dim": 2, "hidden": [16]},
    "data": {"name": "digits"},
    "optimizer": {"name": "adam", "lr": 3e-3},
    "training": {"batch_size": 99, "epochs": 2, "seed": 0, "device": "cpu", "progress": False},
}


def workdir(tmp_path: Path, **changes: dict) -> Path:
    recipe = json.loads(json.dumps(RECIPE))
    for section, values in changes.items():
        recipe[section] = {**recipe.get(section, {}), **values}
    (tmp_path / "ddp_plugin.py").write_text(PLUGIN)
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    return tmp_path


def launch(root: Path, processes: int, out: str, **env: str) -> Path:
    """``torchrun --standalone --nproc_per_node=N -m bbvi_kit run recipe.yaml``; the run directory."""
    environment = dict(os.environ, OMP_NUM_THREADS="1", **env)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               "-m", "bbvi_kit", "run", "recipe.yaml", "--out", out]
    done = subprocess.run(command, cwd=root, env=environment, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("run directory: ") == 1  # rank 0 alone reports
    (run,) = (root / out / "ddp").iterdir()  # and writes
    return run


def rows(path: Path) -> list[dict[str, float]]:
    return [{k: float(v) for k, v in r.items() if k != "time"} for r in csv.DictReader(path.read_text().splitlines())]


def assert_close_rows(a: list[dict[str, float]], b: list[dict[str, float]]) -> None:
    assert len(a) == len(b) and [r.keys() for r in a] == [r.keys() for r in b]
    for ra, rb in zip(a, b):
        for key in ra:
            assert ra[key] == pytest.approx(rb[key], rel=1e-4, abs=1e-6), (key, ra["step"], ra[key], rb[key])


def test_two_processes_give_the_trace_of_one_with_the_same_global_batch(tmp_path: Path, cli_run: Callable) -> None:
    root = workdir(tmp_path)
    code, out, err = cli_run(["run", root / "recipe.yaml", "--out", root / "single"])  # in this process
    assert code == 0, err
    single = run_dir_from(out)
    parallel = launch(root, 2, "parallel")
    one, two = rows(single / "metrics.csv"), rows(parallel / "metrics.csv")
    assert len(one) == 30  # 1438 digits / 99 = 15 batches (the last of 52) x 2 epochs
    assert_close_rows(two, one)
    assert_close_rows(rows(parallel / "eval.csv"), rows(single / "eval.csv"))
    info = json.loads((parallel / "run.json").read_text())
    assert info["status"] == "completed" and info["data_parallel"] == {"world_size": 2}


def test_the_score_baseline_and_the_update_are_the_same_on_every_rank(tmp_path: Path) -> None:
    root = workdir(tmp_path, model={"name": "gaussian_vae"}, objective={"name": "elbo", "num_particles": 2},
                   estimator={"name": "score", "baseline": "running_mean"})
    states = tmp_path / "states"
    states.mkdir()
    run = launch(root, 2, "parallel", BBVI_TEST_STATE_DIR=str(states))
    rank0, rank1 = (json.loads((states / f"rank{r}.json").read_text()) for r in (0, 1))
    assert rank0["running_mean"] == pytest.approx(rank1["running_mean"], rel=1e-6)
    assert rank0["parameters"] == rank1["parameters"]  # the same all-reduced gradient, the same Adam step
    assert all(r["loss"] == r["loss"] for r in rows(run / "metrics.csv"))
