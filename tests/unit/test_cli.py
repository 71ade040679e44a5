"""The ``bbvi-kit`` command line: help, validate, one-line errors and exit codes, runs, plots.

Most calls run ``bbvi_kit.cli.main`` in-process (it ends with ``sys.exit`` on errors, caught
here); a few run ``python -m bbvi_kit`` in a subprocess to check what a shell really gets.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import re
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml

from bbvi_kit import cli
from bbvi_kit.recipe import load_recipe
from tests.support.cli import assert_one_line_error, call_cli, run_dir_from
from tests.support import REPO

QUICKSTART = REPO / "recipes" / "quickstart.yaml"
TINY = ["training.iterations=5", "training.progress=false", "model.hidden=[8]", "model.latent_dim=2",
        "training.device=cpu"]
MINIMAL = "model: {name: gaussian_vae}\n"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
METRIC_COLUMNS = ["step", "epoch", "loss", "minibatch_grad_norm_sq", "minibatch_grad_norm_sq_avg", "lr", "time"]


# --------------------------------------------------------------------------------------------
# helpers


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC), f"{path} is not a PNG file"
    assert len(data) > 1000, f"{path} is suspiciously small"


# --------------------------------------------------------------------------------------------
# help and validate


def test_run_help_documents_overrides_and_out(cli_run: Callable) -> None:
    code, out, _ = cli_run(["run", "--help"])
    assert code == 0
    assert "[RECIPE] [OVERRIDES]..." in out and "--out" in out and "KEY=VALUE" in out and "--resume" in out


def test_version(cli_run: Callable) -> None:
    code, out, _ = cli_run(["--version"])
    assert code == 0 and out.strip() == "bbvi-kit, version 0.1.0"


def test_validate_prints_the_resolved_recipe(cli_run: Callable) -> None:
    code, out, err = cli_run(["validate", QUICKSTART, "optimizer.lr=1e-4", "objective.num_particles=5"])
    assert code == 0 and err == ""
    printed = yaml.safe_load(out)
    assert printed["optimizer"]["lr"] == pytest.approx(1e-4)
    assert printed["objective"] == {"name": "elbo", "num_particles": 5, "kl": "sample"}
    assert printed["model"]["hidden"] == [128, 64]  # from the file
    assert printed["training"]["eval_batch_size"] == 512  # a default the file never mentions
    assert printed == load_recipe(QUICKSTART, ["optimizer.lr=1e-4", "objective.num_particles=5"]).as_dict()


# --------------------------------------------------------------------------------------------
# bad input: exit code 2, one line "error: ..." naming the file and the key, no traceback

BAD_INPUTS: list[tuple[str, Any, list[str], list[str]]] = [
    # (id, recipe content (None: no file), overrides, pieces the error line must contain)
    ("unknown-top-level-key", "modle: {name: gaussian_vae}\n" + MINIMAL, [], ["{path}: modle: unknown key"]),
    ("unknown-training-key", MINIMAL + "training: {epoch: 3}\n", [], ["{path}: training.epoch: unknown key"]),
    ("unknown-model-option", "model: {name: gaussian_vae, hidden_sizes: [3]}\n", [],
     ["{path}: model.hidden_sizes: unknown key"]),
    ("wrong-type", MINIMAL + "training: {batch_size: abc}\n", [], ["{path}: training.batch_size: ", "integer"]),
    ("wrong-item-type", "model: {name: gaussian_vae, hidden: [a]}\n", [], ["{path}: model.hidden.0: "]),
    ("unknown-plugin", "model: {name: gausian_vae}\n", [],
     ["{path}: model.name: unknown model plugin 'gausian_vae'", "did you mean 'gaussian_vae'?"]),
    ("malformed-yaml", "model:\n  name: gaussian_vae\n   latent_dim: 3\n", [], ["{path}: invalid YAML at line 3"]),
    ("empty-file", "", [], ["{path}: the recipe is empty"]),
    ("top-level-list", "- model\n", [], ["{path}: a recipe must be a mapping"]),
    ("binary-junk", bytes(range(256)), [], ["{path}: not a UTF-8 text file"]),
    ("missing-recipe", None, [], ["recipe file not found: {path}"]),
    ("override-wrong-type", MINIMAL, ["training.batch_size=abc"], ["{path}: training.batch_size: "]),
    ("override-lr-out-of-range", MINIMAL + "optimizer: {name: adam}\n", ["optimizer.lr=1e30"],
     ["{path}: optimizer.lr: ", "1000"]),
    ("override-without-equals", MINIMAL, ["optimizer.lr"], ["override 'optimizer.lr': expected KEY=VALUE"]),
    ("override-through-a-value", MINIMAL, ["model.name.x=1"], ["override 'model.name.x=1': model.name is not a section"]),
    ("missing-plugin-file", "plugins: [nope.py]\n" + MINIMAL, [],
     ["{path}: plugins.0: plugin file not found: {dir}/nope.py"]),
    ("failing-plugin-file", "plugins: [boom.py]\n" + MINIMAL, [],
     ["{path}: plugins.0: plugin file {dir}/boom.py failed to import: RuntimeError: boom"]),
    ("beta-vae-with-elbo", "model: {name: beta_vae}\nobjective: {name: elbo}\n", [],
     ["{path}: objective.name: model 'beta_vae' trains under 'beta'"]),
    ("leave-one-out-with-one-particle",
     MINIMAL + "estimator: {name: score, baseline: leave_one_out}\nobjective: {name: elbo, num_particles: 1}\n", [],
     ["{path}: estimator: ", "leave_one_out"]),
    ("name-with-slash", "name: a/b\n" + MINIMAL, [], ["{path}: name: 'a/b' must be"]),
]


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("content, overrides, pieces", [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_one_line_and_exit_code_2(
    tmp_path: Path, cli_run: Callable, command: str, content: Any, overrides: list[str], pieces: list[str]
) -> None:
    path = tmp_path / "bad.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    (tmp_path / "boom.py").write_text("raise RuntimeError('boom')\n")
    out_root = tmp_path / "runs"
    args = [command, path, *overrides] + (["--out", out_root] if command == "run" else [])
    code, out, err = cli_run(args)
    assert code == 2
    assert out == ""
    assert_one_line_error(err, *(p.format(path=path, dir=tmp_path.resolve()) for p in pieces))
    assert not out_root.exists() or not any(out_root.rglob("*")), "a bad recipe must not leave a run directory"


def test_debug_does_not_leak_into_later_calls(tmp_path: Path, cli_run: Callable) -> None:
    missing = tmp_path / "missing.yaml"
    code, _, err = cli_run(["--debug", "validate", missing])
    assert code == 2 and "Traceback" in err
    code, _, err = cli_run(["validate", missing])
    assert code == 2
    assert_one_line_error(err, f"recipe file not found: {missing}")


@pytest.mark.parametrize("args, problem", [
    (["run"], "Missing argument 'RECIPE'"),
    (["bogus-command"], "No such command 'bogus-command'"),
    (["validate", "r.yaml", "--no-such-option"], "No such option '--no-such-option'"),
    (["plot"], "Missing argument 'DIRS...'"),
])
def test_usage_errors_are_one_line_and_exit_2(cli_run: Callable, args: list[str], problem: str) -> None:
    code, out, err = cli_run(args)
    assert code == 2 and out == ""
    assert_one_line_error(err, problem, "--help")


@pytest.mark.parametrize("args, problem", [
    (["run", QUICKSTART, "training.seeds=[0,1]"], "give a recipe without training.seeds or sweep"),
    (["run", "--resume", "runs/x"], "no --resume or --executor"),
])
def test_under_torchrun_a_run_is_one_data_parallel_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        cli_run: Callable, args: list[str], problem: str) -> None:
    """torchrun starts each process with ``WORLD_SIZE`` set (a real 2-process run is
    tests/integration/test_data_parallel.py): a sweep or a resume there is refused before any
    process group is made, and nothing is written."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.chdir(tmp_path)
    code, _, err = cli_run(args)
    assert code == 2
    assert_one_line_error(err, "under torchrun, bbvi-kit run trains one run data-parallel", problem)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------
