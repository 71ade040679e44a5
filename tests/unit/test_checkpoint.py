"""Non-finite losses (stop or skip), checkpoints that are tampered with or truncated, and what
``bbvi-kit run --resume`` refuses; in-process, on a tiny VAE."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import pytest
import torch
import yaml

from bbvi_kit.checkpoint import Checkpoints
from bbvi_kit.errors import InputError
from bbvi_kit.runs import DirectoryLock, read_csv
from tests.support.fault_plugin import NAN_DATA_PLUGIN

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# A Gaussian VAE with a numerical fault in the model calls listed in `fault_at`, of the kind
# `fault`: a log joint of +inf (an overflow) or NaN (inf - inf), a finite loss whose gradient is NaN, or NaN
# data, which the likelihood refuses before any loss exists. Only calls with gradients count
# (evaluations run without); the first step traces the model twice (once to find its plates), so
# step n is call n + 1.
FAULTY_VAE = """\
from typing import Literal

import pyro
import torch
from pydantic import Field
from bbvi_kit import register_model
from bbvi_kit_plugins.gaussian_vae import GaussianVAE, GaussianVAEOptions


class Options(GaussianVAEOptions):
    fault_at: list[int] = Field(default_factory=list, description="model calls with a numerical fault")
    fault: Literal["inf", "nan", "nan_gradient", "nan_data"] = Field("inf", description="which fault")


class NaNGradient(torch.autograd.Function):
    \"\"\"0 on the way forward, NaN on the way back.\"\"\"

    @staticmethod
    def forward(ctx, x):
        ctx.shape = x.shape
        return x.sum() * 0.0

    @staticmethod
    def backward(ctx, grad):
        return torch.full(ctx.shape, float("nan"))


@register_model("faulty_vae")
class FaultyVAE(GaussianVAE):
    Options = Options

    def __init__(self, data, **options):
        super().__init__(data, **options)
        self.calls = 0

    def model(self, x):
        fault = None
        if torch.is_grad_enabled():
            self.calls += 1
            if self.calls in self.options.fault_at:
                fault = self.options.fault
        if fault == "nan_data":
            x = torch.full_like(x, float("nan"))
        out = super().model(x)
        if fault == "inf":
            pyro.factor("fault", torch.tensor(float("inf")))
        elif fault == "nan":  # a log density of inf - inf: NaN, which no validation refuses
            inf = torch.tensor(float("inf"))
            pyro.sample("fault", pyro.distributions.Normal(inf, 1.0), obs=inf)
        elif fault == "nan_gradient":
            pyro.factor("fault", NaNGradient.apply(next(self.decoder.parameters())))
        return out
