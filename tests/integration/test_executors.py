"""Sweeps on executors: a local process pool and a real local Ray instance (2 CPUs) run the same
3-point sweep (more points than workers) into the same run directories, point for point; a
worker that dies is resubmitted (Ray) or the sweep is resumed (``--resume --executor``), and the
runs go on from their last checkpoints to the values of an uninterrupted sweep."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from bbvi_kit.errors import InputError
from bbvi_kit.executors import LocalExecutor, make_executor
from bbvi_kit.sweep_runner import run_plan
from bbvi_kit.sweep import load_plan
from tests.support.fault_plugin import FAULT_PLUGIN

# One xdist worker runs them all (--dist loadfile): one Ray instance and one local reference sweep.
pytestmark = [pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"), pytest.mark.slow,
              pytest.mark.xdist_group("executors")]

RECIPE = {
    "name": "pool",
    "plugins": ["fault_plugin.py"],
    "model": {"name": "gaussian_vae", "latent_dim": 2, "hidden": [16]},
    "data": {"name": "digits"},
    "optimizer": {"name": "adam", "lr": 3e-3},
    "training": {"batch_size": 256, "epochs": 2, "seeds": [0], "device": "cpu", "progress": False,
                 "checkpoint_every": 4},
    "sweep": {"objective.num_particles": [1, 2, 3]},
}
FOLDERS = ["p00-K=1-seed0", "p01-K=2-seed0", "p02-K=3-seed0"]


def write_recipe(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "fault_plugin.py").write_text(FAULT_PLUGIN)
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(RECIPE, sort_keys=False))
    return path


def outputs(sweep: Path) -> dict[str, Any]:
    """What the sweep computed, without wall-clock times."""
    def rows(path: Path) -> list[dict[str, str]]:
        return [{k: v for k, v in r.items() if k != "time"} for r in csv.DictReader(path.read_text().splitlines())]

    runs = {folder: {name: rows(sweep / folder / name) for name in ("metrics.csv", "eval.csv")}
            for folder in FOLDERS}
    statuses = {r["dir"]: r["status"] for r in json.loads((sweep / "sweep.json").read_text())["runs"]}
    return {"runs": runs, "summary": rows(sweep / "summary.csv"), "statuses": statuses}


def sweep_dir(root: Path) -> Path:
    (only,) = (root / "pool").iterdir()
    return only


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The sweep on a local pool of 2 workers (one CPU thread each), never interrupted."""
    root = tmp_path_factory.mktemp("local")
    result = run_plan(load_plan(write_recipe(root)), root / "runs", executor=LocalExecutor(workers=2))
    assert result.failed == 0
    out = outputs(result.path)
    assert set(out["statuses"].values()) == {"completed"} and len(out["summary"]) == 3
    assert (result.path / "plots" / "grad_norm_sq.png").is_file()
    return out


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    ray = pytest.importorskip("ray")
    marker = tmp_path_factory.mktemp("ray") / "killed-once"
    marker.touch()  # present: nobody is killed until a test removes it
    env = {"BBVI_TEST_KILL_AT_STEP": "6", "BBVI_TEST_KILL_ONCE_MARKER": str(marker), "OMP_NUM_THREADS": "1"}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    yield marker
    ray.shutdown()


def test_ray_runs_the_sweep_as_the_local_pool_does(tmp_path: Path, ray_cluster: Path,
                                                   local_reference: dict[str, Any]) -> None:
    from bbvi_kit.executors import RayExecutor

    result = run_plan(load_plan(write_recipe(tmp_path)), tmp_path / "runs", executor=RayExecutor())
    assert result.failed == 0
    assert outputs(result.path) == local_reference
    assert (result.path / "plots" / "grad_norm_sq.png").is_file()


def test_a_preempted_ray_task_is_resubmitted_and_goes_on_from_its_checkpoint(
    tmp_path: Path, ray_cluster: Path, local_reference: dict[str, Any]
) -> None:
    """The first worker to reach step 6 is killed (SIGKILL, as a lost node); Ray runs the task
    again, which finds its run directory and resumes it from the checkpoint of step 4."""
    from bbvi_kit.executors import RayExecutor

    ray_cluster.unlink()
    result = run_plan(load_plan(write_recipe(tmp_path)), tmp_path / "runs", executor=RayExecutor())
    assert ray_cluster.exists(), "no worker was killed"
    assert result.failed == 0
    assert outputs(result.path) == local_reference
    resumed = [f for f in FOLDERS if json.loads((result.path / f / "run.json").read_text()).get("resumed")]
    assert len(resumed) == 1
    (record,) = json.loads((result.path / resumed[0] / "run.json").read_text())["resumed"]
    assert record["from_step"] == 4


def test_a_sweep_whose_worker_died_is_finished_by_resume_with_an_executor(
    tmp_path: Path, local_reference: dict[str, Any], cli_run: Callable
) -> None:
    """Every worker process dies at its step 6 (SIGKILL); ``--resume --executor local`` then
    finishes every run from its checkpoint. (The killed sweep's driver is a subprocess: the fault
    plugin, once imported with the variable set, would kill whatever process trains next. The
    resume runs in this process, whose environment does not set it.)"""
    recipe = write_recipe(tmp_path)
    done = subprocess.run([sys.executable, "-m", "bbvi_kit", "run", str(recipe), "--executor", "local", "--workers", "2",
                           "--out", str(tmp_path / "runs")], cwd=tmp_path, text=True, capture_output=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "BBVI_TEST_KILL_AT_STEP": "6"}, timeout=300)
    assert done.returncode == 1, done.stderr
    assert "the worker process running it died" in done.stderr and "--resume finishes it" in done.stderr
    sweep = sweep_dir(tmp_path / "runs")
    code, _, err = cli_run(["run", "--resume", sweep, "--executor", "local", "--workers", "2"])
    assert code == 0, err
    assert outputs(sweep) == local_reference