# a real run


@contextlib.contextmanager
def _no_debug() -> Iterator[None]:
    saved = cli._state["debug"]
    cli._state["debug"] = False
    try:
        yield
    finally:
        cli._state["debug"] = saved


def _run_in_process(args: list[object]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with _no_debug(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = call_cli(args)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny quickstart run twice into the same --out root; run 1 is snapshotted in between."""
    out_root = tmp_path_factory.mktemp("cli_runs") / "out"
    first = _run_in_process(["run", QUICKSTART, *TINY, "--out", out_root])
    assert first[0] == 0, first[2]
    run1 = run_dir_from(first[1])
    before = snapshot(run1)
    second = _run_in_process(["run", QUICKSTART, *TINY, "--out", out_root])
    assert second[0] == 0, second[2]
    return {"out_root": out_root, "stdout": first[1], "stderr": first[2], "run1": run1, "before": before,
            "run2": run_dir_from(second[1])}


def test_run_prints_a_summary_and_the_run_directory(two_runs: dict[str, Any]) -> None:
    assert two_runs["stderr"] == ""
    assert re.search(r"^done: 5 iterations, loss [-0-9.]+, test loss [-0-9.]+", two_runs["stdout"], flags=re.M)
    run1 = two_runs["run1"]
    assert run1.is_dir() and run1.parent == two_runs["out_root"] / "quickstart"


def test_run_directory_holds_the_resolved_recipe(two_runs: dict[str, Any]) -> None:
    recipe_file = two_runs["run1"] / "recipe.yaml"
    expected = load_recipe(QUICKSTART, TINY).as_dict()
    assert yaml.safe_load(recipe_file.read_text()) == expected
    assert load_recipe(recipe_file).as_dict() == expected  # re-runnable as it is


def test_run_directory_holds_the_metrics(two_runs: dict[str, Any]) -> None:
    columns, rows = read_csv(two_runs["run1"] / "metrics.csv")
    assert columns[:5] == METRIC_COLUMNS[:5]
    assert set(columns) == {*METRIC_COLUMNS, "minibatch_grad_norm_sq_phi", "minibatch_grad_norm_sq_theta"}
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5]
    assert all(int(r["epoch"]) == 0 for r in rows)
    assert all(float(r["lr"]) == pytest.approx(0.01) for r in rows)  # inv_sqrt_epoch: factor 1 in epoch 0
    times = [float(r["time"]) for r in rows]
    assert times == sorted(times) and times[0] >= 0
    squares = [float(r["minibatch_grad_norm_sq"]) for r in rows]
    assert all(math.isfinite(float(r["loss"])) and s > 0 for r, s in zip(rows, squares))
    for n, row in enumerate(rows, start=1):
        assert float(row["minibatch_grad_norm_sq_avg"]) == pytest.approx(sum(squares[:n]) / n, rel=1e-4)
        parts = float(row["minibatch_grad_norm_sq_phi"]) + float(row["minibatch_grad_norm_sq_theta"])
        assert parts == pytest.approx(float(row["minibatch_grad_norm_sq"]), rel=1e-4)


def test_run_directory_holds_the_evaluation_and_status(two_runs: dict[str, Any]) -> None:
    run1 = two_runs["run1"]
    columns, evals = read_csv(run1 / "eval.csv")
    assert {"step", "test_loss"} <= set(columns)
    assert int(evals[-1]["step"]) == 5 and math.isfinite(float(evals[-1]["test_loss"]))
    info = json.loads((run1 / "run.json").read_text())
    assert info["status"] == "completed"
    assert info["steps_done"] == 5
    _, rows = read_csv(run1 / "metrics.csv")
    assert info["final_loss"] == pytest.approx(float(rows[-1]["loss"]))
    assert info["final_test_loss"] == pytest.approx(float(evals[-1]["test_loss"]))


def test_run_directory_holds_the_plots(two_runs: dict[str, Any]) -> None:
    assert sorted(p.name for p in (two_runs["run1"] / "plots").iterdir()) == ["grad_norm_sq.png", "loss.png"]
    for name in ("loss.png", "grad_norm_sq.png"):
        assert_png(two_runs["run1"] / "plots" / name)


def test_running_twice_gives_two_directories_and_overwrites_nothing(two_runs: dict[str, Any]) -> None:
    run1, run2 = two_runs["run1"], two_runs["run2"]
    assert run1 != run2 and run1.parent == run2.parent
    assert sorted(p.name for p in run1.parent.iterdir()) == sorted([run1.name, run2.name])
    assert snapshot(run1) == two_runs["before"]
    assert json.loads((run2 / "run.json").read_text())["status"] == "completed"


def test_plot_redraws_the_plots(two_runs: dict[str, Any], cli_run: Callable) -> None:
    run2 = two_runs["run2"]
    plots = [run2 / "plots" / "loss.png", run2 / "plots" / "grad_norm_sq.png"]
    for path in plots:
        path.unlink()
    code, out, err = cli_run(["plot", run2])
    assert code == 0, err
    assert out.splitlines() == [str(p) for p in plots]
    for path in plots:
        assert_png(path)


def test_plot_of_several_runs_draws_the_combined_figures(two_runs: dict[str, Any], tmp_path: Path,
                                                         cli_run: Callable) -> None:
    code, _, err = cli_run(["plot", two_runs["run1"], two_runs["run2"]])
    assert code == 2 and "--out" in err
    code, out, err = cli_run(["plot", two_runs["run1"], two_runs["run2"], "--out", tmp_path / "figs"])
    assert code == 0, err
    assert {Path(p).name for p in out.splitlines()} >= {"grad_norm_sq.png", "grad_norm_sq.pdf", "test_loss.png"}
    blocked = tmp_path / "file"
    blocked.write_text("")
    code, out, err = cli_run(["plot", two_runs["run1"], "--out", blocked / "figs"])
    assert code == 2 and out == ""
    assert_one_line_error(err, str(blocked / "figs"))


def test_plot_of_a_folder_that_is_no_run_is_an_error(tmp_path: Path, cli_run: Callable) -> None:
    code, out, err = cli_run(["plot", tmp_path])
    assert code == 2 and out == ""
    assert_one_line_error(err, str(tmp_path), "no run director")


# --------------------------------------------------------------------------------------------
# runs that fail

NAN_GRADIENT_SRC = '''
import torch

from bbvi_kit import register_model
from bbvi_kit_plugins.gaussian_vae import GaussianVAE


@register_model({name!r})
class NanGradientVAE(GaussianVAE):
    """From its 5th decoder call on, the decoder output gets + sqrt(0 * sum(w)): the value is
    unchanged (the loss stays finite) but the gradient is 0 * inf = NaN."""

    def __init__(self, data, **options):
        super().__init__(data, **options)
        self.calls = 0

    def decode(self, z):
        self.calls += 1
        out = super().decode(z)
        if self.calls >= 5:
            out = out + torch.sqrt(0.0 * self.decoder[0].weight.sum())
        return out
'''

RAISING_SRC = '''
from bbvi_kit import register_model
from bbvi_kit_plugins.gaussian_vae import GaussianVAE


@register_model({name!r})
class RaisingVAE(GaussianVAE):
    def __init__(self, data, **options):
        super().__init__(data, **options)
        self.calls = 0

    def model(self, x):
        self.calls += 1
        if self.calls >= 5:
            raise RuntimeError("model blew up\\nwhile computing the likelihood")
        super().model(x)
'''


def _failing_recipe(tmp_path: Path, source: str, name: str) -> Path:
    (tmp_path / "failing_plugin.py").write_text(source.format(name=name))
    recipe = tmp_path / "failing.yaml"
    recipe.write_text(yaml.safe_dump({
        "plugins": ["failing_plugin.py"],
        "model": {"name": name, "hidden": [8], "latent_dim": 2},
        "training": {"batch_size": 32, "iterations": 20, "progress": False, "device": "cpu"},
    }))
    return recipe


def _only_run_dir(out_root: Path) -> Path:
    (run_dir,) = list((out_root / "failing").iterdir())
    return run_dir


def test_non_finite_gradient_fails_the_run_and_keeps_earlier_rows(tmp_path: Path, cli_run: Callable) -> None:
    recipe = _failing_recipe(tmp_path, NAN_GRADIENT_SRC, f"nan_gradient_vae_{uuid.uuid4().hex[:8]}")
    code, out, err = cli_run(["run", recipe, "--out", tmp_path / "runs"])
    assert code == 1
    line = assert_one_line_error(err, "non-finite loss or gradient")
    step = int(re.search(r"\bstep (\d+)\b", line).group(1))
    assert step >= 2
    assert "run directory" not in out

    run_dir = _only_run_dir(tmp_path / "runs")
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "failed"
    assert info["steps_done"] == step and f"step {step}" in info["error"]
    _, rows = read_csv(run_dir / "metrics.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, step))
    assert all(math.isfinite(float(r["loss"])) and math.isfinite(float(r["minibatch_grad_norm_sq"])) for r in rows)
    assert (run_dir / "recipe.yaml").is_file()


@pytest.fixture
def raising_run(tmp_path: Path, cli_run: Callable) -> dict[str, Any]:
    """An in-process run of a model that raises a two-line RuntimeError on its 5th call."""
    recipe = _failing_recipe(tmp_path, RAISING_SRC, f"raising_vae_{uuid.uuid4().hex[:8]}")
    code, out, err = cli_run(["run", recipe, "--out", tmp_path / "runs"])
    run_dir = _only_run_dir(tmp_path / "runs")
    return {"code": code, "out": out, "err": err, "run_dir": run_dir,
            "info": json.loads((run_dir / "run.json").read_text())}


def test_a_model_that_raises_exits_1_naming_the_step_and_marks_the_run_failed(raising_run: dict[str, Any]) -> None:
    assert raising_run["code"] == 1
    assert raising_run["out"] == ""
    # one line, although the exception's message has two
    line = assert_one_line_error(raising_run["err"], "RuntimeError: model blew up")
    step = int(re.search(r"\bstep (\d+)\b", line).group(1))
    info = raising_run["info"]
    assert info["status"] == "failed"
    assert info["steps_done"] == step >= 2
    assert "model blew up" in info["error"]


def test_rows_recorded_before_a_model_error_are_kept(raising_run: dict[str, Any]) -> None:
    step = raising_run["info"]["steps_done"]
    _, rows = read_csv(raising_run["run_dir"] / "metrics.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, step))
    assert all(math.isfinite(float(r["loss"])) for r in rows)
    assert not list((raising_run["run_dir"] / "plots").glob("*.png")), "a failed run draws no plots"


INIT_RAISING_SRC = '''
from bbvi_kit import register_model
from bbvi_kit_plugins.gaussian_vae import GaussianVAE


@register_model({name!r})
class CannotBuild(GaussianVAE):
    def __init__(self, data, **options):
        raise RuntimeError("cannot build the networks\\nsecond line of the message")
'''


def test_a_model_that_cannot_be_built_exits_1_with_one_line_and_no_run_directory(
    tmp_path: Path, cli_run: Callable
) -> None:
    """An unexpected exception outside a training step, with a two-line message."""
    recipe = _failing_recipe(tmp_path, INIT_RAISING_SRC, f"init_raising_vae_{uuid.uuid4().hex[:8]}")
    code, out, err = cli_run(["run", recipe, "--out", tmp_path / "runs"])
    assert code == 1 and out == ""
    line = assert_one_line_error(err, "unexpected RuntimeError: cannot build the networks")
    assert "second line of the message" in line  # collapsed onto the one line, not dropped
    assert not (tmp_path / "runs").exists()


def test_plugins_lists_the_plugin_files_a_recipe_names(tmp_path: Path, cli_run: Callable) -> None:
    name = f"listed_vae_{uuid.uuid4().hex[:8]}"
    (tmp_path / "listed.py").write_text(
        "from bbvi_kit import register_model\n"
        "from bbvi_kit_plugins.gaussian_vae import GaussianVAE\n"
        f"@register_model({name!r})\n"
        "class Listed(GaussianVAE):\n    pass\n"
    )
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"plugins: [listed.py]\nmodel: {{name: {name}}}\n")
    code, out, err = cli_run(["plugins", "--recipe", recipe])
    assert code == 0, err
    (line,) = [line for line in out.splitlines() if name in line]
    assert line.split()[1:] == ["file", str((tmp_path / "listed.py").resolve())]
    code, _, err = cli_run(["plugins", "--recipe", tmp_path / "missing.yaml"])
    assert code == 2 and err.startswith("error: recipe file not found")