"""


@pytest.fixture(scope="module")
def plugin_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("plugin") / "faulty_vae.py"
    path.write_text(FAULTY_VAE)
    return path


def write_recipe(tmp_path: Path, plugin_file: Path, fault_steps: list[int] = (), fault: str = "inf",
                 estimator: dict | None = None, **training: object) -> Path:
    """A recipe of 12 steps (6 per epoch) with the numerical ``fault`` at ``fault_steps``."""
    recipe = {
        "name": "tiny",
        "plugins": [str(plugin_file)],
        "model": {"name": "faulty_vae", "latent_dim": 2, "hidden": [8], "fault_at": [n + 1 for n in fault_steps],
                  "fault": fault},
        "data": {"name": "digits"},
        "optimizer": {"name": "adam", "lr": 1e-2},
        "estimator": estimator or {"name": "pathwise"},
        "training": {"batch_size": 256, "epochs": 2, "seed": 0, "device": "cpu", "progress": False,
                     "checkpoint_every": 3, **training},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def only_run(tmp_path: Path) -> Path:
    (run,) = (tmp_path / "runs" / "tiny").iterdir()
    return run


# -- non-finite losses ---------------------------------------------------------------------------
CHECKS = pytest.mark.parametrize("check", ["every_step", "at_flush"])
"""Both ways of reading a step's finiteness back must give the same run, rows and messages
(at_flush: the fused optimizer skips the update on the device, the policy acts at the next
flush, here the checkpoint of step 9)."""


@CHECKS
def test_stop_policy_names_the_step_and_the_last_good_checkpoint(tmp_path: Path, plugin_file: Path, cli_run,  # noqa: ANN001
                                                                 check: str) -> None:
    recipe = write_recipe(tmp_path, plugin_file, fault_steps=[8], nonfinite_check=check)
    code, _, err = cli_run(["run", recipe, "--out", tmp_path / "runs"])
    assert code == 1
    run = only_run(tmp_path)
    line = err.splitlines()[-1]
    assert line.startswith("error: non-finite loss or gradient at step 8 (epoch 1): loss=-inf, minibatch_grad_norm_sq=")
    assert line.endswith(f"; last good checkpoint: {run}/checkpoints/step-000000006.pt (step 6)")
    assert [int(r["step"]) for r in read_csv(run / "metrics.csv")] == list(range(1, 8))
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "failed" and "step 8" in info["error"]


@pytest.mark.parametrize(("fault", "validation", "message"), [
    ("nan", "first_step", r"non-finite loss or gradient at step 8 \(epoch 1\): loss=nan, minibatch_grad_norm_sq=[0-9.e+]+;"),
    ("nan_gradient", "first_step",
     r"non-finite loss or gradient at step 8 \(epoch 1\): loss=[0-9.]+, minibatch_grad_norm_sq=nan;"),
    # without validation NaN data gives a NaN loss; with it, the likelihood refuses the data
    ("nan_data", "first_step", r"non-finite loss or gradient at step 8 \(epoch 1\): loss=nan, minibatch_grad_norm_sq=nan;"),
    ("nan_data", "every_step", r"step 8 \(epoch 1\): model or guide failed: ValueError: Error while computing "
                               r"log_prob at site 'x': Expected value argument .* but found invalid values;"),
])
@CHECKS
def test_stop_policy_catches_nans_before_the_step(tmp_path: Path, plugin_file: Path, cli_run, fault: str,  # noqa: ANN001
                                                  validation: str, message: str, check: str) -> None:
    recipe = write_recipe(tmp_path, plugin_file, fault_steps=[8], fault=fault, validation=validation,
                          nonfinite_check=check)
    code, _, err = cli_run(["run", recipe, "--out", tmp_path / "runs"])
    assert code == 1
    # Pyro may warn of the NaN on a line of its own first; the error is one line.
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert line == err.splitlines()[-1] and re.search(message, line), err
    assert line.endswith("checkpoints/step-000000006.pt (step 6)")
    run = only_run(tmp_path)
    assert [int(r["step"]) for r in read_csv(run / "metrics.csv")] == list(range(1, 8))


@pytest.mark.parametrize(("fault", "validation"), [
    ("inf", "first_step"), ("nan", "first_step"), ("nan_gradient", "first_step"), ("nan_data", "first_step"),
    ("nan_data", "every_step"),
])
@CHECKS
def test_skip_policy_skips_the_update_and_counts(tmp_path: Path, plugin_file: Path, cli_run, fault: str,  # noqa: ANN001
                                                 validation: str, check: str) -> None:
    recipe = write_recipe(tmp_path, plugin_file, fault_steps=[4, 9], fault=fault, on_nonfinite="skip",
                          max_nonfinite_skips=2, validation=validation, nonfinite_check=check)
    code, _, err = cli_run(["run", recipe, "--out", tmp_path / "runs"])
    assert code == 0, err
    run = only_run(tmp_path)
    rows = read_csv(run / "metrics.csv")
    assert len(rows) == 12
    assert [r["skipped_steps"] for r in rows] == [0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2]
    faulty = [r["step"] for r in rows if not torch.isfinite(torch.tensor([r["loss"], r["minibatch_grad_norm_sq"]])).all()]
    assert faulty == [4, 9]
    assert all(torch.isfinite(torch.tensor(r["minibatch_grad_norm_sq_avg"])) for r in rows)
    # The running average is over the steps that updated; the skipped ones are left out.
    finite = []
    for r in rows:
        if r["step"] not in (4, 9):
            finite.append(r["minibatch_grad_norm_sq"])
        assert r["minibatch_grad_norm_sq_avg"] == pytest.approx(sum(finite) / len(finite), rel=1e-5)
    # 2 of 12 skipped is more than the default 10%: the run completes with a warning.
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "completed" and info["warning"].startswith("2 of 12 steps (17%) were skipped")
    assert "warning: 2 of 12 steps" in err
    # Adam took 10 steps, not 12.
    final = Checkpoints(run).load(Checkpoints(run).latest())
    assert {float(s["step"]) for s in final["optimizer"]["state"].values()} == {10.0}


@CHECKS
def test_a_skipped_step_leaves_the_score_baseline_as_it_was(tmp_path: Path, plugin_file: Path, cli_run,  # noqa: ANN001
                                                           check: str) -> None:
    """A NaN learning signal must not reach the running-mean baseline: if it did, every later
    step would be NaN too and the run would stop at the skip limit."""
    recipe = write_recipe(tmp_path, plugin_file, fault_steps=[4], fault="nan", on_nonfinite="skip",
                          max_nonfinite_skips=1, estimator={"name": "score", "baseline": "running_mean"},
                          nonfinite_check=check)
    code, _, err = cli_run(["run", recipe, "--out", tmp_path / "runs"])
    assert code == 0, err
    run = only_run(tmp_path)
    rows = read_csv(run / "metrics.csv")
    assert [r["step"] for r in rows if not math.isfinite(r["loss"] + r["minibatch_grad_norm_sq"])] == [4]
    final = Checkpoints(run).load(Checkpoints(run).latest())
    assert torch.isfinite(final["estimator"]["running_mean"])


@CHECKS
def test_skip_policy_stops_after_the_limit(tmp_path: Path, plugin_file: Path, cli_run, check: str) -> None:  # noqa: ANN001
    recipe = write_recipe(tmp_path, plugin_file, fault_steps=[2, 3, 5], on_nonfinite="skip", max_nonfinite_skips=2,
                          nonfinite_check=check)
    code, _, err = cli_run(["run", recipe, "--out", tmp_path / "runs"])
    assert code == 1
    assert "at step 5 (epoch 0)" in err
    assert "3 steps skipped, more than training.max_nonfinite_skips=2" in err
    assert "last good checkpoint:" in err and "(step 3)" in err


# -- non-finite data -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def nan_data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("nan_data") / "nan_digits.py"
    path.write_text(NAN_DATA_PLUGIN)
    return path


def nan_data_recipe(tmp_path: Path, plugin_file: Path, nan_data_file: Path, data: dict, **training: object) -> Path:
    path = write_recipe(tmp_path, plugin_file, **training)
    recipe = yaml.safe_load(path.read_text())
    recipe["plugins"].append(str(nan_data_file))
    recipe["data"] = {"name": "nan_digits", **data}
    recipe["diagnostics"] = [{"name": "heldout_iwae", "num_samples": 3}]
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_nan_in_the_test_split_stops_naming_the_split_and_the_example(tmp_path: Path, plugin_file: Path,  # noqa: ANN001
                                                                       nan_data_file: Path, cli_run) -> None:
    recipe = nan_data_recipe(tmp_path, plugin_file, nan_data_file, {"test_nan": [3, 40]})
    code, _, err = cli_run(["run", recipe, "--out", tmp_path / "runs"])
    assert code == 1
    line = err.splitlines()[-1]
    assert err.count("\n") == 1 and line.startswith("error: the test split holds a non-finite value at example 3 "), err
    info = json.loads((only_run(tmp_path) / "run.json").read_text())
    assert info["status"] == "failed" and "\n" not in info["error"] and "tensor(" not in info["error"]


def test_nan_in_the_test_split_is_left_out_and_counted_under_skip(tmp_path: Path, plugin_file: Path,  # noqa: ANN001
                                                                 nan_data_file: Path, cli_run) -> None:
    recipe = nan_data_recipe(tmp_path, plugin_file, nan_data_file, {"test_nan": [3, 40]}, on_nonfinite="skip")
    code, _, err = cli_run(["run", recipe, "--out", tmp_path / "runs"])
    assert code == 0, err
    run = only_run(tmp_path)
    evals = read_csv(run / "eval.csv")
    assert [r["test_nonfinite_examples"] for r in evals] == [2, 2]
    assert all(math.isfinite(r["test_loss"]) and math.isfinite(r["test_objective_loss"]) for r in evals)
    heldout = read_csv(run / "diagnostics" / "heldout_iwae.csv")  # the diagnostic leaves them out too
    assert heldout and all(math.isfinite(v) for r in heldout for k, v in r.items() if k != "time")
    assert "warning" not in err  # no step was skipped


def test_nan_in_the_first_training_step_is_skipped_and_the_run_warns(tmp_path: Path, plugin_file: Path,  # noqa: ANN001
                                                                     nan_data_file: Path, cli_run) -> None:
    """The first step's batch holds a NaN: under skip it is skipped like any other step (its
    traces, taken again without argument checks, still name the parameters). Its first shuffled
    example with seed 0 is training example 956."""
    recipe = nan_data_recipe(tmp_path, plugin_file, nan_data_file, {"train_nan": [956]}, on_nonfinite="skip",
                             warn_skipped_fraction=0.15)
    code, _, err = cli_run(["run", recipe, "--out", tmp_path / "runs"])
    assert code == 0, err
    run = only_run(tmp_path)
    rows = read_csv(run / "metrics.csv")
    assert [r["step"] for r in rows if math.isnan(r["loss"])] == [1, 10]  # the example's batch in each epoch
    assert [r["skipped_steps"] for r in rows] == [1] * 9 + [2] * 3
    warning = "2 of 12 steps (17%) were skipped as non-finite, more than training.warn_skipped_fraction=0.15"
    assert f"warning: {warning}" in err
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "completed" and info["warning"].startswith(warning)


# -- resume refusals -----------------------------------------------------------------------------
@pytest.fixture
def stopped_run(tmp_path: Path, plugin_file: Path, cli_run) -> Path:  # noqa: ANN001
    """A run that stopped after its checkpoint of step 6 (a non-finite loss at step 8)."""
    recipe = write_recipe(tmp_path, plugin_file, fault_steps=[8])
    assert cli_run(["run", recipe, "--out", tmp_path / "runs"])[0] == 1
    return only_run(tmp_path)


def snapshot(run: Path) -> dict[str, bytes]:
    return {p.relative_to(run).as_posix(): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def refuse(cli_run, run: Path, message: str) -> None:  # noqa: ANN001
    before = snapshot(run)
    code, _, err = cli_run(["run", "--resume", run])
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert snapshot(run) == before  # nothing was cut back, rewritten or removed


def latest_file(run: Path) -> Path:
    return run / "checkpoints" / Checkpoints(run).latest().file


def test_truncated_checkpoint_is_refused(stopped_run: Path, cli_run) -> None:  # noqa: ANN001
    path = latest_file(stopped_run)
    path.write_bytes(path.read_bytes()[:1000])
    refuse(cli_run, stopped_run, "contents do not match index.json")


def test_modified_checkpoint_is_refused(stopped_run: Path, cli_run) -> None:  # noqa: ANN001
    path = latest_file(stopped_run)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    refuse(cli_run, stopped_run, "contents do not match index.json")


class _Payload:
    """An object whose unpickling would run code (what a malicious checkpoint contains)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (f"touch {self.marker}",))