def test_a_failing_point_is_recorded_and_the_others_finish(tmp_path: Path, cli_run: Callable) -> None:
    """A decoder scale of 1e-30 overflows the Gaussian likelihood: those runs stop at their
    first step in the worker; the sweep records them and finishes the others (exit code 1)."""
    recipe = write_recipe(tmp_path)
    data = yaml.safe_load(recipe.read_text())
    data["training"]["seeds"] = [0, 1]
    data["sweep"] = {"model.decoder_scale": [1e-30, 0.1]}
    recipe.write_text(yaml.safe_dump(data))
    code, _, err = cli_run(["run", recipe, "--executor", "local", "--workers", "2", "--out", tmp_path / "runs"])
    assert code == 1, err
    summary = list(csv.DictReader((sweep_dir(tmp_path / "runs") / "summary.csv").read_text().splitlines()))
    assert [r["status"] for r in summary] == ["failed", "failed", "completed", "completed"]
    assert all("non-finite loss or gradient at step 1" in r["error"] for r in summary[:2])


@pytest.mark.parametrize(("args", "message"), [
    (["--workers", "2"], "--workers and --ray-address go with --executor local or ray"),
    (["--executor", "local", "--ray-address", "x:1"], "--ray-address goes with --executor ray"),
    (["--executor", "local", "--workers", "0"], "--workers must be at least 1"),
])
def test_executor_options_are_checked(tmp_path: Path, cli_run: Callable, args: list[str], message: str) -> None:
    code, _, err = cli_run(["run", write_recipe(tmp_path), *args, "--out", tmp_path / "runs"])
    assert code == 2 and message in err and err.count("\n") == 1, err


def test_an_executor_needs_a_sweep(tmp_path: Path, cli_run: Callable) -> None:
    code, _, err = cli_run(["run", "recipes/quickstart.yaml", "--executor", "local", "--out", tmp_path])
    assert code == 2 and "--executor runs the runs of a sweep" in err


def test_without_ray_the_ray_executor_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_ray(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(InputError, match=r"pip install 'bbvi-kit\[ray\]'"):
        make_executor("ray")


def test_local_default_workers_do_not_oversubscribe(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from bbvi_kit import executors

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(executors, "available_cpus", lambda: 16)
    pool = LocalExecutor()
    assert pool.workers == 8 and pool.workers * executors._threads_per_worker(pool.workers) <= 16
    assert executors._threads_per_worker(3) * 3 <= 16
    monkeypatch.setattr(executors, "available_cpus", lambda: 1)
    assert LocalExecutor().workers == 1



def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped) is not running
        return open(f"/proc/{pid}/stat").read().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return True


@pytest.mark.parametrize("driver_signal", [signal.SIGKILL, signal.SIGTERM])
def test_pool_workers_never_outlive_their_driver(
    tmp_path: Path, local_reference: dict[str, Any], driver_signal: signal.Signals, cli_run: Callable
) -> None:
    """The driver of a 2-worker sweep is killed (SIGKILL: the workers notice their parent is gone)
    or stopped (SIGTERM: it asks them to stop) while both workers train: every worker stops its
    run at a step boundary with a checkpoint and exits. Both leave the same runs (asserted), so
    ``--resume`` (in this process) finishes one of them, the stopped sweep, with the values of an
    uninterrupted one; a resume of a sweep whose driver was killed is
    tests/integration/test_resume.py's."""
    recipe = write_recipe(tmp_path)
    pids = tmp_path / "pids"
    pids.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BBVI_TEST_STEP_DELAY": "0.2", "BBVI_TEST_PID_DIR": str(pids)}
    driver = subprocess.Popen([sys.executable, "-m", "bbvi_kit", "run", str(recipe), "--executor", "local",
                               "--workers", "2", "--out", str(tmp_path / "runs")], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        started = list((tmp_path / "runs").glob("pool/*/p0[01]*/metrics.csv"))
        if len(started) == 2 and all(p.read_text().count("\n") >= 3 for p in started):
            break
        time.sleep(0.05)
    driver.send_signal(driver_signal)
    _, err = driver.communicate(timeout=120)
    assert driver.returncode == (-signal.SIGKILL if driver_signal == signal.SIGKILL else 143), err
    workers = [int(p.name) for p in pids.iterdir() if int(p.name) != driver.pid]
    assert len(workers) == 2
    deadline = time.monotonic() + 60
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers), "a pool worker outlived its driver"
    sweep = sweep_dir(tmp_path / "runs")
    for folder in FOLDERS[:2]:
        info = json.loads((sweep / folder / "run.json").read_text())
        assert (info["status"], info["signal"]) == ("interrupted", "SIGTERM"), info
        latest = json.loads((sweep / folder / "checkpoints" / "index.json").read_text())["checkpoints"][-1]
        assert latest["step"] == info["steps_done"]  # stopped at a step boundary, with its checkpoint
    if driver_signal == signal.SIGTERM:
        code, _, err = cli_run(["run", "--resume", sweep, "--executor", "local", "--workers", "2"])
        assert code == 0, err
        assert outputs(sweep) == local_reference
