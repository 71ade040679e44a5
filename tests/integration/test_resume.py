"""Fault injection: a real ``bbvi-kit run`` subprocess is killed with SIGKILL (at a random moment,
at a chosen step, half-way through a checkpoint write, between a checkpoint's rename and its
index) or runs out of file space, then ``bbvi-kit run --resume`` continues it. On CPU the
resumed run's metrics, evaluations, diagnostics and final parameters are identical to those of
the run that was never interrupted, and no CSV file ever holds a partial or duplicated row."""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
import torch
import yaml

from bbvi_kit.checkpoint import Checkpoints
from tests.support.fault_plugin import FAULT_PLUGIN, NAN_DATA_PLUGIN
from tests.support import REPO
from tests.support.fork_server import ForkedProcess, ForkServer

pytestmark = [pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and resource limits"), pytest.mark.slow]

# A small VAE with state everywhere a resume can lose it: Adam moments, a running-mean score
# baseline, stateful diagnostics (smoothness keeps the previous parameters; the stratified
# full_gradient its drawn iterations and running average), evaluations at every epoch end and a
# held-out diagnostic at each of them.
RECIPE = {
    "name": "faulty",
    "plugins": ["fault_plugin.py"],
    "model": {"name": "gaussian_vae", "latent_dim": 2, "hidden": [16]},
    "data": {"name": "digits"},
    "objective": {"name": "elbo", "num_particles": 2},
    "estimator": {"name": "score", "baseline": "running_mean"},
    "optimizer": {"name": "adam", "lr": 3e-3},
    "schedule": {"name": "inv_sqrt_epoch"},
    "training": {"batch_size": 256, "epochs": 8, "seed": 3, "device": "cpu", "progress": False,
                 "flush_every": 1, "checkpoint_every": 5, "keep_checkpoints": 2},
    "diagnostics": [{"name": "smoothness", "every": 4}, {"name": "heldout_iwae", "num_samples": 4},
                    {"name": "full_gradient", "every": 6, "schedule": "stratified", "max_examples": 256,
                     "num_estimates": 3}],
}
STEPS = 48  # 6 batches per epoch (1438 training digits / 256) x 8 epochs


def env(**extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("BBVI_TEST_")}
    # one thread: the same floating-point reduction order in every process
    out.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0", **extra)
    return out


def fresh_start(args: list[str], cwd: Path, **extra: str) -> subprocess.Popen:
    """``python -m bbvi_kit ARGS`` in a fresh interpreter (start-up included)."""
    return subprocess.Popen([sys.executable, "-m", "bbvi_kit", *args], cwd=cwd, env=env(**extra),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def fresh_bbvi(args: list[str], cwd: Path, **extra: str) -> subprocess.CompletedProcess:
    proc = fresh_start(args, cwd, **extra)
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


_server: list[ForkServer] = []


@pytest.fixture(scope="module", autouse=True)
def fork_server() -> Iterator[None]:
    """Most processes here are children forked from one that imported bbvi-kit once
    (tests/support/fork_server.py): the same ``cli.main`` in a real process of its own, which a test kills
    or signals, without the few seconds of imports. The reference run is a fresh interpreter, so
    every comparison with it also checks that a forked child computes what a fresh one does."""
    server = ForkServer(env())
    _server.append(server)
    yield
    _server.remove(server)
    server.close()


def start(args: list[str], cwd: Path, fsize: int | None = None, **extra: str) -> ForkedProcess:
    """``bbvi-kit ARGS`` in a forked child; ``fsize``: its file-size limit (RLIMIT_FSIZE) in bytes."""
    return _server[0].start(args, cwd, env(**extra), fsize)


def bbvi(args: list[str], cwd: Path, fsize: int | None = None, **extra: str) -> subprocess.CompletedProcess:
    proc = start(args, cwd, fsize, **extra)
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def workdir(tmp_path: Path, **training: object) -> Path:
    recipe = json.loads(json.dumps(RECIPE))
    recipe["training"].update(training)
    (tmp_path / "fault_plugin.py").write_text(FAULT_PLUGIN)
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    return tmp_path


def only_run_dir(root: Path) -> Path:
    (run,) = (root / "runs" / "faulty").iterdir()
    return run


def rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file, after checking that every line is complete and steps never repeat."""
    text = path.read_text()
    assert text.endswith("\n"), f"{path} ends in a partial row"
    table = list(csv.DictReader(text.splitlines()))
    header = text.splitlines()[0].split(",")
    for row in table:
        assert None not in row and all(v is not None for v in row.values()), f"{path}: short row {row}"
        assert len(row) == len(header)
    steps = [int(r["step"]) for r in table]
    assert steps == sorted(set(steps)), f"{path}: duplicated or unordered steps"
    return [{k: v for k, v in r.items() if k != "time"} for r in table]  # wall clock differs


def outputs(run: Path) -> dict[str, object]:
    """Everything a run computed, without wall-clock times: every CSV's rows and the final
    parameters, optimizer state and RNG state of its last checkpoint."""
    files = sorted(p.relative_to(run).as_posix() for p in run.rglob("*.csv")
                   if not p.relative_to(run).parts[0].startswith("set-aside-"))  # --from-scratch's copies
    checkpoints = Checkpoints(run)
    final = checkpoints.load(checkpoints.latest())
    assert final["step"] == STEPS
    return {
        "files": files,
        "rows": {f: rows(run / f) for f in files},
        "parameters": final["parameters"],
        "optimizer": final["optimizer"]["state"],
        "rng": final["rng"]["torch"],
    }


def assert_same(a: dict[str, object], b: dict[str, object]) -> None:
    assert a["files"] == b["files"]
    for f in a["files"]:
        assert a["rows"][f] == b["rows"][f], f"{f} differs"
    assert a["parameters"].keys() == b["parameters"].keys()
    assert all(torch.equal(a["parameters"][k], b["parameters"][k]) for k in a["parameters"])
    for key, state in a["optimizer"].items():
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(b["optimizer"][key][name]))
    assert torch.equal(a["rng"], b["rng"])


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The run that is never interrupted."""
    root = workdir(tmp_path_factory.mktemp("reference"))
    done = fresh_bbvi(["run", "recipe.yaml"], root)
    assert done.returncode == 0, done.stderr
    run = only_run_dir(root)
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    return outputs(run)


def resume_and_compare(root: Path, reference: dict[str, object], status: str = "running") -> Path:
    run = only_run_dir(root)
    assert json.loads((run / "run.json").read_text())["status"] == status  # a killed run still says running
    done = bbvi(["run", "--resume", str(run)], root)
    assert done.returncode == 0, done.stderr
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    assert_same(outputs(run), reference)
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]  # no debris
    return run


@pytest.mark.parametrize("seed", [1, 2])
def test_sigkill_at_a_random_moment_then_resume_is_the_uninterrupted_run(
    tmp_path: Path, reference: dict[str, object], seed: int
) -> None:
    root = workdir(tmp_path)
    target = random.Random(seed).randint(3, STEPS - 5)  # metrics rows seen before the kill
    proc = start(["run", "recipe.yaml"], root, BBVI_TEST_STEP_DELAY="0.02")
    deadline = time.monotonic() + 120
    metrics = None
    while time.monotonic() < deadline and proc.poll() is None:
        runs = list((root / "runs" / "faulty").glob("*/metrics.csv")) if (root / "runs").exists() else []
        if runs:
            metrics = runs[0]
            if metrics.read_text().count("\n") - 1 >= target:
                proc.send_signal(signal.SIGKILL)
                break
        time.sleep(0.002)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    resume_and_compare(root, reference)


@pytest.mark.parametrize("step", [1, 5, 6, 7, STEPS])
def test_sigkill_at_a_chosen_step_then_resume(tmp_path: Path, reference: dict[str, object], step: int) -> None:
    """Before the first checkpoint (restart from scratch), at one (step 5), at an epoch's end
    (step 6), just after one, and in the last step."""
    root = workdir(tmp_path)
    killed = bbvi(["run", "recipe.yaml"], root, BBVI_TEST_KILL_AT_STEP=str(step))
    assert killed.returncode == -signal.SIGKILL
    resume_and_compare(root, reference)


def test_sigkill_during_a_checkpoint_write_keeps_the_previous_one(
    tmp_path: Path, reference: dict[str, object]
) -> None:
    root = workdir(tmp_path)
    killed = bbvi(["run", "recipe.yaml"], root, BBVI_TEST_KILL_IN_CHECKPOINT="3")
    assert killed.returncode == -signal.SIGKILL
    run = only_run_dir(root)
    partial = [p for p in (run / "checkpoints").iterdir() if ".tmp-" in p.name]
    assert partial, "the kill should have left a half-written temporary file"
    assert [r.step for r in Checkpoints(run).records()] == [5, 10]  # the third (step 15) never landed
    resume_and_compare(root, reference)


def test_sigkill_between_rename_and_index_then_resume(tmp_path: Path, reference: dict[str, object]) -> None:
    root = workdir(tmp_path)
    killed = bbvi(["run", "recipe.yaml"], root, BBVI_TEST_KILL_AFTER_RENAME="2")
    assert killed.returncode == -signal.SIGKILL
    run = only_run_dir(root)
    assert (run / "checkpoints" / "step-000000010.pt").exists()
    assert [r.step for r in Checkpoints(run).records()] == [5]  # complete file, but never indexed
    resume_and_compare(root, reference)


def test_killed_twice_resumes_twice(tmp_path: Path, reference: dict[str, object]) -> None:
    root = workdir(tmp_path)
    assert bbvi(["run", "recipe.yaml"], root, BBVI_TEST_KILL_AT_STEP="9").returncode == -signal.SIGKILL
    run = only_run_dir(root)
    again = bbvi(["run", "--resume", str(run)], root, BBVI_TEST_KILL_AT_STEP="14")  # step 5 + 14
    assert again.returncode == -signal.SIGKILL
    resume_and_compare(root, reference)
    info = json.loads((run / "run.json").read_text())
    assert [r["from_step"] for r in info["resumed"]] == [5, 15]


def test_full_disk_while_writing_metrics_keeps_whole_rows_and_resumes(
    tmp_path: Path, reference: dict[str, object]
) -> None:
    """metrics.csv fills the disk part-way through a row (ENOSPC after a partial write)."""
    root = workdir(tmp_path)
    failed = bbvi(["run", "recipe.yaml"], root, BBVI_TEST_METRICS_FULL_AT="3000")
    assert failed.returncode == 1, failed.stderr
    err = failed.stderr.strip()
    assert err.count("\n") == 0 and err.startswith("error: step ")
    assert "cannot write" in err and "metrics.csv: No space left on device" in err
    failed_at = int(err.split()[2])  # "error: step N (epoch E): ..."
    last_good = 5 * ((failed_at - 1) // 5)  # checkpoint_every: 5
    assert "last good checkpoint: runs/faulty/" in err and err.endswith(f"step-{last_good:09d}.pt (step {last_good})")
    run = only_run_dir(root)
    assert (run / "metrics.csv").stat().st_size <= 3000
    assert [int(r["step"]) for r in rows(run / "metrics.csv")] == list(range(1, failed_at))  # whole rows only
    assert json.loads((run / "run.json").read_text())["status"] == "failed"
    assert [r.step for r in Checkpoints(run).records()] == [last_good - 5, last_good]
    resume_and_compare(root, reference, status="failed")


def test_no_space_while_a_run_is_set_up_is_one_line_naming_the_file(tmp_path: Path) -> None:
    """A file-size limit of 300 bytes (as a nearly full disk) makes the first set-up write, the
    run's recipe.yaml, fail: one line naming that file, exit 1, and no partial file left."""
    root = workdir(tmp_path)
    stopped = bbvi(["run", "recipe.yaml"], root, fsize=300)
    assert stopped.returncode == 1, stopped.stderr
    run = only_run_dir(root)
    assert stopped.stderr == f"error: {run.relative_to(root)}/recipe.yaml: File too large\n"
    assert sorted(p.name for p in run.iterdir()) == ["plots"]  # no temporary or partial file


def test_out_of_space_for_a_checkpoint_says_so_and_leaves_no_partial_file(tmp_path: Path) -> None:
    root = workdir(tmp_path)
    recipe = yaml.safe_load((root / "recipe.yaml").read_text())
    recipe["model"]["hidden"] = [256]  # a checkpoint of ~400 kB, over the limit; the CSVs stay under it
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    failed = bbvi(["run", "recipe.yaml"], root, fsize=100_000)
    assert failed.returncode == 1
    err = failed.stderr.strip()
    assert err.count("\n") == 0
    assert "cannot write checkpoint" in err and "step-000000005.pt" in err and "no checkpoint written yet" in err
    run = only_run_dir(root)
    assert list((run / "checkpoints").iterdir()) == []  # the partial temporary file was removed
    assert [int(r["step"]) for r in rows(run / "metrics.csv")] == list(range(1, 6))


def test_a_killed_sweep_resumes_its_unfinished_runs_and_keeps_the_finished_ones(tmp_path: Path) -> None:
    """Three points; killed in the second run: the first is kept, the second resumed from its
    checkpoint, the third started. Every run ends as in a sweep that was never interrupted."""
    def sweep_root(name: str) -> Path:
        (tmp_path / name).mkdir()
        root = workdir(tmp_path / name, epochs=2, checkpoint_every=4)
        recipe = yaml.safe_load((root / "recipe.yaml").read_text())
        recipe["diagnostics"] = []
        recipe["sweep"] = {"objective.num_particles": [2, 3, 4]}
        (root / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
        return root

    steps = 12  # per run
    reference_root, killed_root = sweep_root("reference"), sweep_root("killed")
    assert bbvi(["run", "recipe.yaml"], reference_root).returncode == 0
    killed = bbvi(["run", "recipe.yaml"], killed_root, BBVI_TEST_KILL_AT_STEP=str(steps + 7))
    assert killed.returncode == -signal.SIGKILL
    (sweep,) = (killed_root / "runs" / "faulty").iterdir()
    status = {r["dir"]: r["status"] for r in json.loads((sweep / "sweep.json").read_text())["runs"]}
    assert list(status.values()) == ["completed", "running", "pending"]
    first = sweep / next(iter(status))
    first_bytes = (first / "metrics.csv").read_bytes()

    done = bbvi(["run", "--resume", str(sweep)], killed_root)
    assert done.returncode == 0, done.stderr
    assert "kept 1 completed runs, resumed 1" in done.stderr
    assert (first / "metrics.csv").read_bytes() == first_bytes  # a finished run is left alone
    info = json.loads((sweep / "sweep.json").read_text())
    assert info["status"] == "completed" and {r["status"] for r in info["runs"]} == {"completed"}
    (reference,) = (reference_root / "runs" / "faulty").iterdir()
    for folder in status:
        for name in ("metrics.csv", "eval.csv"):
            assert rows(sweep / folder / name) == rows(reference / folder / name), f"{folder}/{name}"
    summary = list(csv.DictReader((sweep / "summary.csv").read_text().splitlines()))
    assert [r["status"] for r in summary] == ["completed"] * 3
    assert (sweep / "plots" / "grad_norm_sq.png").is_file()


# -- SIGTERM and SIGINT: stop at the step boundary with a checkpoint ------------------------------
@pytest.mark.parametrize(("name", "step", "code"), [("TERM", 7, 143), ("INT", 12, 130), ("TERM", 1, 143)])
def test_a_signal_stops_at_the_step_boundary_with_a_checkpoint_and_resume_is_exact(
    tmp_path: Path, reference: dict[str, object], name: str, step: int, code: int
) -> None:
    """The signal lands in the middle of step ``step`` (sent by the process to itself from inside
    the step, as a scheduler's would land): the step finishes, its rows and a checkpoint at that
    step are written, run.json says interrupted with the signal, and the command exits 128 + the
    signal number with one line naming the resume command."""
    root = workdir(tmp_path)
    stopped = bbvi(["run", "recipe.yaml"], root, BBVI_TEST_SIGNAL_AT_STEP=str(step), BBVI_TEST_SIGNAL=name)
    assert stopped.returncode == code, stopped.stderr
    run = only_run_dir(root)
    err = stopped.stderr.strip().splitlines()[-1]
    assert err == (f"interrupted: stopped by SIG{name} after step {step} (epoch {(step - 1) // 6}); checkpoint at "
                   f"step {step}; resume with: bbvi-kit run --resume {run.relative_to(root)}")
    info = json.loads((run / "run.json").read_text())
    assert (info["status"], info["signal"], info["steps_done"]) == ("interrupted", f"SIG{name}", step)
    assert Checkpoints(run).latest().step == step
    assert [int(r["step"]) for r in rows(run / "metrics.csv")] == list(range(1, step + 1))
    resume_and_compare(root, reference, status="interrupted")


def test_a_run_whose_first_batch_in_data_order_holds_a_nan_resumes_exactly(tmp_path: Path) -> None:
    """Resume rebuilds the parameters by passes over the training batches in data order; a NaN
    there (skipped in training under on_nonfinite: skip) must not stop it. Training examples 0
    and 300 hold a NaN: the four steps whose batches hold them are skipped, in the stopped and
    resumed run as in the uninterrupted one."""
    def nan_workdir(root: Path) -> Path:
        workdir(root, on_nonfinite="skip", epochs=2)
        (root / "nan_data.py").write_text(NAN_DATA_PLUGIN)
        recipe = yaml.safe_load((root / "recipe.yaml").read_text())
        recipe.update(plugins=["fault_plugin.py", "nan_data.py"], data={"name": "nan_digits", "train_nan": [0, 300]})
        (root / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
        return root

    (tmp_path / "straight").mkdir()
    (tmp_path / "stopped").mkdir()
    straight = nan_workdir(tmp_path / "straight")
    assert bbvi(["run", "recipe.yaml"], straight).returncode == 0
    stopped = nan_workdir(tmp_path / "stopped")
    assert bbvi(["run", "recipe.yaml"], stopped, BBVI_TEST_SIGNAL_AT_STEP="5", BBVI_TEST_SIGNAL="TERM").returncode == 143
    run = only_run_dir(stopped)
    done = bbvi(["run", "--resume", str(run)], stopped)
    assert done.returncode == 0, done.stderr
    assert "warning: 4 of 12 steps (33%) were skipped as non-finite" in done.stderr
    files = sorted(p.relative_to(run).as_posix() for p in run.rglob("*.csv"))
    for f in files:
        assert rows(run / f) == rows(only_run_dir(straight) / f), f
    assert rows(run / "metrics.csv")[-1]["skipped_steps"] == "4"  # each NaN example's batch, in both epochs


def test_a_second_signal_stops_at_once(tmp_path: Path, reference: dict[str, object]) -> None:
    root = workdir(tmp_path)
    stopped = bbvi(["run", "recipe.yaml"], root, BBVI_TEST_SIGNAL_AT_STEP="8", BBVI_TEST_SIGNAL_TWICE="1")
    assert stopped.returncode == 143, stopped.stderr
    assert stopped.stderr.strip().splitlines()[-1].startswith("interrupted: interrupted by SIGTERM; resume with: ")
    run = only_run_dir(root)
    assert Checkpoints(run).latest().step == 5  # no new checkpoint: the last regular one
    assert [int(r["step"]) for r in rows(run / "metrics.csv")] == list(range(1, 8))  # step 8 never finished
    resume_and_compare(root, reference, status="interrupted")


def test_sigterm_at_a_random_moment_then_resume_is_the_uninterrupted_run(
    tmp_path: Path, reference: dict[str, object]
) -> None:
    root = workdir(tmp_path)
    target = random.Random(3).randint(3, STEPS - 5)
    proc = fresh_start(["run", "recipe.yaml"], root, BBVI_TEST_STEP_DELAY="0.02")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        runs = list((root / "runs" / "faulty").glob("*/metrics.csv")) if (root / "runs").exists() else []
        if runs and runs[0].read_text().count("\n") - 1 >= target:
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.002)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    run = only_run_dir(root)
    stopped_at = json.loads((run / "run.json").read_text())["steps_done"]
    assert Checkpoints(run).latest().step == stopped_at >= target
    resume_and_compare(root, reference, status="interrupted")


@pytest.mark.parametrize(("name", "code"), [("TERM", 143), ("INT", 130)])
def test_a_signal_during_start_up_gives_one_line(tmp_path: Path, name: str, code: int) -> None:
    root = workdir(tmp_path)
    stopped = fresh_bbvi(["run", "recipe.yaml"], root, BBVI_TEST_SIGNAL_ON_LOAD=name)
    assert stopped.returncode == code
    lines = [line for line in stopped.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("interrupted") and "Traceback" not in stopped.stderr, lines
    assert not (root / "runs").exists() or not list((root / "runs").rglob("checkpoints/*.pt"))


# -- a checkpoint belongs to one run; resume runs the recipe the run started with ------------------
def test_a_checkpoint_of_another_run_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    """Two runs of the same recipe; the second's checkpoints and index, consistent among
    themselves, are put in the first: resume refuses in one line and cuts no file."""
    root = workdir(tmp_path)
    for _ in range(2):
        assert bbvi(["run", "recipe.yaml"], root, BBVI_TEST_KILL_AT_STEP="17").returncode == -signal.SIGKILL
    first, second = sorted((root / "runs" / "faulty").iterdir())
    shutil.rmtree(first / "checkpoints")
    shutil.copytree(second / "checkpoints", first / "checkpoints")
    before = {p.name: p.read_bytes() for p in first.glob("*.csv")}
    refused = bbvi(["run", "--resume", str(first)], root)
    assert refused.returncode == 2
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("error: checkpoint ") and "refused, it belongs to another run" in line
    assert {p.name: p.read_bytes() for p in first.glob("*.csv")} == before


def test_an_edited_recipe_is_refused_naming_what_changed(tmp_path: Path) -> None:
    root = workdir(tmp_path)
    assert bbvi(["run", "recipe.yaml"], root, BBVI_TEST_KILL_AT_STEP="12").returncode == -signal.SIGKILL
    run = only_run_dir(root)
    original = (run / "recipe.yaml").read_text()
    recipe = yaml.safe_load(original)
    recipe["optimizer"]["lr"] = 0.1
    recipe["training"]["seed"] = 4
    recipe["plugins"] = [*recipe.get("plugins", []), "evil.py"]
    (root / "evil.py").write_text("import pathlib\npathlib.Path('imported').write_text('yes')\n")
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    refused = bbvi(["run", "--resume", str(run)], root)
    assert refused.returncode == 2
    (line,) = refused.stderr.strip().splitlines()
    assert "recipe.yaml: edited since the run started (optimizer.lr, plugins, training.seed changed)" in line
    assert not (root / "imported").exists()  # the added plugin never ran
    (run / "recipe.yaml").write_text(original)  # put back, the run resumes
    assert bbvi(["run", "--resume", str(run)], root).returncode == 0


# -- a lost index or a lost checkpoints folder never costs rows ------------------------------------
@pytest.mark.parametrize("damage", ["deleted", "emptied"])
def test_a_lost_index_is_rebuilt_from_the_checkpoint_files(
    tmp_path: Path, reference: dict[str, object], damage: str
) -> None:
    root = workdir(tmp_path)
    assert bbvi(["run", "recipe.yaml"], root, BBVI_TEST_KILL_AT_STEP="17").returncode == -signal.SIGKILL
    run = only_run_dir(root)
    index = run / "checkpoints" / "index.json"
    if damage == "deleted":
        index.unlink()
    else:
        index.write_text('{"format": 1, "checkpoints": []}\n')
    run_dir = resume_and_compare(root, reference)
    info = json.loads((run_dir / "run.json").read_text())
    assert info["resumed"][-1]["from_step"] == 15  # the newest step file, adopted: not a restart


def test_lost_checkpoints_with_rows_past_the_first_one_are_refused(tmp_path: Path,
                                                                  reference: dict[str, object]) -> None:
    """... and only --from-scratch starts the run again, after setting the old files aside."""
    root = workdir(tmp_path)
    assert bbvi(["run", "recipe.yaml"], root, BBVI_TEST_KILL_AT_STEP="17").returncode == -signal.SIGKILL
    run = only_run_dir(root)
    shutil.rmtree(run / "checkpoints")
    before = {p.name: p.read_bytes() for p in run.glob("*.csv")}
    refused = bbvi(["run", "--resume", str(run)], root)
    assert refused.returncode == 2
    (line,) = refused.stderr.strip().splitlines()
    assert "metrics.csv reaches step 16, past the first checkpoint (step 5)" in line and "nothing was changed" in line
    assert "--from-scratch" in line
    assert {p.name: p.read_bytes() for p in run.glob("*.csv")} == before
    again = bbvi(["run", "--resume", str(run), "--from-scratch"], root)
    assert again.returncode == 0, again.stderr
    assert "resumed from the beginning (--from-scratch)" in again.stderr
    (aside,) = run.glob("set-aside-*")
    assert {p.name: p.read_bytes() for p in aside.glob("*.csv")} == before  # nothing deleted
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "completed" and info["resumed"][-1]["set_aside"] == str(aside)
    assert_same(outputs(run), reference)  # the run, from step 0, is the uninterrupted one


def two_point_sweep(root: Path) -> Path:
    """A folder holding the recipe of a one-epoch sweep over two points."""
    root.mkdir()
    recipe = json.loads(json.dumps(RECIPE))
    recipe["training"].update(epochs=1)
    recipe["sweep"] = {"objective.num_particles": [1, 2]}
    (root / "fault_plugin.py").write_text(FAULT_PLUGIN)
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    return root


@pytest.fixture(scope="module")
def two_point_reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sweep of :func:`two_point_sweep`, never interrupted (only read by the tests)."""
    root = two_point_sweep(tmp_path_factory.mktemp("sweep-reference") / "reference")
    assert bbvi(["run", "recipe.yaml"], root).returncode == 0
    (sweep,) = (root / "runs" / "faulty").iterdir()
    return sweep


@pytest.mark.parametrize("left", ["folder", "plots", "recipe", "run_json"])
def test_a_run_folder_killed_while_being_made_is_started_by_the_sweep_resume(
    tmp_path: Path, two_point_reference: Path, left: str
) -> None:
    """What a kill during a sweep run's set-up can leave (its folder; then plots/; then
    recipe.yaml; then run.json saying running, before any row): --resume starts that run in its
    folder and the sweep completes, with the values of a sweep never interrupted. (The sweep to
    cut back is a copy of the reference: the runs are deterministic.)"""
    sweep = tmp_path / two_point_reference.name
    shutil.copytree(two_point_reference, sweep, symlinks=True)
    root = two_point_reference.parents[2]
    (run,) = sweep.glob("p01-*")
    kept = {"folder": [], "plots": ["plots"], "recipe": ["plots", "recipe.yaml"],
            "run_json": ["plots", "recipe.yaml", "run.json"]}[left]
    for item in run.iterdir():
        if item.name not in kept:
            shutil.rmtree(item) if item.is_dir() else item.unlink()
    for item in (run / "plots").iterdir() if (run / "plots").exists() else []:
        item.unlink()
    if left == "run_json":
        info = json.loads((run / "run.json").read_text())
        info.update(status="running")
        (run / "run.json").write_text(json.dumps(info))
    status = json.loads((sweep / "sweep.json").read_text())
    status["status"] = "running"
    (sweep / "sweep.json").write_text(json.dumps(status))
    done = bbvi(["run", "--resume", str(sweep)], root)
    assert done.returncode == 0, done.stderr
    for name in ("metrics.csv", "eval.csv"):
        assert rows(run / name) == rows(two_point_reference / run.name / name)
    assert json.loads((run / "run.json").read_text())["status"] == "completed"


SWEEP_LEVEL_POINTS = r"^[^/]+(/[^/]+)?$|^[^/]+/plots/|^[^/]+/p00-[^/]+/(plots|\.?(recipe\.yaml|run\.json)[^/]*)$"
"""A sweep's own file-creation points (its folder, plots, sweep.yaml, sweep.json, summary.csv,
figures, each run's folder) and those of its first run's set-up (plots/, recipe.yaml, every
run.json write); the second run's set-up repeats the first's code with the first run finished,
the states :func:`test_a_run_folder_killed_while_being_made_is_started_by_the_sweep_resume`
makes one by one; the points inside a run are the single run's, killed one by one in the "run"
case."""


@pytest.mark.parametrize("kind", ["run", "sweep"])
def test_a_kill_at_every_file_creation_point_leaves_what_resume_finishes(tmp_path: Path, kind: str) -> None:
    """tests/support/kill_points.py lists every mkdir, file creation and rename under the output
    root of a run (or of a two-point sweep), takes what a kill just before each of them leaves (the
    tree as it is at that moment in one uninterrupted run; see that file for why that is the same
    thing) and resumes it, in processes forked from one that imported bbvi-kit once. Every kill
    leaves nothing (the folder not yet made), a folder that --resume recognises as never begun
    (exit 2 with the command that starts it), or one that --resume finishes with the rows of the
    uninterrupted run. For the sweep, the points of its own files and of each run's set-up
    (:data:`SWEEP_LEVEL_POINTS`)."""
    recipe = json.loads(json.dumps(RECIPE))
    recipe["training"].update(epochs=1, checkpoint_every=3)
    recipe["diagnostics"] = [{"name": "heldout_iwae", "num_samples": 2}]
    if kind == "sweep":
        recipe["training"].update(iterations=3)
        recipe["sweep"] = {"objective.num_particles": [1, 2]}
    (tmp_path / "fault_plugin.py").write_text(FAULT_PLUGIN)
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    pick = [SWEEP_LEVEL_POINTS] if kind == "sweep" else []
    driver = subprocess.run([sys.executable, str(REPO / "tests" / "support" / "kill_points.py"), str(tmp_path), *pick],
                            env=env(), capture_output=True, text=True, timeout=900)
    assert driver.returncode == 0, driver.stderr
    result = json.loads(driver.stdout)
    assert result["points"] >= (30 if kind == "run" else 80)  # every directory, file and rename listed
    assert len(result["trials"]) == result["points"] if kind == "run" else len(result["trials"]) >= 30
    began_file = "run.json" if kind == "run" else "sweep.json"
    for trial in result["trials"]:
        if not trial["left"]:
            continue  # killed before the run's folder existed: nothing to resume
        if began_file in trial["files"]:
            assert trial["resume"] == 0 and trial["rows_equal"], trial
            assert set(trial["statuses"]) == {"completed"}, trial
        else:
            assert trial["resume"] == 2, trial  # never begun: one line saying how to start it


def test_a_sweep_resume_waits_for_a_run_another_process_is_finishing(tmp_path: Path) -> None:
    """A run of the sweep is being written by another process (here: its lock, held by this test
    as a separate --resume of it or a stopping worker would hold it): the sweep's --resume says
    so in one warning line and waits for it (it is still running when the test sees the line,
    however slow the machine), and once the lock is released it finishes the sweep instead of
    recording that run as failed."""
    from bbvi_kit.runs import DirectoryLock

    root = workdir(tmp_path, epochs=1, seeds=[0, 1], checkpoint_every=3)
    assert bbvi(["run", "recipe.yaml"], root, BBVI_TEST_KILL_AT_STEP="4").returncode == -signal.SIGKILL
    (sweep,) = (root / "runs" / "faulty").iterdir()
    first = sweep / json.loads((sweep / "sweep.json").read_text())["runs"][0]["dir"]  # killed at its step 4
    warning = f"warning: {first} is being written by another bbvi-kit process; waiting for it to end"
    lock = DirectoryLock(first).acquire()
    try:
        proc = start(["run", "--resume", str(sweep)], root)
        deadline = time.monotonic() + 120
        while warning not in proc.stderr_so_far() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.5)  # still waiting a moment later, not only at the moment it said so
        assert proc.poll() is None, f"the resume did not wait for the held run: {proc.stderr_so_far()}"
    finally:
        lock.release()
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert warning in err
    summary = list(csv.DictReader((sweep / "summary.csv").read_text().splitlines()))
    assert [r["status"] for r in summary] == ["completed"] * 2


def test_a_single_run_stopped_before_it_began_says_how_to_start_it(tmp_path: Path) -> None:
    root = workdir(tmp_path)
    run = root / "runs" / "faulty" / "20260101-000000-abcdef"
    (run / "plots").mkdir(parents=True)
    (run / "recipe.yaml").write_text((root / "recipe.yaml").read_text())
    refused = bbvi(["run", "--resume", str(run)], root)
    assert refused.returncode == 2
    (line,) = refused.stderr.strip().splitlines()
    assert "the run was stopped before it began (no run.json): nothing to resume; start it again with: bbvi-kit " \
           f"run {run / 'recipe.yaml'}" in line


# -- only regular files are read -----------------------------------------------------------------
def test_a_fifo_or_a_device_where_a_file_belongs_is_refused_without_blocking(tmp_path: Path) -> None:
    root = workdir(tmp_path)
    fifo = root / "fifo.yaml"
    os.mkfifo(fifo)
    for args in (["validate", "fifo.yaml"], ["run", "fifo.yaml"]):
        refused = subprocess.run([sys.executable, "-m", "bbvi_kit", *args], cwd=root, env=env(), text=True,
                                 capture_output=True, timeout=60)
        assert refused.returncode == 2
        (line,) = refused.stderr.strip().splitlines()
        assert "fifo.yaml: not a regular file" in line
    assert bbvi(["run", "recipe.yaml"], root, BBVI_TEST_KILL_AT_STEP="12").returncode == -signal.SIGKILL
    run = only_run_dir(root)
    index = run / "checkpoints" / "index.json"
    saved = index.read_text()
    index.unlink()
    os.mkfifo(index)
    refused = bbvi(["run", "--resume", str(run)], root)
    assert refused.returncode == 2 and "index.json: not a regular file" in refused.stderr
    index.unlink()
    index.write_text(saved)
    latest = run / "checkpoints" / json.loads(saved)["checkpoints"][-1]["file"]
    latest.unlink()
    latest.symlink_to("/dev/zero")
    refused = bbvi(["run", "--resume", str(run)], root)
    assert refused.returncode == 2 and "refused, not a regular file" in refused.stderr


def test_stray_temporary_files_are_removed_on_resume_and_at_the_end(tmp_path: Path, reference: dict[str, object]) -> None:
    root = workdir(tmp_path)
    assert bbvi(["run", "recipe.yaml"], root, BBVI_TEST_KILL_AT_STEP="9").returncode == -signal.SIGKILL
    run = only_run_dir(root)
    strays = [run / ".run.json.tmp-99999", run / "plots" / ".loss.tmp-99999.png"]
    for path in strays:
        path.parent.mkdir(exist_ok=True)
        path.write_text("half")
    keep = run / "notes.txt"  # not ours: left alone
    keep.write_text("mine")
    resume_and_compare(root, reference)
    assert not any(p.exists() for p in strays) and keep.read_text() == "mine"