def reindex(run: Path, data: bytes) -> None:
    """Replace the newest checkpoint by ``data`` and make index.json agree, as an attacker who can
    write the run directory would."""
    import hashlib

    path = latest_file(run)
    path.write_bytes(data)
    index = json.loads((run / "checkpoints" / "index.json").read_text())
    index["checkpoints"][-1].update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    (run / "checkpoints" / "index.json").write_text(json.dumps(index))


def test_a_checkpoint_that_would_run_code_is_refused_without_running_it(stopped_run: Path, cli_run) -> None:  # noqa: ANN001
    marker = stopped_run.parent / "pwned"
    import io

    buffer = io.BytesIO()
    torch.save({"format": 1, "step": 6, "parameters": _Payload(marker)}, buffer)
    reindex(stopped_run, buffer.getvalue())
    refuse(cli_run, stopped_run, "refused, not a loadable checkpoint (UnpicklingError")
    assert not marker.exists()


def test_a_checkpoint_of_another_model_is_refused(stopped_run: Path, cli_run) -> None:  # noqa: ANN001
    state = torch.load(latest_file(stopped_run), weights_only=True)
    state["parameters"][0] = torch.zeros(3, 3)
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    reindex(stopped_run, buffer.getvalue())
    refuse(cli_run, stopped_run, "the checkpoint does not fit this run")


@pytest.mark.parametrize("drop", ["rng", "loop.elapsed", "loop.skipped_steps", "optimizer"])
def test_a_checkpoint_missing_an_entry_is_refused_naming_it(stopped_run: Path, cli_run, drop: str) -> None:  # noqa: ANN001
    state = torch.load(latest_file(stopped_run), weights_only=True)
    *parents, key = drop.split(".")
    holder = state
    for parent in parents:
        holder = holder[parent]
    del holder[key]
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    reindex(stopped_run, buffer.getvalue())
    refuse(cli_run, stopped_run, f"refused, it lacks {drop} (not a whole bbvi-kit checkpoint)")


def test_plots_being_a_file_is_refused_in_one_line(stopped_run: Path, cli_run) -> None:  # noqa: ANN001
    import shutil

    shutil.rmtree(stopped_run / "plots")
    (stopped_run / "plots").write_text("not a folder")
    refuse(cli_run, stopped_run, f"{stopped_run / 'plots'}: exists and is not a folder; move it away")
    code, _, err = cli_run(["plot", stopped_run])
    assert code == 2 and err == f"error: {stopped_run / 'plots'}: exists and is not a folder; move it away\n"


@pytest.mark.parametrize(("line", "message"), [
    ("3,0,abc", "line 3: 3 fields, the header has"),
    (None, "line 3, column loss: 'abc' is not a number"),
])
def test_a_malformed_csv_row_is_one_line_naming_the_file_and_line(stopped_run: Path, cli_run, line: str | None,  # noqa: ANN001
                                                                 message: str) -> None:
    path = stopped_run / "metrics.csv"
    lines = path.read_text().splitlines(keepends=True)
    if line is None:  # a whole row with a word where the loss was
        fields = lines[2].split(",")
        fields[2] = "abc"
        line = ",".join(fields).rstrip("\n")
    lines[2] = line + "\n"
    path.write_text("".join(lines))
    with pytest.raises(InputError, match=re.escape(f"{path}: {message}")):
        read_csv(path)
    code, _, err = cli_run(["plot", stopped_run])
    assert code == 2 and err.count("\n") == 1 and message in err, err


def test_an_unreadable_index_is_refused(stopped_run: Path, cli_run) -> None:  # noqa: ANN001
    (stopped_run / "checkpoints" / "index.json").write_text("{not json")
    refuse(cli_run, stopped_run, "unreadable checkpoint index")


def test_a_completed_run_is_not_resumed(tmp_path: Path, plugin_file: Path, cli_run) -> None:  # noqa: ANN001
    recipe = write_recipe(tmp_path, plugin_file)
    assert cli_run(["run", recipe, "--out", tmp_path / "runs"])[0] == 0
    refuse(cli_run, only_run(tmp_path), "already completed; nothing to resume")


def test_a_run_in_use_by_another_process_is_not_resumed(stopped_run: Path, cli_run) -> None:  # noqa: ANN001
    lock = DirectoryLock(stopped_run).acquire()
    try:
        refuse(cli_run, stopped_run, "is being written by another bbvi-kit process")
    finally:
        lock.release()


@pytest.mark.parametrize("args", [["recipes/quickstart.yaml", "--resume", "DIR"], ["--resume", "DIR", "x=1"]])
def test_resume_takes_no_recipe_or_overrides(stopped_run: Path, cli_run, args: list[str]) -> None:  # noqa: ANN001
    code, _, err = cli_run(["run", *[str(stopped_run) if a == "DIR" else a for a in args]])
    assert code == 2 and "--resume DIR takes no RECIPE" in err


def test_from_scratch_goes_with_the_resume_of_one_run(stopped_run: Path, tmp_path: Path, cli_run) -> None:  # noqa: ANN001
    code, _, err = cli_run(["run", "recipes/quickstart.yaml", "--from-scratch"])
    assert code == 2 and "--from-scratch goes with --resume RUN_DIR" in err
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "sweep.json").write_text("{}")
    code, _, err = cli_run(["run", "--resume", sweep, "--from-scratch"])
    assert code == 2 and "a sweep's runs resume from their checkpoints" in err
    before = snapshot(stopped_run)
    code, _, err = cli_run(["run", "--resume", stopped_run, "--from-scratch"])
    assert code == 1 and "at step 8 (epoch 1)" in err  # from step 0 again, so the fault is met again
    assert [int(r["step"]) for r in read_csv(stopped_run / "metrics.csv")] == list(range(1, 8))
    (aside,) = stopped_run.glob("set-aside-*")
    assert {k: v for k, v in snapshot(aside).items()} == {k: v for k, v in before.items()
                                                          if k.split("/")[0] in ("metrics.csv", "eval.csv", "checkpoints")}


def test_resume_of_something_else_is_refused(tmp_path: Path, cli_run) -> None:  # noqa: ANN001
    code, _, err = cli_run(["run", "--resume", tmp_path])
    assert code == 2 and "neither a run directory" in err
    code, _, err = cli_run(["run", "--resume", tmp_path / "missing"])
    assert code == 2 and "no such directory" in err


def test_resume_after_a_stop_goes_on_from_the_checkpoint(stopped_run: Path, cli_run) -> None:  # noqa: ANN001
    """The run stopped at step 8 resumes from its checkpoint of step 6: the rows written after the
    checkpoint are cut back and written again, never twice. (The fault plugin counts its calls
    afresh in the new process, so the fault no longer falls on step 8.)"""
    code, _, err = cli_run(["run", "--resume", stopped_run])
    info = json.loads((stopped_run / "run.json").read_text())
    assert info["resumed"][0]["from_step"] == 6
    steps = [int(r["step"]) for r in read_csv(stopped_run / "metrics.csv")]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) > 7
    assert (code, info["status"]) in ((0, "completed"), (1, "failed")), err


# -- resuming from Python ------------------------------------------------------------------------
def _python_run(path: Path, fail_at_call: int | None = None):  # noqa: ANN202
    """A Pyro model and guide with `pyro.param` sites (no nn.Module), trained by `Trainer`
    into ``path``; optionally raising inside the model at one call (a crash)."""
    import pyro
    import pyro.distributions as dist
    from torch.utils.data import TensorDataset

    from bbvi_kit import ELBO, Adam, ScoreFunction, Trainer, TrainingOptions

    calls = [0]

    def model(x: torch.Tensor) -> None:
        calls[0] += 1
        if calls[0] == fail_at_call:
            raise RuntimeError("the machine went away")
        mu = pyro.param("mu", torch.zeros(2))
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(mu, 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, 0.5).to_event(1), obs=x)

    def guide(x: torch.Tensor) -> None:
        w = pyro.param("w", torch.full((2,), 0.1))
        scale = pyro.param("scale", torch.ones(2), constraint=dist.constraints.positive)
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(w * x, scale).to_event(1))

    data = torch.randn(200, 2, generator=torch.Generator().manual_seed(0)) + 1.0
    train, test = TensorDataset(data[:160]), TensorDataset(data[160:])
    pyro.clear_param_store()
    trainer = Trainer(model, guide, objective=ELBO(num_particles=2), estimator=ScoreFunction(baseline="running_mean"),
                      optimizer=Adam(lr=0.05),
                      training=TrainingOptions(batch_size=32, epochs=4, progress=False, device="cpu",
                                               checkpoint_every=7))
    return trainer, train, test


def test_resume_from_python_with_param_store_parameters(tmp_path: Path) -> None:
    from bbvi_kit.errors import TrainingError
    from bbvi_kit.runs import RunDirectory

    trainer, train, test = _python_run(tmp_path)
    reference = trainer.fit(train, test, run=RunDirectory.create(tmp_path / "a", "py"))

    trainer, train, test = _python_run(tmp_path, fail_at_call=25)  # model calls, evaluations included
    run = RunDirectory.create(tmp_path / "b", "py")
    with pytest.raises(TrainingError, match=r"the machine went away; last good checkpoint: .*step-000000014.pt \(step 14\)"):
        trainer.fit(train, test, run=run)
    run.close()
    run.release()

    run = RunDirectory.reopen(run.path)
    checkpoints = Checkpoints(run.path)
    state = checkpoints.load(checkpoints.latest())
    kept = run.restore_logs(state["logs"])
    trainer, train, test = _python_run(tmp_path)  # a new process would build everything again
    history = trainer.fit(train, test, run=run, resume=state)
    run.close()
    assert len(kept["metrics.csv"]) == 14
    assert [r["loss"] for r in kept["metrics.csv"] + history.metrics] == [r["loss"] for r in reference.metrics]
    assert [r["test_loss"] for r in kept["eval.csv"] + history.evals] == [r["test_loss"] for r in reference.evals]
    assert read_csv(run.path / "metrics.csv")[-1]["minibatch_grad_norm_sq_avg"] == reference.metrics[-1]["minibatch_grad_norm_sq_avg"]


def test_a_cut_inside_a_row_is_refused_before_any_file_changes(tmp_path: Path) -> None:
    from bbvi_kit.errors import InputError
    from bbvi_kit.runs import RunDirectory

    run = RunDirectory.create(tmp_path, "cut")
    run.metrics.write([{"step": 1, "loss": 2.5}, {"step": 2, "loss": 2.25}])
    run.evals.write([{"step": 2, "test_loss": 3.0}])
    run.close()
    run.release()
    metrics, evals = (run.path / "metrics.csv").read_bytes(), (run.path / "eval.csv").read_bytes()
    again = RunDirectory.reopen(run.path)
    try:
        with pytest.raises(InputError, match="falls inside a row"):
            again.restore_logs({"eval.csv": len(evals) - 3, "metrics.csv": len(metrics) - 3})
        with pytest.raises(InputError, match="falls inside a row"):
            again.restore_logs({"metrics.csv": len(metrics) - 3, "eval.csv": len(evals)})
    finally:
        again.release()
    assert (run.path / "metrics.csv").read_bytes() == metrics and (run.path / "eval.csv").read_bytes() == evals
